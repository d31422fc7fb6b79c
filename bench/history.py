"""What bringing history in costs: ``sync_twilio_conversations``' storing of a long
conversation, read through the real SDK from the stand-in of Twilio's API
(tests/twilio_history_server.py) on loopback.

* Statements per page of 100 messages: the first page and the last are counted with
  ``CaptureStatements``; they must be equal (one INSERT a page, not one a message,
  whatever is stored already). SQLite splits an INSERT of many rows where a statement
  would pass its 999 parameters, as Django's ``bulk_create`` does: its figure is
  higher than PostgreSQL's, and still the same for every page.
* Memory: the Python heap's peak (tracemalloc) while a tenth of the messages is
  brought in, against its peak for all of them: flat, since pages are read and
  written one at a time. The process's peak RSS is reported beside it.
* Messages a second, over the whole conversation.
"""

from __future__ import annotations

import datetime
import resource
import time
import tracemalloc

from django.conf import settings
from django.db import connection
from django.test import override_settings
from django.utils import timezone

from bench.common import Row
from django_twilio_convlink.history import Sync, TwilioHistory
from django_twilio_convlink.testing import CaptureStatements
from tests.helpers import sid
from tests.twilio_history_server import Conversation, Message, TwilioAccount

SECTION = "history sync"
CUSTOMER = "+14155550111"


class CountingSync(Sync):
    """The sync, with each page's statements counted."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.statements: list[int] = []

    def store_page(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        with CaptureStatements(connection) as captured:
            rows = super().store_page(*args, **kwargs)
        self.statements.append(len(captured))
        # Django keeps what it captured in connection.queries_log (up to 9,000
        # statements): the measure's memory, not the sync's.
        connection.queries_log.clear()
        return rows


def conversation(account: TwilioAccount, messages: int) -> Conversation:
    start = timezone.now() - datetime.timedelta(days=60)
    added = account.add(Conversation(sid("CH"), start, addresses=[CUSTOMER]))
    for n in range(messages):
        author = CUSTOMER if n % 3 else "ASSISTANT"
        added.messages.append(Message(sid("IM"), n, author, f"Message {n}: the heater, the key, the towels.",
                                      start + datetime.timedelta(minutes=n)))
    return added


def bring_in(account: TwilioAccount, messages: int, *, trace: bool) -> tuple[CountingSync, float, int]:
    """Sync one conversation of ``messages`` messages: the run, its seconds, and, with
    ``trace``, the heap's peak in bytes (tracemalloc slows the run several times: the
    rate is taken from a run without it)."""
    target = conversation(account, messages)
    sync = CountingSync(TwilioHistory())
    if trace:
        tracemalloc.start()
    start = time.perf_counter()
    sync.run(conversation_sid=target.sid)
    elapsed = time.perf_counter() - start
    peak = tracemalloc.get_traced_memory()[1] if trace else 0
    tracemalloc.stop()
    if sync.report.failed or sync.report.messages_new != messages:
        raise RuntimeError(f"the sync did not store {messages} messages: {sync.report}")
    return sync, elapsed, peak


def run(quick: bool) -> list[Row]:
    total = 2_000 if quick else 20_000
    convlink = settings.TWILIO_CONVLINK
    account = TwilioAccount(convlink["ACCOUNT_SID"], convlink["AUTH_TOKEN"]).start()
    try:
        with override_settings(TWILIO_CONVLINK={**convlink, "API_BASE_URL": account.url, "API_KEY_SID": "",
                                                "TASK_BACKEND": "dummy"}):
            _, _, small_peak = bring_in(account, total // 10, trace=True)
            whole, _, peak = bring_in(account, total, trace=True)
            _, seconds, _ = bring_in(account, total, trace=False)
    finally:
        account.stop()
    first, last = whole.statements[0], whole.statements[-1]
    return [
        Row(SECTION, f"statements per page of 100 messages (last page of {total:,}; baseline: first)",
            last, "statements", baseline=first, goal="= first page", ok=last == first, ceiling=True),
        Row(SECTION, f"heap peak bringing in {total:,} messages (baseline: {total // 10:,})",
            peak / 2**20, "MiB", baseline=small_peak / 2**20, goal="flat (ratio < 1.5)",
            ok=peak < 1.5 * small_peak),
        Row(SECTION, "process peak RSS after the runs", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            / 1024, "MiB"),
        Row(SECTION, f"messages brought in a second ({total:,} in one conversation)", total / seconds,
            "messages/s"),
    ]
