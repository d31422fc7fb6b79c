"""Delete stored customer files older than the retention period.

Stored media lives as long as the site keeps it: nothing deletes it but this command,
and only with a retention (``MEDIA_RETENTION_DAYS``, or ``--days``)::

    manage.py prune_twilio_media              # older than MEDIA_RETENTION_DAYS
    manage.py prune_twilio_media --days 365
    manage.py prune_twilio_media --dry-run

A pruned file's row stays, in state ``pruned``: the download does not bring it back.
A file the storage fails to delete is reported and its row left stored, for the next
run; the others still go, and the command exits 1.
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

    def handle(self, *args: Any, days: int | None, dry_run: bool, verbosity: int,
               **options: Any) -> None:
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
        deleted = failed = 0
        last = 0
        # By primary key, not "the first 500 still stored": a row whose file could not
        # be deleted stays stored and would come back in every batch.
        while batch := list(old.filter(pk__gt=last).order_by("pk")[:BATCH]):
            last = batch[-1].pk
            for row in batch:
                # The file first, then the row: a deletion that fails leaves the row
                # stored, so the next run deletes it; the other way round it would be an
                # orphan nothing points at, a customer's file kept past the retention.
                # Storages delete a missing file without complaint, so a run that died
                # between the two steps is finished by the next.
                if row.file.name:
                    try:
                        row.file.storage.delete(row.file.name)
                    except Exception as error:  # the others still go
                        failed += 1
                        self.stderr.write(f"{row.media_sid}: {row.file.name} not deleted: {error}")
                        continue
                deleted += StoredMedia.objects.filter(pk=row.pk, state=MediaState.STORED).update(
                    state=MediaState.PRUNED, file="", updated_at=timezone.now())
                if verbosity >= 2:
                    self.stdout.write(f"Deleted {row.media_sid} of message {row.message_sid}")
        self.stdout.write(f"Deleted {deleted} file(s) stored more than {days} days ago"
                          + (f"; {failed} could not be deleted." if failed else "."))
        if failed:
            raise CommandError(f"{failed} file(s) could not be deleted from the storage.")
