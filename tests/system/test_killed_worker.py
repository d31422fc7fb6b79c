"""A gunicorn worker dies in the middle of a signed delivery, and the delivery is recovered.

The worker is made to hang inside the event's transaction without touching the code
under test: the conversation row is stored first, and a second connection of this test
holds it with ``SELECT ... FOR UPDATE``. The worker's message INSERT checks its foreign
key, which needs a key-share lock (PostgreSQL) or a shared lock (InnoDB) on that row,
so it waits. The test checks that it really waits before it lets the worker die:

- killed: SIGKILL, as the kernel's OOM killer or a container's hard stop sends it. The
  delivery row stays ``received`` and nothing of the event is written. Once
  DELIVERY_UNFINISHED_AFTER has passed, the delivery is ``unfinished()`` and
  ``replay_twilio_webhooks --unfinished`` stores the message.
- timed out: gunicorn's ``--timeout`` aborts the silent worker: SIGABRT, whose handler
  calls ``sys.exit(1)``, then SIGKILL about a second later if the worker is still
  there. A SystemExit that gets through marks the delivery ``failed``;
  ``replay_twilio_webhooks --failed --unfinished`` then stores the message.

gunicorn runs one sync worker (tests/wsgi.py, settings tests/settings_killed.py: no
group chat) on the pytest run's test database. Everything stays on 127.0.0.1; every
wait is bounded in time.
"""

import datetime
import http.client
import os
import signal
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from io import StringIO
from typing import TypeVar
from urllib.parse import urlencode

import pytest
from django.core.management import call_command
from django.db import connection
from django.db.models import F

from django_twilio_convlink.conf import convlink_settings
from django_twilio_convlink.deliveries import IDEMPOTENCY_HEADER
from django_twilio_convlink.models import DeliveryStatus, WebhookDelivery
from django_twilio_convlink.testing import signature
from tests.factories import ConversationFactory
from tests.helpers import WEBHOOK_PATH, payload, sid
from tests.system.processes import Server, gunicorn, site_environment
from tests.testapp.models import ChatConversation, ChatMessage

pytestmark = [pytest.mark.concurrency, pytest.mark.django_db(transaction=True)]

GUNICORN_TIMEOUT = 2  # seconds of silence before gunicorn aborts the worker
REQUEST_TIMEOUT = 20
WAIT_TIMEOUT = 10  # for the worker to block, to die, for its database session to end
# InnoDB serves information_schema.innodb_trx and innodb_lock_waits from a cache that it
# refreshes only when nobody has read it for 0.1 s: polled faster, a lock wait that began
# after the first poll is never shown.
LOCK_POLL = 0.2

T = TypeVar("T")


# --- The database side: the lock, and who waits for it --------------------------------------

@contextmanager
def row_locked(conversation: ChatConversation) -> Iterator[int]:
    """Hold ``conversation``'s row with SELECT ... FOR UPDATE on a second connection to
    the test database until the block ends; yields that connection's session id."""
    locker = connection.copy()
    try:
        locker.set_autocommit(False)
        table = locker.ops.quote_name(ChatConversation._meta.db_table)
        key = locker.ops.quote_name(ChatConversation._meta.pk.column)
        with locker.cursor() as cursor:
            cursor.execute(f"SELECT {key} FROM {table} WHERE {key} = %s FOR UPDATE", [conversation.pk])
            assert cursor.fetchone() is not None
            cursor.execute("SELECT pg_backend_pid()" if locker.vendor == "postgresql"
                           else "SELECT CONNECTION_ID()")
            session = cursor.fetchone()[0]
        yield session
    finally:
        try:
            locker.rollback()
        finally:
            locker.close()


