"""Delete old webhook deliveries from the log, and receipts that waited as long for
their message.

Usage examples::

    manage.py prune_twilio_webhooks                     # older than DELIVERY_RETENTION_DAYS (30)
    manage.py prune_twilio_webhooks --days 7
    manage.py prune_twilio_webhooks --include-failed    # failed ones too (normally kept)
    manage.py prune_twilio_webhooks --dry-run

Run it daily from cron. Failed deliveries are kept unless asked: they are the ones
still waiting for a replay. A receipt still waiting for its message after the same
retention waits for a message that was never stored (sent through the REST API, which
fires no webhook, or its delivery was lost): it goes, failed deliveries or not.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from ...conf import convlink_settings
from ...deliveries import prune
from ...receipts import prune_waiting

# A century: no delivery in the log is older, so a longer retention keeps the same rows.
# Past about 740,000 days the cutoff would fall before year 1 (an OverflowError), and
# MariaDB's DATETIME range starts at year 1000.
MAX_DAYS = 36500


class Command(BaseCommand):
    help = ("Delete processed (and rejected) webhook deliveries, and receipts still waiting for their "
            "message, older than the retention period.")

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--days", type=int,
                            help=f"Keep this many days, 0 to {MAX_DAYS} (default: DELIVERY_RETENTION_DAYS).")
        parser.add_argument("--include-failed", action="store_true", help="Delete old failed deliveries too.")
        parser.add_argument("--dry-run", action="store_true", help="Count, delete nothing.")

    def handle(self, *args: Any, days: int | None, include_failed: bool, dry_run: bool,
               **options: Any) -> None:
        source = "--days"
        if days is None:
            days, source = convlink_settings.DELIVERY_RETENTION_DAYS, "DELIVERY_RETENTION_DAYS"
        if not 0 <= days <= MAX_DAYS:
            raise CommandError(f"{source} must be between 0 and {MAX_DAYS} (a century); {days} is not.")
        count = prune(days, include_failed=include_failed, dry_run=dry_run)
        verb = "Would delete" if dry_run else "Deleted"
        self.stdout.write(f"{verb} {count} deliver{'y' if count == 1 else 'ies'} older than {days} days.")
        waiting = prune_waiting(days, dry_run=dry_run)
        receipts = "receipt" if waiting == 1 else "receipts"
        self.stdout.write(f"{verb} {waiting} waiting {receipts} older than {days} days.")

