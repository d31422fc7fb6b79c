"""Faults: Twilio failing during the group chat work (the database connection killed
in the middle of processing is tests/system/test_faults.py). No partial rows; the
failure is recorded; a retry completes the work."""

from io import StringIO

import pytest
from django.core.management import call_command

from django_twilio_convlink.api import ApiError, LocmemBackend
from django_twilio_convlink.models import WebhookDelivery
from tests.factories import GuestFactory, ReservationFactory
from tests.helpers import TwilioClient, payload
from tests.testapp.models import ChatConversation, ChatMessage

FIRST = "onMessageAdded_sms_from_customer"


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