def sessions_waiting_for(session: int) -> list[int]:
    """The database sessions waiting for a lock that ``session`` holds."""
    if connection.vendor == "postgresql":
        sql = ("SELECT pid FROM pg_stat_activity "
               "WHERE wait_event_type = 'Lock' AND %s = ANY(pg_blocking_pids(pid))")
    else:
        sql = ("SELECT waiting.trx_mysql_thread_id FROM information_schema.innodb_lock_waits w "
               "JOIN information_schema.innodb_trx waiting ON waiting.trx_id = w.requesting_trx_id "
               "JOIN information_schema.innodb_trx holding ON holding.trx_id = w.blocking_trx_id "
               "WHERE holding.trx_mysql_thread_id = %s")
    with connection.cursor() as cursor:
        cursor.execute(sql, [session])
        return [row[0] for row in cursor.fetchall()]


def database_sessions() -> str:
    """What every session on the test database is doing: for a failure's message."""
    if connection.vendor == "postgresql":
        sql = ("SELECT pid, state, wait_event_type, wait_event, pg_blocking_pids(pid), query "
               "FROM pg_stat_activity WHERE datname = current_database()")
    else:
        sql = ("SELECT p.id, p.command, p.state, t.trx_state, p.info FROM information_schema.processlist p "
               "LEFT JOIN information_schema.innodb_trx t ON t.trx_mysql_thread_id = p.id "
               "WHERE p.db = DATABASE()")
    with connection.cursor() as cursor:
        cursor.execute(sql)
        return "\n".join(" | ".join(str(value)[:200] for value in row) for row in cursor.fetchall())


def session_exists(session: int) -> bool:
    sql = ("SELECT 1 FROM pg_stat_activity WHERE pid = %s" if connection.vendor == "postgresql"
           else "SELECT 1 FROM information_schema.processlist WHERE id = %s")
    with connection.cursor() as cursor:
        cursor.execute(sql, [session])
        return cursor.fetchone() is not None


# --- The client and the waits ----------------------------------------------------------------

def post_signed(server: Server, data: dict[str, str]) -> int | str:
    """POST ``data`` signed as Twilio signs it: the answer's status, or the connection
    error Twilio would see instead."""
    headers = {"Content-Type": "application/x-www-form-urlencoded",
               "X-Twilio-Signature": signature(server.url, data, convlink_settings.AUTH_TOKEN),
               IDEMPOTENCY_HEADER: sid("RQ"), "User-Agent": "TwilioProxy/1.1"}
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=REQUEST_TIMEOUT)
    try:
        conn.request("POST", server.path, body=urlencode(data), headers=headers)
        response = conn.getresponse()
        response.read()
        return response.status
    except (OSError, http.client.HTTPException) as exc:
        return f"{type(exc).__name__}: {exc}"
    finally:
        conn.close()


def wait_for(condition: Callable[[], T], what: str, server: Server, *, timeout: float = WAIT_TIMEOUT,
             interval: float = 0.05, pending: Future | None = None) -> T:
    """``condition()``'s first truthy value, polled every ``interval`` seconds for at most
    ``timeout`` seconds;
    failing at once if the ``pending`` request gets answered meanwhile (the worker did
    not hang after all)."""
    deadline = time.monotonic() + timeout
    while True:
        if pending is not None and pending.done():
            pytest.fail(f"Answered {pending.result()!r} while waiting for {what}\n"
                        f"gunicorn log:\n{server.log_text()[-20000:]}")
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"Not within {timeout} s: {what}\ndatabase sessions:\n{database_sessions()}\n"
                        f"gunicorn log:\n{server.log_text()[-20000:]}")
        time.sleep(interval)


def backdate(delivery: WebhookDelivery) -> None:
    """Move the delivery's arrival back past DELIVERY_UNFINISHED_AFTER."""
    grace = datetime.timedelta(seconds=convlink_settings.DELIVERY_UNFINISHED_AFTER + 1)
    WebhookDelivery.objects.filter(pk=delivery.pk).update(received_at=F("received_at") - grace)


# --- The test --------------------------------------------------------------------------------

