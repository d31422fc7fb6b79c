"""``send_message``, the package root's public API for sending from the site: posted
through the API backend, stored once as a webhook would store it (whichever comes
first, its save or Twilio's echo), and refused before any call when Twilio would
refuse it or the customer asked for silence."""

import datetime
import json
import logging

import pytest
import requests
from twilio.http import HttpClient
from twilio.http.response import Response
from twilio.rest import Client

from django_twilio_convlink import opt_out, send_message
from django_twilio_convlink.api import LocmemBackend, get_api_backend
from django_twilio_convlink.exceptions import ApiError, CustomerOptedOut, InvalidMessage
from tests.factories import ConversationFactory, MessageFactory
from tests.helpers import TwilioClient, payload
from tests.testapp.models import ChatMessage

pytestmark = pytest.mark.django_db(transaction=True)

CUSTOMER = "+14155550142"
MEDIA_SID = "ME" + "4" * 32


@pytest.fixture
def conversation():
    return ConversationFactory(customer_phone=CUSTOMER)


def sent(api_outbox):
    return [call for call in api_outbox if call.method == "send_message"]


def test_a_reply_is_posted_stored_and_announced_once(conversation, api_outbox, received):
    message = send_message(conversation, "A technician comes by at 3pm.")

    [call] = sent(api_outbox)
    assert call.kwargs == {"conversation_sid": conversation.conversation_sid, "author": "ASSISTANT",
                           "body": "A technician comes by at 3pm.", "media_sid": "", "attributes": {}}
    stored = ChatMessage.objects.get()
    assert stored == message and stored.message_sid == call.result
    assert (stored.direction, stored.author, stored.source, stored.body) == (
        "outbound", "ASSISTANT", "API", "A technician comes by at 3pm.")
    assert [(name, kwargs["origin"]) for name, _, kwargs in received.calls] == [("message_received", "api")]


def test_the_author_and_a_photo_can_be_given(conversation, api_outbox):
    message = send_message(conversation, "", media=MEDIA_SID, author="+15612205252")
    [call] = sent(api_outbox)
    assert (call.kwargs["author"], call.kwargs["media_sid"], call.kwargs["body"]) == (
        "+15612205252", MEDIA_SID, "")
    assert message.media == [{"Sid": MEDIA_SID}] and message.direction == "outbound"


def test_twilios_echo_webhook_after_the_send_adds_nothing(conversation, received):
    message = send_message(conversation, "Checkout is at 11.")
    echo = payload("onMessageAdded_from_assistant_via_api", ConversationSid=conversation.conversation_sid,
                   MessageSid=message.message_sid, Body="Checkout is at 11.")
    assert TwilioClient().webhook(echo).status_code == 200
    assert ChatMessage.objects.count() == 1
    assert [name for name, _, _ in received.calls].count("message_received") == 1


class EchoFirstBackend(LocmemBackend):
    """Twilio's echo webhook processed before send_message stores its row (the
    webhook's worker was quicker than this process)."""

    def send_message(self, **kwargs):
        message_sid = super().send_message(**kwargs)
        echo = payload("onMessageAdded_from_assistant_via_api", ConversationSid=kwargs["conversation_sid"],
                       MessageSid=message_sid, Body=kwargs["body"], Author=kwargs["author"])
        assert TwilioClient().webhook(echo).status_code == 200
        return message_sid


def test_twilios_echo_webhook_before_the_save_leaves_one_row(conversation, settings, received):
    settings.TWILIO_CONVLINK = {**settings.TWILIO_CONVLINK,
                                "API_BACKEND": f"{__name__}.EchoFirstBackend"}
    message = send_message(conversation, "Checkout is at 11.")
    assert ChatMessage.objects.get() == message
    origins = [kwargs["origin"] for name, _, kwargs in received.calls if name == "message_received"]
    assert origins == ["webhook"]


@pytest.mark.parametrize("body, media, reason", [
    ("", None, "no text and no media"),
    ("   \n", None, "no text and no media"),
    ("x" * 1601, None, "at most 1600"),
    ("Photo", "not-a-media-sid", "not a Twilio media SID"),
], ids=["empty", "blank", "too-long", "bad-media"])
def test_what_twilio_would_refuse_is_refused_before_any_call(conversation, api_outbox, body, media, reason):
    with pytest.raises(InvalidMessage, match=reason):
        send_message(conversation, body, media=media)
    assert api_outbox == [] and not ChatMessage.objects.exists()


