"""Delete stored customer files older than the retention period.

Stored media lives as long as the site keeps it: nothing deletes it but this command,
and only with a retention (``MEDIA_RETENTION_DAYS``, or ``--days``)::

    manage.py prune_twilio_media              # older than MEDIA_RETENTION_DAYS
    manage.py prune_twilio_media --days 365
    manage.py prune_twilio_media --dry-run

A pruned file's row stays, in state ``pruned``: the download does not bring it back.
"""

from __future__ import annotations

import datetime
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from ...choices import MediaState
from ...conf import convlink_settings
from ...models import StoredMedia

MAX_DAYS = 36500  # a century, as prune_twilio_webhooks
BATCH = 500


class Command(BaseCommand):
    help = "Delete stored customer files older than MEDIA_RETENTION_DAYS (or --days); keep their rows."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--days", type=int,
                            help=f"Keep this many days, 0 to {MAX_DAYS} (default: MEDIA_RETENTION_DAYS).")
        parser.add_argument("--dry-run", action="store_true", help="Count, delete nothing.")

    def handle(self, *args: Any, days: int | None, dry_run: bool, **options: Any) -> None:
        source = "--days"
        if days is None:
            days, source = convlink_settings.MEDIA_RETENTION_DAYS, "MEDIA_RETENTION_DAYS"
        if days is None:
            self.stdout.write("MEDIA_RETENTION_DAYS is not set: stored files are kept as long as the site "
                              "keeps them. Nothing deleted.")
            return
        if not isinstance(days, int) or not 0 <= days <= MAX_DAYS:
            raise CommandError(f"{source} must be between 0 and {MAX_DAYS} (a century); {days} is not.")
        old = StoredMedia.objects.filter(state=MediaState.STORED,
                                         stored_at__lt=timezone.now() - datetime.timedelta(days=days))
        if dry_run:
            self.stdout.write(f"Would delete {old.count()} file(s) stored more than {days} days ago.")
            return
        deleted = 0
        while batch := list(old.order_by("pk")[:BATCH]):
            for row in batch:
                name = row.file.name
                # The row first: a file whose deletion fails is an orphan in the storage,
                # never a row pointing at nothing.
                StoredMedia.objects.filter(pk=row.pk, state=MediaState.STORED).update(
                    state=MediaState.PRUNED, file="", updated_at=timezone.now())
                if name:
                    row.file.storage.delete(name)
                deleted += 1
        self.stdout.write(f"Deleted {deleted} file(s) stored more than {days} days ago.")
