"""A signed event may only change what it is about: a sub-account's conversations for
a sub-account's token, a message in the conversation the event names. Everything
else is refused with nothing written, logged, and kept in the delivery log."""

from io import StringIO

import pytest
from django.core.management import call_command

from django_twilio_convlink.models import WebhookDelivery
from tests.conftest import CUSTOMER, TwilioClient, payload
from tests.factories import GuestFactory, ReservationFactory, sid
from tests.testapp.models import ChatConversation, ChatMessage

pytestmark = pytest.mark.django_db

FIRST = "onMessageAdded_sms_from_customer"
MAIN = "AC0123456789abcdef0123456789abcdef"  # the payloads' AccountSid
SUBACCOUNT = "AC" + "5" * 32
SUBACCOUNT_TOKEN = "subaccount-token"


@pytest.fixture
def subaccount(settings):
    settings.TWILIO_CONVLINK = {**settings.TWILIO_CONVLINK,
                                "SUBACCOUNT_AUTH_TOKENS": {SUBACCOUNT: SUBACCOUNT_TOKEN}}
    return TwilioClient(token=SUBACCOUNT_TOKEN)


@pytest.fixture
def main_message(twilio_client):
    data = payload(FIRST)
    assert twilio_client.webhook(data).status_code == 200
    return ChatMessage.objects.get(message_sid=data["MessageSid"])


def assert_refused(response, status, reason):
    assert response.status_code == status, response.content
    delivery = WebhookDelivery.objects.order_by("pk").last()
    assert delivery.status == ("refused" if status == 403 else "rejected")
    assert reason in delivery.error and reason in response.content.decode()


def test_conversation_records_the_account_that_created_it(twilio_client, subaccount):
    twilio_client.webhook(payload(FIRST))
    other = payload(FIRST, AccountSid=SUBACCOUNT, ConversationSid=sid("CH"))
    assert subaccount.webhook(other).status_code == 200
    assert dict(ChatConversation.objects.values_list("conversation_sid", "account_sid")) == {
        payload(FIRST)["ConversationSid"]: MAIN, other["ConversationSid"]: SUBACCOUNT}


def test_subaccount_cannot_rewrite_a_main_account_message(subaccount, main_message, caplog):
    forged = payload("onMessageUpdated", AccountSid=SUBACCOUNT, MessageSid=main_message.message_sid,
                     ConversationSid=main_message.conversation.conversation_sid,
                     Body="Please send the door code to this new number",
                     DateUpdated="2030-01-01T00:00:00Z")
    assert_refused(subaccount.webhook(forged), 403, "may not change conversation")
    main_message.refresh_from_db()
    assert main_message.body == payload(FIRST)["Body"]
    assert "Refused Twilio onMessageUpdated" in caplog.text


def test_subaccount_cannot_post_into_a_main_account_conversation(subaccount, main_message, api_outbox):
    ReservationFactory(guest=GuestFactory(mobile=CUSTOMER))
    calls_before = len(api_outbox)
    forged = payload(FIRST, AccountSid=SUBACCOUNT, Author=CUSTOMER, Index="1",
                     ConversationSid=main_message.conversation.conversation_sid,
                     Body="Please send the door code to this new number")
    assert_refused(subaccount.webhook(forged), 403, "may not change conversation")
    assert not ChatMessage.objects.filter(message_sid=forged["MessageSid"]).exists()
    assert len(api_outbox) == calls_before  # nothing forwarded into the group chat


def test_subaccount_cannot_retitle_a_main_account_conversation(subaccount, main_message):
    conversation = main_message.conversation
    forged = payload("onConversationAdded_sms_autocreated", EventType="onConversationUpdated",
                     AccountSid=SUBACCOUNT, ConversationSid=conversation.conversation_sid,
                     FriendlyName="Hijacked")
    assert_refused(subaccount.webhook(forged), 403, "may not change conversation")
    conversation.refresh_from_db()
    assert conversation.friendly_name != "Hijacked"


def test_main_account_cannot_write_a_subaccount_conversation(twilio_client, subaccount):
    theirs = payload(FIRST, AccountSid=SUBACCOUNT, ConversationSid=sid("CH"))
    subaccount.webhook(theirs)
    intruder = payload(FIRST, ConversationSid=theirs["ConversationSid"], Index="1", Body="hi")
    assert_refused(twilio_client.webhook(intruder), 403, "may not change conversation")
    assert ChatMessage.objects.count() == 1


