"""Under real concurrency: Twilio's redeliveries can overlap. Eight
requests carrying the same first message at once leave one conversation and one
message, and all of them answer 200.

Runs on a database server (PostgreSQL in .ci/run): SQLite's single writer lock
would serialize the threads and prove nothing.
"""

import threading

import pytest
from django.db import connections

from tests.factories import GuestFactory, ReservationFactory
from tests.helpers import PAYLOADS, THREADS, TwilioClient, deliver_at_once, payload, sid
from tests.testapp.models import ChatConversation, ChatMessage

pytestmark = [pytest.mark.concurrency, pytest.mark.django_db(transaction=True)]


def test_same_first_message_from_eight_threads(api_outbox):
    booking = ReservationFactory(guest=GuestFactory(mobile="(415) 555-0142"))
    data = payload("onMessageAdded_sms_from_customer")
    statuses = deliver_at_once([{**data, "RetryCount": str(i)} for i in range(THREADS)])
    assert statuses == [200] * THREADS
    customer = ChatConversation.objects.get(conversation_sid=data["ConversationSid"])
    assert customer.booking == booking
    assert ChatMessage.objects.filter(message_sid=data["MessageSid"]).count() == 1
    # One group chat made and one forward, whatever the redeliveries.
    assert [call.method for call in api_outbox] == ["create_group_chat", "send_message"]
    assert ChatConversation.objects.filter(is_group_chat=True).count() == 1


def test_same_later_message_from_eight_threads():
    # The conversation exists, so no row lock orders the threads: the unique message
    # SID refuses all but one INSERT, and each refused event runs again, finds the
    # stored message and answers 200 as a redelivery.
    TwilioClient().webhook(payload("onMessageAdded_sms_from_customer"))
    data = payload("onMessageAdded_sms_from_customer", Index="1", Body="second")
    statuses = deliver_at_once([{**data, "RetryCount": str(i)} for i in range(THREADS)])
    assert statuses == [200] * THREADS
    assert ChatMessage.objects.filter(message_sid=data["MessageSid"]).count() == 1
    customer = ChatConversation.objects.get(conversation_sid=data["ConversationSid"])
    assert customer.messages.count() == 2
    from django_twilio_convlink.models import WebhookDelivery

    assert set(WebhookDelivery.objects.values_list("status", flat=True)) == {"processed"}


def test_conversation_and_message_events_racing():
    booking = ReservationFactory(guest=GuestFactory(mobile="(415) 555-0142"))
    conversation = payload("onConversationAdded_sms_autocreated")
    messages = [payload("onMessageAdded_sms_from_customer", Index=str(i)) for i in range(THREADS - 1)]
    statuses = deliver_at_once([conversation, *messages])
    assert statuses == [200] * THREADS
    assert ChatConversation.objects.filter(is_group_chat=False).count() == 1
    linked = ChatConversation.objects.get(is_group_chat=False)
    assert linked.messages.count() == THREADS - 1
    assert (linked.booking, linked.link_method) == (booking, "automatic")


def test_same_task_run_twice_at_once(settings, api_outbox):
    from django_twilio_convlink.group_chat import forward_customer_message

    settings.TWILIO_CONVLINK = {**settings.TWILIO_CONVLINK, "TASK_BACKEND": "dummy"}
    ReservationFactory(guest=GuestFactory(mobile="(415) 555-0142"))
    data = payload("onMessageAdded_sms_from_customer")
    assert TwilioClient().webhook(data).status_code == 200
    message = ChatMessage.objects.get(message_sid=data["MessageSid"])
    assert message.forward_state == "pending" and api_outbox == []

    barrier = threading.Barrier(2)
    results: list[str] = []

    def run() -> None:
        try:
            barrier.wait(timeout=10)
            results.append(forward_customer_message(message.pk))
        finally:
            connections.close_all()

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert [call.method for call in api_outbox] == ["create_group_chat", "send_message"]
    sent = api_outbox[1].result
    # One run did the work; the other found it claimed (or done) and left.
    assert sent in results and set(results) <= {sent, ""}
    message.refresh_from_db()
    assert (message.forward_state, message.forwarded_sid) == ("sent", sent)