def test_the_longest_body_twilio_takes_is_sent(conversation, api_outbox):
    send_message(conversation, "x" * 1600)
    assert len(sent(api_outbox)) == 1


def test_an_opted_out_customer_gets_nothing(conversation, api_outbox):
    opt_out(CUSTOMER)
    with pytest.raises(CustomerOptedOut) as refused:
        send_message(conversation, "Hello?")
    assert refused.value.code == 21610 and api_outbox == [] and not ChatMessage.objects.exists()


def whatsapp_customer(conversation, hours_ago: float):
    when = datetime.datetime.now(datetime.UTC) - datetime.timedelta(hours=hours_ago)
    MessageFactory(conversation=conversation, author=f"whatsapp:{CUSTOMER}", direction="inbound",
                   date_created=when)


def test_whatsapp_outside_its_24_hours_is_refused_with_twilios_rule(conversation, api_outbox):
    whatsapp_customer(conversation, hours_ago=25)
    with pytest.raises(ApiError) as refused:
        send_message(conversation, "Are you still there?")
    assert refused.value.code == 63016 and not refused.value.transient
    assert "24-hour window" in str(refused.value) and api_outbox == []


def test_whatsapp_within_its_24_hours_is_sent(conversation, api_outbox):
    whatsapp_customer(conversation, hours_ago=23)
    send_message(conversation, "Yes, the pool is open until 10pm.")
    assert len(sent(api_outbox)) == 1


def test_a_twilio_refusal_surfaces_and_stores_nothing(conversation):
    LocmemBackend.fail_with = [ApiError("Conversation not found", code=20404, status=404, transient=False)]
    with pytest.raises(ApiError) as refused:
        send_message(conversation, "Hello")
    assert (refused.value.code, refused.value.status) == (20404, 404)
    assert not ChatMessage.objects.exists()


class Scripted(HttpClient):
    """Twilio's HTTP answers, scripted: what the real SDK then makes of them."""

    def __init__(self, reply):
        super().__init__(logging.getLogger("tests.twilio"), is_async=False)
        self.reply = reply

    def request(self, *args, **kwargs):
        if isinstance(self.reply, Exception):
            raise self.reply
        status, body = self.reply
        return Response(status, json.dumps(body))


@pytest.mark.parametrize("reply, status, code, transient", [
    ((400, {"code": 50511, "message": "Invalid Media", "status": 400}), 400, 50511, False),
    ((429, {"code": 20429, "message": "Too Many Requests", "status": 429}), 429, 20429, True),
    ((503, {"code": 20503, "message": "Service Unavailable", "status": 503}), 503, 20503, True),
    (requests.exceptions.ReadTimeout("Read timed out."), None, None, True),
], ids=["400", "429", "503", "timeout"])
def test_the_sdks_failures_surface_as_api_errors(conversation, settings, reply, status, code, transient):
    settings.TWILIO_CONVLINK = {**settings.TWILIO_CONVLINK,
                                "API_BACKEND": "django_twilio_convlink.api.SdkBackend"}
    backend = get_api_backend()
    backend._client = Client("AC" + "0" * 32, "token", http_client=Scripted(reply))
    with pytest.raises(ApiError) as failed:
        send_message(conversation, "Hello")
    assert (failed.value.status, failed.value.code, failed.value.transient) == (status, code, transient)
    assert not ChatMessage.objects.exists()


def test_the_message_belongs_to_the_conversation_given(conversation):
    other = ConversationFactory(customer_phone="+14155550199")
    assert send_message(conversation, "Hi").conversation_id == conversation.pk
    assert not ChatMessage.objects.filter(conversation=other).exists()


def test_the_admin_cannot_record_a_message_that_was_not_sent(admin_client):
    from django.urls import reverse

    add = reverse("admin:testapp_chatmessage_add")
    assert admin_client.get(add).status_code == 403
    assert admin_client.post(add, {"body": "never sent"}).status_code == 403
    assert not ChatMessage.objects.exists()
