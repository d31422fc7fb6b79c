"""Download the customers' files that are due: failed ones after their backoff, ones
whose task or worker was lost, and files of messages no download ever planned.

Run it from cron (every few minutes) when the task backend does not retry by itself
(the ImmediateBackend, or any backend without deferred tasks)::

    manage.py fetch_twilio_media                       # due ones; messages of 7 days never planned
    manage.py fetch_twilio_media --now                 # ignore the backoff
    manage.py fetch_twilio_media --include-permanent   # also those given up on (after fixing credentials)
    manage.py fetch_twilio_media --since 2026-11-01    # look further back for messages never planned
    manage.py fetch_twilio_media --conversation-sid CH...
    manage.py fetch_twilio_media --dry-run             # list, fetch nothing

Each file is fetched in this process, one after the other; one failure does not stop
the rest. Refused files (too large, or not the size Twilio declared) and pruned ones
are never fetched again.
"""

from __future__ import annotations

import datetime
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from ... import get_message_model
from ...conf import convlink_settings
from ...events import canonical_sid
from ...media import Outcome, download_message_media, download_one, due, messages_without_rows
from ..options import from_keyword, moment, row_limit

# Messages read per query while looking for files no download planned.
CHUNK = 500
DEFAULT_LOOKBACK = datetime.timedelta(days=7)


class Command(BaseCommand):
    help = "Download customers' files that failed, whose task was lost, or that were never planned."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--now", action="store_true", help="Fetch before the backoff ends.")
        parser.add_argument("--include-permanent", action="store_true",
                            help="Also fetch files given up on (after fixing credentials, say).")
        parser.add_argument("--conversation-sid", help="Only this conversation's files (CH...).")
        parser.add_argument("--since", type=moment,
                            help="Look for messages never planned from this date, YYYY-MM-DD[ HH:MM[:SS]] "
                                 "(default: the last 7 days).")
        parser.add_argument("--limit", type=row_limit, default=500,
                            help="At most this many files, and this many messages (default 500).")
        parser.add_argument("--dry-run", action="store_true", help="List what would be fetched.")

    def handle(self, *args: Any, now: bool, include_permanent: bool, conversation_sid: str | None,
               since: datetime.datetime | None, limit: int, dry_run: bool, verbosity: int,
               **options: Any) -> None:
        limit = from_keyword(row_limit, limit, "--limit")
        since = (from_keyword(moment, since, "--since") if since is not None
                 else timezone.now() - DEFAULT_LOOKBACK)
        if conversation_sid is not None:
            conversation_sid = canonical_sid(conversation_sid.strip())  # as the webhook stored it
        if not convlink_settings.MEDIA_DOWNLOAD:
            self.stdout.write('MEDIA_DOWNLOAD is off in settings.TWILIO_CONVLINK: nothing is fetched.')
            return
        files = due(include_permanent=include_permanent, ignore_backoff=now)
        if conversation_sid:
            files = files.filter(conversation_sid=conversation_sid)
        files_due = list(files.values_list("pk", "media_sid", "conversation_sid")[:limit])
        unplanned = self._unplanned(since, conversation_sid, limit)
        if dry_run:
            for _, media_sid, in_conversation in files_due:
                self.stdout.write(f"Would fetch {media_sid} in {in_conversation}")
            for message in unplanned:
                self.stdout.write(f"Would fetch the files of {message.message_sid}, never planned")
            self.stdout.write(f"[dry run] {len(files_due)} file(s) due, "
                              f"{len(unplanned)} message(s) never planned.")
            return
        outcome = Outcome()
        for pk, _, _ in files_due:
            outcome.add(download_one(pk, now=now, include_permanent=include_permanent))
        for message in unplanned:
            outcome.add(download_message_media(message.pk, now=now))
        if verbosity >= 2:
            for media_sid in outcome.stored:
                self.stdout.write(f"Stored {media_sid}")
        for media_sid in outcome.failed + outcome.given_up:
            self.stderr.write(f"{media_sid}: not stored (see its row's last error)")
        self.stdout.write(f"{len(files_due)} file(s) due, {len(unplanned)} message(s) never planned: "
                          f"{len(outcome.stored)} stored, {len(outcome.failed)} failed (will be retried), "
                          f"{len(outcome.given_up)} given up.")
        failures = len(outcome.failed) + len(outcome.given_up)
        if failures:
            raise CommandError(f"{failures} file(s) could not be downloaded.")

    def _unplanned(self, since: datetime.datetime, conversation_sid: str | None, limit: int) -> list[Any]:
        """Messages with media since ``since`` of which a file has no row, read in chunks."""
        messages = get_message_model()._default_manager.filter(created_at__gte=since).exclude(media=[])
        if conversation_sid:
            messages = messages.filter(conversation__conversation_sid=conversation_sid)
        found: list[Any] = []
        last = 0
        while len(found) < limit:
            chunk = list(messages.filter(pk__gt=last).order_by("pk")
                         .only("pk", "message_sid", "media")[:CHUNK])
            if not chunk:
                break
            found.extend(messages_without_rows(chunk))
            last = chunk[-1].pk
        return found[:limit]