def test_webhook_does_not_wait_for_a_slow_twilio_call(settings, api_outbox):
    """The forward holds no lock while it calls Twilio: the customer's next text, in
    the same conversation, is answered at once."""
    import time

    from django_twilio_convlink.api import LocmemBackend
    from django_twilio_convlink.group_chat import forward_customer_message

    settings.TWILIO_CONVLINK = {**settings.TWILIO_CONVLINK, "TASK_BACKEND": "dummy"}
    first = payload("onMessageAdded_sms_from_customer", Index="0")
    assert TwilioClient().webhook(first).status_code == 200
    message = ChatMessage.objects.get(message_sid=first["MessageSid"])
    LocmemBackend.delay = 3.0  # every Twilio call takes three seconds

    def slow_forward() -> None:
        try:
            forward_customer_message(message.pk)
        finally:
            connections.close_all()

    worker = threading.Thread(target=slow_forward)
    worker.start()
    time.sleep(0.5)  # the forward is now inside its first Twilio call
    started = time.monotonic()
    second = payload("onMessageAdded_sms_from_customer", Index="1",
                     ConversationSid=first["ConversationSid"])
    assert TwilioClient().webhook(second).status_code == 200
    answered_in = time.monotonic() - started
    worker.join(timeout=30)
    LocmemBackend.delay = 0.0
    assert answered_in < 1.0, f"the webhook waited {answered_in:.1f} s for Twilio"
    message.refresh_from_db()
    assert message.forward_state == "sent"


ROUNDS = 20


def race_rounds(make_pair) -> list[str]:
    """Deliver each round's two events at the same moment (a barrier), for a fresh
    conversation SID each round; returns the SIDs. Each delivery must answer 200."""
    sids = []
    for _ in range(ROUNDS):
        conversation_sid = sid("CH")
        first, second = make_pair(conversation_sid)
        assert deliver_at_once([first, second]) == [200, 200]
        sids.append(conversation_sid)
    return sids


def test_message_and_conversation_added_racing_keep_every_field():
    """Whichever delivery creates the row, the other completes it: the name, the
    service SID and the creation date of onConversationAdded are never lost to the
    placeholder row a racing onMessageAdded created."""
    def pair(conversation_sid):
        return (payload("onMessageAdded_sms_from_customer", ConversationSid=conversation_sid),
                payload("onConversationAdded_sms_autocreated", ConversationSid=conversation_sid,
                        FriendlyName="Guest at Unit 4"))

    for conversation_sid in race_rounds(pair):
        conversation = ChatConversation.objects.get(conversation_sid=conversation_sid)
        assert (conversation.friendly_name, conversation.chat_service_sid) == (
            "Guest at Unit 4", PAYLOADS["onConversationAdded_sms_autocreated"]["ChatServiceSid"])
        assert conversation.date_created is not None and conversation.state == "active"
        assert conversation.messages.count() == 1


def test_state_update_racing_a_first_message_keeps_the_state():
    def pair(conversation_sid):
        return (payload("onMessageAdded_sms_from_customer", ConversationSid=conversation_sid),
                payload("onConversationStateUpdated", ConversationSid=conversation_sid,
                        StateFrom="active", StateTo="closed"))

    for conversation_sid in race_rounds(pair):
        conversation = ChatConversation.objects.get(conversation_sid=conversation_sid)
        assert conversation.state == "closed"
        assert conversation.messages.count() == 1


def test_conversation_added_racing_its_state_update_keeps_both():
    def pair(conversation_sid):
        return (payload("onConversationAdded_sms_autocreated", ConversationSid=conversation_sid,
                        FriendlyName="Guest at Unit 4"),
                payload("onConversationStateUpdated", ConversationSid=conversation_sid,
                        StateFrom="active", StateTo="closed"))

    for conversation_sid in race_rounds(pair):
        conversation = ChatConversation.objects.get(conversation_sid=conversation_sid)
        # The state change is newer than the creation: it wins, and the name stays.
        assert (conversation.friendly_name, conversation.state) == ("Guest at Unit 4", "closed")
