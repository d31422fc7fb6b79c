"""Faults: the database connection killed in the middle of processing (Twilio failing
during the group chat work is tests/webhook/test_group_chat_faults.py). No partial rows;
the failure is recorded; a replay completes the work."""

import threading
from io import StringIO

import pytest
from django.core.management import call_command
from django.db import connection, connections

from django_twilio_convlink.models import WebhookDelivery
from tests.factories import GuestFactory, ReservationFactory
from tests.helpers import TwilioClient, payload
from tests.testapp.models import ChatConversation, ChatMessage

FIRST = "onMessageAdded_sms_from_customer"


def kill_from_another_connection(pid: int) -> None:
    """What an operator, a failover or an OOM killer does to a backend."""
    def kill() -> None:
        try:
            with connections["default"].cursor() as cursor:  # this thread's own connection
                if connection.vendor == "postgresql":
                    cursor.execute("SELECT pg_terminate_backend(%s)", [pid])
                else:
                    cursor.execute(f"KILL CONNECTION {int(pid)}")
        finally:
            connections.close_all()

    thread = threading.Thread(target=kill)
    thread.start()
    thread.join(timeout=10)


def own_pid() -> int:
    with connection.cursor() as cursor:
        postgres = connection.vendor == "postgresql"
        cursor.execute("SELECT pg_backend_pid()" if postgres else "SELECT CONNECTION_ID()")
        return cursor.fetchone()[0]


@pytest.mark.concurrency  # a server database: SQLite has no connection to kill
@pytest.mark.django_db(transaction=True)
def test_connection_killed_mid_processing_leaves_no_partial_rows_and_replays():
    ReservationFactory(guest=GuestFactory(mobile="(415) 555-0142"))
    data = payload(FIRST)
    killed = []

    def kill_before_message_insert(execute, sql, params, many, context):
        # The conversation row is already inserted in this transaction: the worst moment.
        if "testapp_chatmessage" in sql and sql.lstrip().upper().startswith("INSERT") and not killed:
            killed.append(own_pid())
            kill_from_another_connection(killed[0])
        return execute(sql, params, many, context)

    with connection.execute_wrapper(kill_before_message_insert):
        response = TwilioClient().webhook(data, headers={"I-Twilio-Idempotency-Token": "tok-1"})
    assert killed, "the wrapper never fired"
    assert response.status_code == 500
    assert not ChatConversation.objects.exists() and not ChatMessage.objects.exists()
    delivery = WebhookDelivery.objects.get()
    assert delivery.status == "failed"
    assert "terminat" in delivery.error.lower() or "lost" in delivery.error.lower() \
        or "closed" in delivery.error.lower(), delivery.error

    out = StringIO()
    call_command("replay_twilio_webhooks", "--failed", stdout=out)
    assert "1 processed" in out.getvalue()
    assert ChatMessage.objects.filter(message_sid=data["MessageSid"]).count() == 1
    assert ChatConversation.objects.get(conversation_sid=data["ConversationSid"]).booking is not None
