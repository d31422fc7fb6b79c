"""Opt-outs: a customer who texts STOP (or whom Twilio reports opted out with error
21610, or whom a person opts out) gets nothing more from the app; their messages are
still saved and linked; START brings them back. Through the webhook, the task
framework (ImmediateBackend) and the API backends, as a site runs them."""

from io import StringIO

import pytest
from django.core.management import call_command
from django.db import connection
from twilio.rest import Client

import django_twilio_convlink
from django_twilio_convlink import api
from django_twilio_convlink.conf import TWILIO_OPT_IN_KEYWORDS, TWILIO_OPT_OUT_KEYWORDS
from django_twilio_convlink.exceptions import CustomerOptedOut
from django_twilio_convlink.group_chat import forward_customer_message
from django_twilio_convlink.models import OptOut
from django_twilio_convlink.optouts import refuse_if_opted_out
from django_twilio_convlink.testing import CaptureStatements
from tests.factories import GuestFactory, ReservationFactory
from tests.helpers import CUSTOMER, payload, sid
from tests.testapp.models import ChatConversation, ChatMessage
from tests.unit.test_api_sdk import GROUP_SID, ScriptedHttpClient, conversation, twilio_error

pytestmark = pytest.mark.django_db

FIRST = "onMessageAdded_sms_from_customer"


@pytest.fixture
def deliver(twilio_client, django_capture_on_commit_callbacks):
    """Deliver a webhook and run what it enqueued after its commit, as in production."""
    def deliver(data):
        with django_capture_on_commit_callbacks(execute=True):
            response = twilio_client.webhook(data)
        assert response.status_code == 200, response.content
        return response
    return deliver


@pytest.fixture
def stay():
    return ReservationFactory(guest=GuestFactory(mobile="(415) 555-0142"))


def methods(outbox):
    return [call.method for call in outbox]


def opt_signals(received):
    return [(name, kwargs["phone"], kwargs["how"], kwargs["origin"]) for name, _, kwargs in received.calls
            if name.startswith("customer_opted")]


@pytest.mark.parametrize("keyword", TWILIO_OPT_OUT_KEYWORDS)
def test_each_default_keyword_opts_out_in_mixed_case_with_spaces(deliver, api_outbox, stay, received,
                                                                 keyword):
    body = f"  {keyword.capitalize()} \n"
    data = payload(FIRST, Body=body)
    deliver(data)
    assert django_twilio_convlink.is_opted_out("(415) 555-0142")
    row = OptOut.objects.get()
    assert (row.phone, row.method, row.detail) == (CUSTOMER, "keyword", keyword)
    # Nothing a customer sent is lost: the STOP is stored and linked ...
    message = ChatMessage.objects.get(message_sid=data["MessageSid"])
    assert message.body == body and message.conversation.booking == stay
    # ... and nothing reaches them: no group chat, no copy.
    assert api_outbox == []
    assert (message.forward_state, message.forward_skip_reason) == (
        "skipped", f"{CUSTOMER} has opted out of texts (texted {keyword}); nothing was sent.")
    assert opt_signals(received) == [("customer_opted_out", CUSTOMER, "keyword", "webhook")]


@pytest.mark.parametrize("body", ["stop please", "STOP!", "", "Stop the music, the heater is off"])
def test_only_the_whole_message_is_a_keyword(deliver, api_outbox, stay, body):
    deliver(payload(FIRST, Body=body))
    assert not OptOut.objects.exists()
    assert "send_message" in methods(api_outbox)


