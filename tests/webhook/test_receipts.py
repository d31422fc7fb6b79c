"""Delivery receipts (onDeliveryUpdated): each recipient's last receipt kept, the
message's summary status, in every order Twilio may deliver them. Driven through
the webhook, signed with the SDK's RequestValidator, as Twilio sends them."""

import logging

import pytest

from django_twilio_convlink.api import LocmemBackend
from django_twilio_convlink.models import WaitingReceipt, WebhookDelivery
from django_twilio_convlink.receipts import error_meaning, summarize
from tests.helpers import TwilioClient, payload, sid
from tests.testapp.models import ChatConversation, ChatMessage

pytestmark = pytest.mark.django_db(transaction=True)

CUSTOMER_MB = "MB" + "1" * 32
MANAGER_MB = "MB" + "2" * 32


@pytest.fixture
def reply(twilio_client):
    """An assistant's message, stored: the kind of text receipts are about."""
    data = payload("onMessageAdded_from_assistant_via_api")
    assert twilio_client.webhook(data).status_code == 200
    return ChatMessage.objects.get(message_sid=data["MessageSid"])


def receipt(message_sid, status, updated, *, participant=CUSTOMER_MB, error="0", conversation=None,
            **fields):
    values = {"MessageSid": message_sid, "Status": status, "ParticipantSid": participant,
              "DeliveryReceiptSid": sid("DY"), "ErrorCode": error,
              "DateCreated": "2026-11-20T13:43:31Z", "DateUpdated": f"2026-11-20T13:{updated}Z"}
    if conversation is not None:
        values["ConversationSid"] = conversation
    return payload("onDeliveryUpdated", **values, **fields)


def send(twilio_client, message, status, updated, **kwargs):
    data = receipt(message.message_sid, status, updated,
                   conversation=message.conversation.conversation_sid, **kwargs)
    response = twilio_client.webhook(data)
    assert response.status_code == 200, response.content
    message.refresh_from_db()
    return data


def statuses(received):
    return [(kwargs["status"], kwargs["error_code"], kwargs["origin"])
            for name, _, kwargs in received.calls if name == "message_status_changed"]


def test_sent_delivered_read_in_order(twilio_client, reply, received):
    assert reply.delivery_status == ""
    send(twilio_client, reply, "sent", "43:32")
    assert reply.delivery_status == "sent"
    send(twilio_client, reply, "delivered", "43:35")
    assert reply.delivery_status == "delivered"
    send(twilio_client, reply, "read", "44:00")
    assert (reply.delivery_status, reply.delivery_error_code) == ("read", None)
    assert reply.delivery_updated_at.isoformat() == "2026-11-20T13:44:00+00:00"
    assert reply.delivery_receipts[CUSTOMER_MB]["status"] == "read"
    assert statuses(received) == [("sent", None, "webhook"), ("delivered", None, "webhook"),
                                  ("read", None, "webhook")]
    [(_, sender, kwargs)] = [c for c in received.calls if c[0] == "message_status_changed"][:1]
    assert sender is ChatMessage and kwargs["message"].pk == reply.pk and kwargs["committed"]


def test_delivered_before_sent_stays_delivered(twilio_client, reply, received):
    send(twilio_client, reply, "delivered", "43:35")
    send(twilio_client, reply, "sent", "43:32")  # older: changes nothing
    assert reply.delivery_status == "delivered"
    assert reply.delivery_updated_at.isoformat() == "2026-11-20T13:43:35+00:00"
    assert statuses(received) == [("delivered", None, "webhook")]
    assert set(WebhookDelivery.objects.values_list("status", flat=True)) == {"processed"}


def test_failed_after_delivered_is_failed_with_its_code(twilio_client, reply, received, caplog):
    send(twilio_client, reply, "delivered", "43:35")
    with caplog.at_level(logging.WARNING, logger="django_twilio_convlink.receipts"):
        send(twilio_client, reply, "failed", "45:00", error="30007")
    assert (reply.delivery_status, reply.delivery_error_code) == ("failed", 30007)
    assert statuses(received) == [("delivered", None, "webhook"), ("failed", 30007, "webhook")]
    assert "30007" in caplog.text and "spam" in caplog.text


def test_the_same_receipt_twice_changes_nothing(twilio_client, reply, received):
    data = send(twilio_client, reply, "delivered", "43:35")
    before = reply.updated_at
    assert twilio_client.webhook({**data, "RetryCount": "1"}).status_code == 200
    reply.refresh_from_db()
    assert reply.updated_at == before and reply.delivery_status == "delivered"
    assert statuses(received) == [("delivered", None, "webhook")]


def test_same_time_keeps_the_further_status(twilio_client, reply):
    send(twilio_client, reply, "delivered", "43:35")
    send(twilio_client, reply, "sent", "43:35")
    assert reply.delivery_status == "delivered"


def test_receipt_before_its_message_waits_and_applies(twilio_client, received):
    data = payload("onMessageAdded_from_assistant_via_api", ConversationSid=sid("CH"))
    early = receipt(data["MessageSid"], "delivered", "43:35", conversation=data["ConversationSid"])
    assert twilio_client.webhook(early).status_code == 200
    assert WaitingReceipt.objects.filter(message_sid=data["MessageSid"]).count() == 1
    # The receipt created the conversation, as a message event would have.
    assert ChatConversation.objects.filter(conversation_sid=data["ConversationSid"]).exists()

    assert twilio_client.webhook(data).status_code == 200
    message = ChatMessage.objects.get(message_sid=data["MessageSid"])
    assert message.delivery_status == "delivered"
    assert not WaitingReceipt.objects.exists()
    names = [name for name, _, _ in received.calls if name in ("message_received", "message_status_changed")]
    assert names == ["message_received", "message_status_changed"]


