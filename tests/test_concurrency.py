"""Behaviour 7 under real concurrency: Twilio's redeliveries can overlap. Eight
requests carrying the same first message at once leave one conversation and one
message, and all of them answer 200.

Runs on a database server (PostgreSQL in .ci/run): SQLite's single writer lock
would serialize the threads and prove nothing.
"""

import threading

import pytest
from django.db import connections

from tests.conftest import TwilioClient, payload
from tests.factories import GuestFactory, ReservationFactory
from tests.testapp.models import ChatConversation, ChatMessage

pytestmark = [pytest.mark.concurrency, pytest.mark.django_db(transaction=True)]

THREADS = 8


def deliver_at_once(deliveries: list[dict[str, str]]) -> list[int]:
    barrier = threading.Barrier(len(deliveries))
    statuses: list[int] = []

    def deliver(data: dict[str, str]) -> None:
        try:
            client = TwilioClient()
            barrier.wait(timeout=10)
            statuses.append(client.webhook(data).status_code)
        finally:
            connections.close_all()  # each thread opened its own connection

    threads = [threading.Thread(target=deliver, args=(data,)) for data in deliveries]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    return statuses


def test_same_first_message_from_eight_threads():
    booking = ReservationFactory(guest=GuestFactory(mobile="(415) 555-0142"))
    data = payload("onMessageAdded_sms_from_customer")
    statuses = deliver_at_once([{**data, "RetryCount": str(i)} for i in range(THREADS)])
    assert statuses == [200] * THREADS
    assert ChatConversation.objects.count() == 1
    assert ChatMessage.objects.count() == 1
    assert ChatConversation.objects.get().booking == booking


def test_conversation_and_message_events_racing():
    booking = ReservationFactory(guest=GuestFactory(mobile="(415) 555-0142"))
    conversation = payload("onConversationAdded_sms_autocreated")
    messages = [payload("onMessageAdded_sms_from_customer", Index=str(i)) for i in range(THREADS - 1)]
    statuses = deliver_at_once([conversation, *messages])
    assert statuses == [200] * THREADS
    assert ChatConversation.objects.count() == 1
    assert ChatMessage.objects.count() == THREADS - 1
    linked = ChatConversation.objects.get()
    assert (linked.booking, linked.link_method) == (booking, "automatic")