@pytest.mark.parametrize("fault", ["killed", "timed out"])
def test_worker_dying_mid_delivery_leaves_a_delivery_to_replay(fault, tmp_path, settings):
    # The replay below runs in this process: without the group chat, like the server.
    settings.TWILIO_CONVLINK = {**settings.TWILIO_CONVLINK, "GROUP_CHAT": False}
    conversation = ConversationFactory()
    data = payload("onMessageAdded_sms_from_customer", ConversationSid=conversation.conversation_sid)
    message = ChatMessage.objects.filter(message_sid=data["MessageSid"])
    timeout = GUNICORN_TIMEOUT if fault == "timed out" else 60

    started = time.monotonic()
    with (gunicorn("tests.wsgi:application", site_environment("tests.settings_killed"),
                   tmp_path / "gunicorn.log", workers=1, path=WEBHOOK_PATH, timeout=timeout) as server,
          ThreadPoolExecutor(max_workers=1) as pool):
        [worker] = server.workers()
        with row_locked(conversation) as locker:
            answer = pool.submit(post_signed, server, data)
            delivery = wait_for(
                lambda: WebhookDelivery.objects.filter(message_sid=data["MessageSid"],
                                                       status=DeliveryStatus.RECEIVED).first(),
                "the delivery recorded as received", server, pending=answer)
            [blocked] = wait_for(lambda: sessions_waiting_for(locker),
                                 "the worker's INSERT waiting for the conversation's row lock", server,
                                 interval=LOCK_POLL, pending=answer)
            if fault == "killed":
                os.kill(worker, signal.SIGKILL)
            # Timed out: the lock holds until gunicorn has aborted the worker (SIGABRT
            # after GUNICORN_TIMEOUT silent seconds, SIGKILL one arbiter tick later).
            wait_for(lambda: worker not in server.workers(), f"worker {worker} gone", server,
                     timeout=WAIT_TIMEOUT + GUNICORN_TIMEOUT)
            status = answer.result(timeout=REQUEST_TIMEOUT)
        # A worker killed while its query waited leaves the session behind on the
        # database: with the lock free it runs its INSERT, finds the client gone, and
        # rolls back. Only then is "nothing written" a fact rather than a race.
        wait_for(lambda: not session_exists(blocked), f"the dead worker's session {blocked} ended", server)
        server.check_alive()
        log = server.log_text()
    faulted = time.monotonic() - started

    # Twilio got no 200: it sees the delivery as failed (and may or may not retry it).
    assert status != 200 and (isinstance(status, str) or status >= 500), (status, log)
    assert not message.exists()
    delivery.refresh_from_db()
    after_fault = delivery.status
    if fault == "killed":
        assert delivery.status == DeliveryStatus.RECEIVED, (delivery.error, log)
        assert not WebhookDelivery.objects.unfinished().filter(pk=delivery.pk).exists()
        options = ["--unfinished"]
    else:
        assert "WORKER TIMEOUT" in log, log
        if connection.vendor == "postgresql":
            # psycopg 3 waits for the server in Python-visible polls, so SIGABRT's handler
            # runs at once; its SystemExit cancels the query, and the view marks the row.
            assert delivery.status == DeliveryStatus.FAILED, (delivery.status, log)
            assert delivery.error.startswith("SystemExit"), delivery.error
        else:
            # mysqlclient waits inside the C client library, which resumes its read after
            # the signal: Python's handler would only run once the query returns, and
            # gunicorn's SIGKILL usually comes first. Either ending must be recoverable.
            assert delivery.status in (DeliveryStatus.FAILED, DeliveryStatus.RECEIVED), log
        options = ["--failed", "--unfinished"]

    backdate(delivery)
    if delivery.status == DeliveryStatus.RECEIVED:
        assert list(WebhookDelivery.objects.unfinished()) == [delivery]
    out = StringIO()
    call_command("replay_twilio_webhooks", *options, stdout=out)
    assert "1 selected, 1 processed, 0 failed, 0 rejected or refused." in out.getvalue()
    assert message.count() == 1
    assert message.get().conversation_id == conversation.pk
    delivery.refresh_from_db()
    assert delivery.status == DeliveryStatus.PROCESSED
    print(f"\n{fault} ({connection.vendor}): worker {worker} dead and its session gone {faulted:.1f} s after "
          f"gunicorn started; the client got {status!r}, the delivery was {after_fault} until the replay")
