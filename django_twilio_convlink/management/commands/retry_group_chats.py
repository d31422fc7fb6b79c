"""Retry the group chat work that failed or was lost.

Run it from cron (every few minutes) when the task backend does not retry by itself
(the ImmediateBackend, or any backend without deferred tasks)::

    manage.py retry_group_chats              # failed ones whose backoff has passed, stale pending ones
    manage.py retry_group_chats --now        # ignore the backoff
    manage.py retry_group_chats --dry-run    # list, do nothing

Each message runs in the process, one after the other; one failure does not stop the
rest. Permanent failures (opted out, too many participants, not +1) are left alone.
"""

from __future__ import annotations

import datetime
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from ...api import ApiError
from ...group_chat import due_for_retry, forward_customer_message


class Command(BaseCommand):
    help = "Retry group chat creations and forwards that failed or whose task was lost."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--now", action="store_true", help="Retry failures before their backoff ends.")
        parser.add_argument("--stale-minutes", type=int, default=5,
                            help="A pending forward older than this lost its task (default 5).")
        parser.add_argument("--limit", type=int, default=500,
                            help="At most this many messages (default 500).")
        parser.add_argument("--dry-run", action="store_true", help="List what would be retried.")

    def handle(self, *args: Any, now: bool, stale_minutes: int, limit: int, dry_run: bool,
               verbosity: int, **options: Any) -> None:
        current = timezone.now()
        retry_before = datetime.datetime.max.replace(tzinfo=datetime.UTC) if now else current
        pending_before = current - datetime.timedelta(minutes=stale_minutes)
        due = list(due_for_retry(retry_before, pending_before)
                   .values_list("pk", "message_sid", "conversation__conversation_sid")[:limit])
        sent = failed = 0
        for pk, message_sid, conversation_sid in due:
            if dry_run:
                self.stdout.write(f"Would retry {message_sid} in {conversation_sid}")
                continue
            try:
                forward_customer_message(pk)
            except ApiError as error:
                failed += 1
                self.stderr.write(f"{message_sid}: {error}")
            else:
                sent += 1
                if verbosity >= 2:
                    self.stdout.write(f"Forwarded {message_sid}")
        prefix = "[dry run] " if dry_run else ""
        self.stdout.write(f"{prefix}{len(due)} due, {sent} forwarded, {failed} failed again.")
        if failed:
            raise CommandError(f"{failed} group chat retr{'y' if failed == 1 else 'ies'} failed.")