def test_a_system_author_texting_stop_opts_nobody_out(deliver, stay):
    deliver(payload(FIRST))
    deliver(payload(FIRST, Author="+15612205252", Body="STOP", Index="1"))
    assert not OptOut.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_the_opt_out_commits_with_its_message(twilio_client, stay, settings):
    settings.TWILIO_CONVLINK = {**settings.TWILIO_CONVLINK, "TASK_BACKEND": "dummy"}
    with CaptureStatements(connection) as captured:
        twilio_client.webhook(payload(FIRST, Body="STOP"))
    sql = captured.sql
    message_insert = next(i for i, s in enumerate(sql) if s.startswith('INSERT INTO "testapp_chatmessage"')
                          or s.startswith("INSERT INTO `testapp_chatmessage`"))
    optout_insert = next(i for i, s in enumerate(sql) if "twilio_convlink_optout" in s and "INSERT" in s)
    commit = next(i for i, s in enumerate(sql) if i > message_insert and s == "COMMIT")
    assert message_insert < optout_insert < commit
    assert "BEGIN" not in sql[message_insert:optout_insert]


def test_opted_out_customer_messages_are_saved_skipped_and_not_retried(deliver, api_outbox, stay):
    deliver(payload(FIRST))
    assert methods(api_outbox) == ["create_group_chat", "send_message"]
    deliver(payload(FIRST, Body="STOP", Index="1"))
    later = payload(FIRST, Body="The heater is broken", Index="2")
    deliver(later)
    assert methods(api_outbox) == ["create_group_chat", "send_message"]  # nothing more
    message = ChatMessage.objects.get(message_sid=later["MessageSid"])
    assert message.forward_state == "skipped" and "opted out" in message.forward_skip_reason
    out = StringIO()
    call_command("retry_group_chats", "--now", stdout=out)
    assert "0 due" in out.getvalue() and len(api_outbox) == 2


def test_opt_back_in_and_the_next_message_is_forwarded(deliver, api_outbox, stay, received):
    deliver(payload(FIRST, Body="STOP"))
    skipped = payload(FIRST, Body="still there?", Index="1")
    deliver(skipped)
    deliver(payload(FIRST, Body=" start ", Index="2"))
    assert not django_twilio_convlink.is_opted_out(CUSTOMER)
    row = OptOut.objects.get()
    assert (row.opted_in_method, row.opted_in_detail) == ("keyword", "START") and row.opted_in_at
    after = payload(FIRST, Body="Thanks, what is the wifi password?", Index="3")
    deliver(after)
    sent = [call.kwargs["body"] for call in api_outbox if call.method == "send_message"]
    # START itself and the next message go to the group chat; the skipped one does not ...
    assert sent == [" start ", after["Body"]]
    assert opt_signals(received) == [("customer_opted_out", CUSTOMER, "keyword", "webhook"),
                                     ("customer_opted_in", CUSTOMER, "keyword", "webhook")]
    # ... unless asked for.
    call_command("retry_group_chats", "--include-permanent", stdout=StringIO())
    sent = [call.kwargs["body"] for call in api_outbox if call.method == "send_message"]
    assert sorted(sent[2:]) == sorted(["STOP", skipped["Body"]])


def test_a_forward_queued_before_stop_is_not_posted_after_it(twilio_client, api_outbox, stay, settings):
    settings.TWILIO_CONVLINK = {**settings.TWILIO_CONVLINK, "TASK_BACKEND": "dummy"}
    queued = payload(FIRST, Body="Can I check in early?")
    twilio_client.webhook(queued)
    twilio_client.webhook(payload(FIRST, Body="stop", Index="1"))
    message = ChatMessage.objects.get(message_sid=queued["MessageSid"])
    assert message.forward_state == "pending"
    assert forward_customer_message(message.pk) == ""  # the task, run late by a worker
    assert api_outbox == []
    message.refresh_from_db()
    assert message.forward_state == "skipped"