def test_receipts_before_their_message_apply_in_their_own_order(twilio_client):
    data = payload("onMessageAdded_from_assistant_via_api", ConversationSid=sid("CH"))
    for status, updated in (("read", "44:00"), ("sent", "43:32"), ("delivered", "43:35")):
        twilio_client.webhook(receipt(data["MessageSid"], status, updated,
                                      conversation=data["ConversationSid"]))
    twilio_client.webhook(data)
    assert ChatMessage.objects.get(message_sid=data["MessageSid"]).delivery_status == "read"


def test_two_recipients_summary(twilio_client, reply):
    send(twilio_client, reply, "delivered", "43:35", participant=CUSTOMER_MB)
    send(twilio_client, reply, "sent", "43:36", participant=MANAGER_MB)
    assert reply.delivery_status == "sent"  # the least advanced: not delivered to everyone
    send(twilio_client, reply, "delivered", "43:40", participant=MANAGER_MB)
    assert reply.delivery_status == "delivered"
    send(twilio_client, reply, "undelivered", "43:50", participant=MANAGER_MB, error="30003")
    assert (reply.delivery_status, reply.delivery_error_code) == ("undelivered", 30003)
    assert set(reply.delivery_receipts) == {CUSTOMER_MB, MANAGER_MB}
    assert reply.delivery_receipts[CUSTOMER_MB]["status"] == "delivered"


def test_receipt_naming_another_conversation_is_refused(twilio_client, reply):
    data = receipt(reply.message_sid, "delivered", "43:35", conversation=sid("CH"))
    response = twilio_client.webhook(data)
    assert response.status_code == 400
    reply.refresh_from_db()
    assert reply.delivery_status == ""
    assert WebhookDelivery.objects.get(message_sid=reply.message_sid, event_type="onDeliveryUpdated"
                                       ).status == "rejected"


def test_unknown_status_is_acknowledged_and_changes_nothing(twilio_client, reply, caplog):
    with caplog.at_level(logging.WARNING, logger="django_twilio_convlink.events"):
        send(twilio_client, reply, "teleported", "43:35")
    assert reply.delivery_status == "" and reply.delivery_receipts == {}
    assert "teleported" in caplog.text


@pytest.mark.parametrize("field, value", [("ErrorCode", "abc"), ("ParticipantSid", ""),
                                          ("Status", ""), ("DateUpdated", "yesterday")])
def test_malformed_receipts_are_rejected(twilio_client, reply, field, value):
    data = receipt(reply.message_sid, "delivered", "43:35", **{})
    data[field] = value
    assert twilio_client.webhook(data).status_code == 400
    reply.refresh_from_db()
    assert reply.delivery_status == ""


def test_summary_rule():
    def r(status, minute, code=None):
        return {"status": status, "error_code": code, "updated": f"2026-11-20T13:{minute:02d}:00+00:00"}

    assert summarize({}) == ("", None, None)
    assert summarize({"a": r("read", 1), "b": r("delivered", 2)})[0] == "delivered"
    assert summarize({"a": r("read", 1), "b": r("read", 2)})[0] == "read"
    assert summarize({"a": r("undelivered", 1, 30003), "b": r("failed", 2, 30007)})[:2] == ("failed", 30007)
    assert summarize({"a": r("read", 1), "b": r("undelivered", 2, 30005)})[:2] == ("undelivered", 30005)
    assert summarize({"a": r("sent", 1), "b": r("read", 9)})[2].minute == 9


def test_common_error_codes_are_explained():
    for code, word in ((30003, "Unreachable"), (30005, "Unknown number"), (30006, "Landline"),
                       (30007, "carrier"), (21610, "opted out")):
        assert word.lower() in error_meaning(code).lower()
    assert error_meaning(12345) == "" and error_meaning(None) == ""


class ReportingFirstBackend(LocmemBackend):
    """Twilio as it can behave: the copy's receipt arrives before the app has stored
    the copy (the app records its own forward only once Twilio accepted it)."""

    def send_message(self, **kwargs):
        message_sid = super().send_message(**kwargs)
        early = receipt(message_sid, "delivered", "43:35", conversation=kwargs["conversation_sid"])
        assert TwilioClient().webhook(early).status_code == 200
        return message_sid


def test_receipt_that_overtakes_the_group_chats_copy_is_applied(twilio_client, settings, received):
    settings.TWILIO_CONVLINK = {**settings.TWILIO_CONVLINK,
                                "API_BACKEND": "tests.webhook.test_receipts.ReportingFirstBackend"}
    data = payload("onMessageAdded_sms_from_customer")
    assert twilio_client.webhook(data).status_code == 200
    customer = ChatMessage.objects.get(message_sid=data["MessageSid"])
    assert customer.forward_state == "sent"
    copy = ChatMessage.objects.get(message_sid=customer.forwarded_sid)
    assert copy.delivery_status == "delivered" and not WaitingReceipt.objects.exists()
    assert ("delivered", None, "group_chat") in statuses(received)
