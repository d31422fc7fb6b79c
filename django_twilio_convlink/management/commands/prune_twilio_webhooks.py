"""Delete old webhook deliveries from the log.

Usage examples::

    manage.py prune_twilio_webhooks                     # older than DELIVERY_RETENTION_DAYS (30)
    manage.py prune_twilio_webhooks --days 7
    manage.py prune_twilio_webhooks --include-failed    # failed ones too (normally kept)
    manage.py prune_twilio_webhooks --dry-run

Run it daily from cron. Failed deliveries are kept unless asked: they are the ones
still waiting for a replay.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from ...conf import convlink_settings
from ...deliveries import prune


class Command(BaseCommand):
    help = "Delete processed (and rejected) webhook deliveries older than the retention period."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--days", type=int,
                            help="Keep this many days (default: DELIVERY_RETENTION_DAYS).")
        parser.add_argument("--include-failed", action="store_true", help="Delete old failed deliveries too.")
        parser.add_argument("--dry-run", action="store_true", help="Count, delete nothing.")

    def handle(self, *args: Any, days: int | None, include_failed: bool, dry_run: bool,
               **options: Any) -> None:
        days = convlink_settings.DELIVERY_RETENTION_DAYS if days is None else days
        if days < 0:
            raise CommandError("--days must be 0 or more.")
        count = prune(days, include_failed=include_failed, dry_run=dry_run)
        verb = "Would delete" if dry_run else "Deleted"
        self.stdout.write(f"{verb} {count} deliver{'y' if count == 1 else 'ies'} older than {days} days.")