def test_twilio_error_21610_from_the_sdk_opts_the_customer_out(deliver, settings, stay, received):
    settings.TWILIO_CONVLINK = {**settings.TWILIO_CONVLINK,
                                "API_BACKEND": "django_twilio_convlink.api.SdkBackend"}
    twilio = ScriptedHttpClient(
        conversation(GROUP_SID),
        twilio_error(400, 21610, "Attempt to send to unsubscribed recipient"))
    backend = api.get_api_backend()
    backend._client = Client(settings.TWILIO_CONVLINK["ACCOUNT_SID"], settings.TWILIO_CONVLINK["AUTH_TOKEN"],
                             http_client=twilio)
    try:
        data = payload(FIRST)
        deliver(data)
    finally:
        backend._client = None
    assert [url.rsplit("/", 2)[-2:] for _, url in twilio.calls] == [
        ["v1", "ConversationWithParticipants"], [GROUP_SID, "Messages"]]
    row = OptOut.objects.get()
    assert (row.phone, row.method, row.detail) == (CUSTOMER, "error", "21610")
    message = ChatMessage.objects.get(message_sid=data["MessageSid"])
    assert message.forward_state == "skipped" and "21610" in message.forward_skip_reason
    assert opt_signals(received) == [("customer_opted_out", CUSTOMER, "error", "group_chat")]
    # The next message costs Twilio nothing: no request is scripted for it.
    deliver(payload(FIRST, Index="1"))
    assert len(twilio.requests) == 2


def test_receipt_with_21610_in_the_customers_conversation_opts_out(twilio_client, stay):
    data = payload(FIRST)
    twilio_client.webhook(data)
    reply = payload(FIRST, Author="ASSISTANT", Index="1")
    twilio_client.webhook(reply)
    twilio_client.webhook(payload("onDeliveryUpdated", MessageSid=reply["MessageSid"],
                                  ConversationSid=data["ConversationSid"], Status="failed",
                                  ErrorCode="21610"))
    row = OptOut.objects.get()
    assert (row.phone, row.method) == (CUSTOMER, "error")


def test_opt_out_and_in_by_hand(received, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        assert django_twilio_convlink.opt_out("(415) 555-0142") is True
    assert django_twilio_convlink.opt_out("+1 415 555 0142") is False  # already
    assert django_twilio_convlink.is_opted_out("415-555-0142")
    with pytest.raises(CustomerOptedOut) as refused:
        refuse_if_opted_out(CUSTOMER)
    assert refused.value.code == 21610 and "opted out by a person" in str(refused.value)
    with django_capture_on_commit_callbacks(execute=True):
        assert django_twilio_convlink.opt_in(CUSTOMER) is True
    assert django_twilio_convlink.opt_in(CUSTOMER) is False
    refuse_if_opted_out(CUSTOMER)
    assert opt_signals(received) == [("customer_opted_out", CUSTOMER, "admin", "admin"),
                                     ("customer_opted_in", CUSTOMER, "admin", "admin")]
    with pytest.raises(ValueError):
        django_twilio_convlink.opt_out("not a phone")
    assert not django_twilio_convlink.is_opted_out("not a phone")


def test_a_sites_keywords_replace_the_default(deliver, settings, stay):
    settings.TWILIO_CONVLINK = {**settings.TWILIO_CONVLINK, "OPT_OUT_KEYWORDS": ["ARRET", "STOP"],
                                "OPT_IN_KEYWORDS": ["START"]}
    deliver(payload(FIRST, Body="Arrêt".replace("ê", "e")))
    assert django_twilio_convlink.is_opted_out(CUSTOMER)
    deliver(payload(FIRST, Body="yes", Index="1"))  # not the site's opt-in word
    assert django_twilio_convlink.is_opted_out(CUSTOMER)


def test_every_opt_in_keyword_opts_back_in(deliver, stay):
    for index, keyword in enumerate(TWILIO_OPT_IN_KEYWORDS):
        deliver(payload(FIRST, Body="STOP", Index=str(2 * index)))
        deliver(payload(FIRST, Body=keyword.lower(), Index=str(2 * index + 1)))
        assert not django_twilio_convlink.is_opted_out(CUSTOMER), keyword


def test_a_new_customer_who_starts_with_stop_gets_no_group_chat(deliver, api_outbox):
    data = payload(FIRST, ConversationSid=sid("CH"), Author="+14155550177", Body="STOP")
    deliver(data)
    assert api_outbox == [] and not ChatConversation.objects.filter(is_group_chat=True).exists()
