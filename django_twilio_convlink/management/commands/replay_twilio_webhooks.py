"""Process stored webhook deliveries again.

Usage examples::

    manage.py replay_twilio_webhooks --failed                   # every failed delivery
    manage.py replay_twilio_webhooks --unfinished               # every unfinished one
    manage.py replay_twilio_webhooks --failed --unfinished      # both
    manage.py replay_twilio_webhooks --failed --since 2026-11-20
    manage.py replay_twilio_webhooks --failed --since "2026-11-20 14:30+01:00"
    manage.py replay_twilio_webhooks 1042 1043                  # by id
    manage.py replay_twilio_webhooks --failed --dry-run         # list, change nothing

A delivery is unfinished when it is still "received" DELIVERY_UNFINISHED_AFTER
seconds (default 300) after it arrived: the worker processing it was killed or timed
out, and nothing of its event was written. Replays are idempotent (a message stored
once stays stored once). The command goes on past a failure, prints a summary and
exits 1 when any replay failed.
"""

from __future__ import annotations

import datetime
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from ...deliveries import replay
from ...models import WebhookDelivery
from ..options import MOMENT_FORMAT, from_keyword, moment, row_id


class Command(BaseCommand):
    help = "Replay stored Twilio webhook deliveries (failed or unfinished ones, or by id)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("ids", nargs="*", type=row_id, help="Delivery ids to replay.")
        parser.add_argument("--failed", action="store_true", help="Replay every failed delivery.")
        parser.add_argument("--unfinished", action="store_true",
                            help="Replay every unfinished delivery (still received after "
                                 "DELIVERY_UNFINISHED_AFTER seconds: its worker died).")
        parser.add_argument("--since", type=moment,
                            help=f"Only deliveries received since this date or date and time: "
                                 f"{MOMENT_FORMAT}; without an offset, in the site's time zone "
                                 "(TIME_ZONE).")
        parser.add_argument("--dry-run", action="store_true", help="List what would be replayed.")

    def handle(self, *args: Any, ids: list[int], failed: bool, unfinished: bool,
               since: datetime.datetime | str | None, dry_run: bool, verbosity: int, **options: Any) -> None:
        ids = [from_keyword(row_id, pk, "ids") for pk in ids]
        if since is not None:
            since = from_keyword(moment, since, "--since")
        if not ids and not failed and not unfinished:
            raise CommandError("Name delivery ids, or use --failed and/or --unfinished.")
        qs = WebhookDelivery.objects.order_by("received_at", "pk")
        if ids:
            qs = qs.filter(pk__in=ids)
            missing = set(ids) - set(qs.values_list("pk", flat=True))
            if missing:
                raise CommandError(f"No delivery with id {', '.join(map(str, sorted(missing)))}.")
        if failed or unfinished:
            qs = qs.needing_replay(failed=failed, unfinished=unfinished)
        if since is not None:
            qs = qs.filter(received_at__gte=since)
        deliveries = list(qs)
        report = replay(deliveries, dry_run=dry_run)
        verb = "Would replay" if dry_run else "Replayed"
        if dry_run or verbosity >= 2:
            for pk in report.processed:
                self.stdout.write(f"{verb} delivery {pk}")
        for pk, error in report.failed:
            self.stderr.write(f"Delivery {pk} failed again: {error}")
        for pk, error in report.rejected:
            # Malformed or contradicting what is stored (status rejected), or another
            # account's (refused): the error says which; replaying again changes nothing.
            self.stderr.write(f"Delivery {pk} was rejected or refused again: {error}")
        prefix = "[dry run] " if dry_run else ""
        self.stdout.write(f"{prefix}{len(deliveries)} selected, {len(report.processed)} "
                          f"{'ok' if dry_run else 'processed'}, {len(report.failed)} failed, "
                          f"{len(report.rejected)} rejected or refused.")
        if report.failed:
            raise CommandError(f"{len(report.failed)} deliver{'y' if len(report.failed) == 1 else 'ies'} "
                               "failed again.")
