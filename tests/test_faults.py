"""Faults: the database connection killed in the middle of
processing, and Twilio failing during the group chat work. No partial rows; the
failure is recorded; a replay or a retry completes the work."""

import threading
from io import StringIO

import pytest
from django.core.management import call_command
from django.db import connection, connections

from django_twilio_convlink.api import ApiError, LocmemBackend
from django_twilio_convlink.models import WebhookDelivery
from tests.conftest import TwilioClient, payload
from tests.factories import GuestFactory, ReservationFactory
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


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("failing_call", ["create_group_chat", "send_message"])
def test_twilio_failing_mid_group_chat_leaves_no_partial_rows(failing_call, api_outbox):
    """The customer's message is saved and its delivery processed whatever Twilio does;
    what Twilio did is stored (a created group chat), nothing half of a forward is,
    and the retry completes it without a second group chat or a second post."""
    ReservationFactory(guest=GuestFactory(mobile="(415) 555-0142"))
    LocmemBackend.fail_on[failing_call] = [ApiError("Service unavailable", status=503, transient=True)]
    data = payload(FIRST)
    assert TwilioClient().webhook(data).status_code == 200
    assert WebhookDelivery.objects.get().status == "processed"
    source = ChatMessage.objects.get(message_sid=data["MessageSid"])
    assert source.forward_state == "failed"
    groups = ChatConversation.objects.filter(is_group_chat=True).count()
    assert groups == (1 if failing_call == "send_message" else 0)
    assert ChatMessage.objects.count() == 1  # no forwarded copy

    call_command("retry_group_chats", "--now", stdout=StringIO())
    source.refresh_from_db()
    assert source.forward_state == "sent"
    assert ChatConversation.objects.filter(is_group_chat=True).count() == 1
    group_sids = {call.result for call in api_outbox if call.method == "create_group_chat" and call.result}
    assert len(group_sids) == 1  # the retry found the same group chat by its unique name