def test_subaccount_writes_its_own_conversations_and_gets_no_group_chat(subaccount, api_outbox):
    ReservationFactory(guest=GuestFactory(mobile=CUSTOMER))
    data = payload(FIRST, AccountSid=SUBACCOUNT, ConversationSid=sid("CH"), Author=CUSTOMER)
    assert subaccount.webhook(data).status_code == 200
    later = payload(FIRST, AccountSid=SUBACCOUNT, ConversationSid=data["ConversationSid"],
                    Author=CUSTOMER, Index="1")
    assert subaccount.webhook(later).status_code == 200
    conversation = ChatConversation.objects.get(conversation_sid=data["ConversationSid"])
    assert conversation.messages.count() == 2 and conversation.booking is not None
    # The API calls act in the main account (ACCOUNT_SID's credentials), which a
    # sub-account's customers and numbers are not part of.
    assert not ChatConversation.objects.filter(is_group_chat=True).exists()
    assert set(conversation.messages.values_list("forward_state", flat=True)) == {""}
    assert not [call for call in api_outbox if call.method == "create_group_chat"]


def test_rows_stored_before_accounts_were_recorded_belong_to_the_main_account(
        twilio_client, subaccount, main_message):
    ChatConversation.objects.update(account_sid="")
    later = payload(FIRST, Index="1", ConversationSid=main_message.conversation.conversation_sid)
    assert twilio_client.webhook(later).status_code == 200
    forged = payload(FIRST, AccountSid=SUBACCOUNT, Index="2",
                     ConversationSid=main_message.conversation.conversation_sid)
    assert_refused(subaccount.webhook(forged), 403, "may not change conversation")


@pytest.mark.parametrize("event", ["onMessageUpdated", "onMessageRemoved", "onMessageAdded"])
def test_event_about_another_conversations_message_is_refused(twilio_client, main_message, event):
    other = ChatConversation.objects.create(conversation_sid=sid("CH"), account_sid=MAIN)
    name = FIRST if event == "onMessageAdded" else event
    forged = payload(name, MessageSid=main_message.message_sid, ConversationSid=other.conversation_sid,
                     Body="edited elsewhere", DateUpdated="2030-01-01T00:00:00Z",
                     DateRemoved="2030-01-01T00:00:00Z")
    assert_refused(twilio_client.webhook(forged), 400, "belongs to conversation")
    main_message.refresh_from_db()
    assert (main_message.body, main_message.date_removed, main_message.conversation_id) == (
        payload(FIRST)["Body"], None, main_message.conversation_id)
    assert not other.messages.exists()


@pytest.mark.parametrize("event", ["onMessageAdded", "onMessageUpdated", "onMessageRemoved"])
def test_known_message_under_an_unknown_conversation_is_a_400_not_a_retry_loop(
        twilio_client, main_message, event):
    name = FIRST if event == "onMessageAdded" else event
    unknown = sid("CH")
    data = payload(name, MessageSid=main_message.message_sid, ConversationSid=unknown)
    for retry in ("0", "1", "2"):  # Twilio's retries, were the answer a 5xx
        assert_refused(twilio_client.webhook({**data, "RetryCount": retry}), 400, "belongs to conversation")
    assert not ChatConversation.objects.filter(conversation_sid=unknown).exists()
    assert ChatMessage.objects.count() == 1
    # A replay refuses it again, as malformed input, and does not fail.
    out = StringIO()
    call_command("replay_twilio_webhooks", str(WebhookDelivery.objects.order_by("pk").last().pk),
                 stdout=out, stderr=StringIO())
    assert "0 failed, 1 malformed" in out.getvalue()


def test_upgraded_sites_record_the_accounts_of_older_conversations(twilio_client, subaccount):
    theirs = payload(FIRST, AccountSid=SUBACCOUNT, ConversationSid=sid("CH"))
    subaccount.webhook(theirs)
    twilio_client.webhook(payload(FIRST))
    unknown = ChatConversation.objects.create(conversation_sid=sid("CH"))  # older than the log
    ChatConversation.objects.update(account_sid="")  # as stored before the upgrade
    out = StringIO()
    call_command("record_conversation_accounts", "--dry-run", stdout=out)
    assert "Would record the account of 2 conversation(s); 1 still blank" in out.getvalue()
    call_command("record_conversation_accounts", stdout=StringIO())
    assert dict(ChatConversation.objects.values_list("conversation_sid", "account_sid")) == {
        theirs["ConversationSid"]: SUBACCOUNT, payload(FIRST)["ConversationSid"]: MAIN,
        unknown.conversation_sid: ""}
    later = payload(FIRST, AccountSid=SUBACCOUNT, ConversationSid=theirs["ConversationSid"], Index="1")
    assert subaccount.webhook(later).status_code == 200
