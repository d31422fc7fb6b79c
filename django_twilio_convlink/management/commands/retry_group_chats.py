"""Retry the group chat work that failed or was lost.

Run it from cron (every few minutes) when the task backend does not retry by itself
(the ImmediateBackend, or any backend without deferred tasks)::

    manage.py retry_group_chats                      # failed ones after their backoff, lost ones
    manage.py retry_group_chats --now                # ignore the backoff
    manage.py retry_group_chats --include-permanent  # also those given up on, or skipped
    manage.py retry_group_chats --dry-run            # list, do nothing

Each message runs in the process, one after the other; one failure does not stop the
rest. Permanent failures (too many participants, not +1) and the messages skipped
because their customer had opted out are left alone unless --include-permanent says
otherwise; a customer still opted out is skipped again.
"""

from __future__ import annotations

import datetime
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from ...group_chat import due_for_retry, forward_customer_message, reopen
from ..options import from_keyword, row_limit


class Command(BaseCommand):
    help = "Retry group chat forwards that failed, or whose task or worker was lost."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--now", action="store_true", help="Retry before the backoff ends.")
        parser.add_argument("--include-permanent", action="store_true",
                            help="Also retry forwards given up on (after fixing credentials, say) "
                                 "and those skipped while the customer was opted out.")
        parser.add_argument("--limit", type=row_limit, default=500,
                            help="At most this many messages (default 500).")
        parser.add_argument("--dry-run", action="store_true", help="List what would be retried.")

    def handle(self, *args: Any, now: bool, include_permanent: bool, limit: int, dry_run: bool,
               verbosity: int, **options: Any) -> None:
        limit = from_keyword(row_limit, limit, "--limit")
        moment = datetime.datetime.max.replace(tzinfo=datetime.UTC) if now else timezone.now()
        due = list(due_for_retry(moment, include_permanent=include_permanent)
                   .values_list("pk", "message_sid", "conversation__conversation_sid")[:limit])
        if dry_run:
            for _, message_sid, conversation_sid in due:
                self.stdout.write(f"Would retry {message_sid} in {conversation_sid}")
            self.stdout.write(f"[dry run] {len(due)} due.")
            return
        if include_permanent:
            reopen([pk for pk, _, _ in due])
        sent = failed = 0
        for pk, message_sid, _ in due:
            try:
                sid = forward_customer_message(pk)
            except Exception as error:  # recorded on the message; the others still run
                failed += 1
                self.stderr.write(f"{message_sid}: {error}")
            else:
                sent += bool(sid)
                if verbosity >= 2:
                    self.stdout.write(f"Forwarded {message_sid} as {sid or '(nothing to do)'}")
        self.stdout.write(f"{len(due)} due, {sent} forwarded, {failed} failed again.")
        if failed:
            raise CommandError(f"{failed} group chat retr{'y' if failed == 1 else 'ies'} failed.")
