"""A signed event may only change what it is about: a sub-account's conversations for
a sub-account's token, a message in the conversation the event names. Everything
else is refused with nothing written, logged, and kept in the delivery log."""

from io import StringIO

import pytest
from django.core.management import call_command

from django_twilio_convlink.models import WebhookDelivery
from tests.factories import GuestFactory, ReservationFactory
from tests.helpers import CUSTOMER, TwilioClient, payload, sid
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
    return delivery


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
    delivery = assert_refused(twilio_client.webhook(forged), 400, "is not part of conversation")
    # The log says where the message is; the answer does not.
    assert main_message.conversation.conversation_sid in delivery.error
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
        response = twilio_client.webhook({**data, "RetryCount": retry})
        assert_refused(response, 400, "is not part of conversation")
    assert not ChatConversation.objects.filter(conversation_sid=unknown).exists()
    assert ChatMessage.objects.count() == 1
    # A replay refuses it again, as malformed input, and does not fail.
    out = StringIO()
    call_command("replay_twilio_webhooks", str(WebhookDelivery.objects.order_by("pk").last().pk),
                 stdout=out, stderr=StringIO())
    assert "0 failed, 1 rejected or refused" in out.getvalue()


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


# --- Ways across accounts that a second attack found ------------------------------------

def test_event_the_app_does_not_store_is_refused_for_a_foreign_conversation(
        twilio_client, subaccount, main_message, django_capture_on_commit_callbacks):
    """A sub-account naming a main-account conversation that predates account
    recording in an onParticipantAdded gets 403 like any other event: no
    event_received, no processed delivery for record_conversation_accounts to learn a
    wrong owner from, and the main account keeps writing its conversation."""
    from django_twilio_convlink.signals import event_received

    conversation = main_message.conversation
    ChatConversation.objects.update(account_sid="")  # stored before accounts were recorded
    heard = []
    event_received.connect(receiver := lambda **kwargs: heard.append(kwargs["event_type"]), weak=False)
    try:
        forged = payload("onParticipantAdded_sms", AccountSid=SUBACCOUNT,
                         ConversationSid=conversation.conversation_sid)
        with django_capture_on_commit_callbacks(execute=True):
            assert_refused(subaccount.webhook(forged), 403, "may not change conversation")
            # Its own conversations' participants are still acknowledged.
            own = payload("onParticipantAdded_sms", AccountSid=SUBACCOUNT, ConversationSid=sid("CH"))
            assert subaccount.webhook(own).status_code == 200
    finally:
        event_received.disconnect(receiver)
    assert heard == ["onParticipantAdded"]
    call_command("record_conversation_accounts", stdout=StringIO())
    conversation.refresh_from_db()
    assert conversation.account_sid == MAIN  # from the main account's own first message
    later = payload(FIRST, Index="1", ConversationSid=conversation.conversation_sid)
    assert twilio_client.webhook(later).status_code == 200


def test_recording_accounts_trusts_only_deliveries_checked_against_the_conversation(subaccount):
    """record_conversation_accounts learns an owner only from processed message and
    conversation events signed with a token: not from events the app does not store
    (older versions acknowledged them unchecked), nor from a shared-key delivery,
    which speaks for the main account whatever AccountSid it names."""
    conversation = ChatConversation.objects.create(conversation_sid=sid("CH"))
    common = {"conversation_sid": conversation.conversation_sid, "account_sid": SUBACCOUNT,
              "status": "processed", "params": {}}
    WebhookDelivery.objects.create(event_type="onParticipantAdded", **common)
    WebhookDelivery.objects.create(event_type="onDeliveryUpdated", **common)
    WebhookDelivery.objects.create(event_type="onMessageAdded", **common,
                                   headers={"X-Twilio-Webhooks-Signature-Settings": "key=k"})
    call_command("record_conversation_accounts", stdout=StringIO())
    conversation.refresh_from_db()
    assert conversation.account_sid == ""
    WebhookDelivery.objects.create(event_type="onMessageAdded", **common)
    call_command("record_conversation_accounts", stdout=StringIO())
    conversation.refresh_from_db()
    assert conversation.account_sid == SUBACCOUNT


def test_a_subaccount_sid_in_upper_case_does_not_borrow_the_main_token(settings, twilio_client):
    """The token is chosen by the AccountSid in its canonical spelling: the main token
    does not validate a delivery naming the sub-account in upper case."""
    lower = "AC" + "ab" * 16  # hex letters: digits have no case
    settings.TWILIO_CONVLINK = {**settings.TWILIO_CONVLINK,
                                "SUBACCOUNT_AUTH_TOKENS": {lower: SUBACCOUNT_TOKEN}}
    subaccount = TwilioClient(token=SUBACCOUNT_TOKEN)
    theirs = payload(FIRST, AccountSid=lower, ConversationSid=sid("CH"))
    assert subaccount.webhook(theirs).status_code == 200
    shouting = "AC" + lower[2:].upper()
    for account_sid in (shouting, lower, "AC" + "aB" * 16):
        intruder = payload(FIRST, AccountSid=account_sid, ConversationSid=theirs["ConversationSid"],
                           Index="1", Body="new door code")
        assert twilio_client.webhook(intruder).status_code == 403
    assert ChatMessage.objects.count() == 1
    # The sub-account itself may spell its SID either way.
    mine = payload(FIRST, AccountSid=shouting, ConversationSid=theirs["ConversationSid"], Index="1")
    assert subaccount.webhook(mine).status_code == 200


def test_a_subaccount_key_in_upper_case_is_the_same_account(settings, twilio_client, main_message):
    """A key written in upper case in SUBACCOUNT_AUTH_TOKENS names the same sub-account
    as Twilio's lower-case AccountSid: its token writes only its conversations."""
    settings.TWILIO_CONVLINK = {**settings.TWILIO_CONVLINK, "SUBACCOUNT_AUTH_TOKENS": {
        "AC" + "A" * 32: SUBACCOUNT_TOKEN}}
    subaccount = TwilioClient(token=SUBACCOUNT_TOKEN)
    lower = "AC" + "a" * 32
    forged = payload(FIRST, AccountSid=lower, Index="1",
                     ConversationSid=main_message.conversation.conversation_sid)
    assert_refused(subaccount.webhook(forged), 403, "may not change conversation")
    own = payload(FIRST, AccountSid=lower, ConversationSid=sid("CH"))
    assert subaccount.webhook(own).status_code == 200
    assert ChatConversation.objects.get(conversation_sid=own["ConversationSid"]).account_sid == lower
    # The main token does not speak for it either, in any spelling.
    for account_sid in (lower, "AC" + "A" * 32):
        other = payload(FIRST, AccountSid=account_sid, ConversationSid=own["ConversationSid"], Index="1")
        assert twilio_client.webhook(other).status_code == 403


@pytest.mark.parametrize("key", ["AC123", "ac" + "a" * 32, "AC" + "g" * 32, "main", 42])
def test_a_subaccount_key_that_is_no_account_sid_is_a_system_check_error(settings, key):
    from django.core.checks import run_checks

    settings.TWILIO_CONVLINK = {**settings.TWILIO_CONVLINK, "SUBACCOUNT_AUTH_TOKENS": {key: "t"}}
    errors = [m for m in run_checks(tags=["twilio_convlink"]) if m.id == "twilio_convlink.E019"]
    assert len(errors) == 1 and repr(key) in errors[0].msg
    settings.TWILIO_CONVLINK = {**settings.TWILIO_CONVLINK,
                                "SUBACCOUNT_AUTH_TOKENS": {"AC" + "A" * 32: "t", SUBACCOUNT: "u"}}
    assert "twilio_convlink.E019" not in [m.id for m in run_checks(tags=["twilio_convlink"])]


def test_a_refusal_never_names_another_accounts_conversation(subaccount, main_message, caplog):
    theirs = payload(FIRST, AccountSid=SUBACCOUNT, ConversationSid=sid("CH"))
    assert subaccount.webhook(theirs).status_code == 200
    main_sid = main_message.conversation.conversation_sid
    for event in ("onMessageUpdated", "onMessageRemoved", FIRST):
        probe = payload(event, AccountSid=SUBACCOUNT, ConversationSid=theirs["ConversationSid"],
                        MessageSid=main_message.message_sid, DateUpdated="2030-01-01T00:00:00Z")
        response = subaccount.webhook(probe)
        assert response.status_code == 400
        assert main_sid not in response.content.decode()
        assert main_message.message_sid in response.content.decode()  # it named that itself
    # The site's own log says where the message is, at WARNING.
    assert [r.levelname for r in caplog.records if main_sid in r.getMessage()] == ["WARNING"] * 3
    # Nor does a 403 name the owner of the conversation it refuses.
    intruder = payload(FIRST, ConversationSid=theirs["ConversationSid"], Index="5")
    response = TwilioClient().webhook(intruder)
    assert response.status_code == 403 and SUBACCOUNT not in response.content.decode()


SHARED_KEY_ID = "webhooks_sharedkey_" + "b" * 32


def shared_key_webhook(data):
    from urllib.parse import urlencode

    from django.test import Client

    from django_twilio_convlink.testing import SHARED_KEY_HEADER, signature

    signed = signature("http://testserver/twilio/webhook/", data, "shared-secret", "HMAC_SHA256")
    return Client().post("/twilio/webhook/", data=urlencode(data),
                         content_type="application/x-www-form-urlencoded",
                         headers={"X-Twilio-Signature": signed,
                                  SHARED_KEY_HEADER: f"key={SHARED_KEY_ID},algorithm=HMAC_SHA256"})


@pytest.fixture
def shared_key(settings, subaccount):
    settings.TWILIO_CONVLINK = {**settings.TWILIO_CONVLINK,
                                "WEBHOOK_SHARED_KEYS": {SHARED_KEY_ID: "shared-secret"}}


def test_a_shared_key_speaks_for_the_main_account(subaccount, shared_key, main_message):
    """As docs/operating.rst says: a delivery signed with a shared key counts as the main
    account's, whatever AccountSid it names."""
    theirs = payload(FIRST, AccountSid=SUBACCOUNT, ConversationSid=sid("CH"))
    assert subaccount.webhook(theirs).status_code == 200
    intruder = payload(FIRST, AccountSid=SUBACCOUNT, ConversationSid=theirs["ConversationSid"],
                       Index="1", Body="new door code")
    assert_refused(shared_key_webhook(intruder), 403, "may not change conversation")
    # It writes the main account's conversations, and what it creates is the main account's.
    mine = payload(FIRST, AccountSid=SUBACCOUNT, Index="1",
                   ConversationSid=main_message.conversation.conversation_sid)
    assert shared_key_webhook(mine).status_code == 200
    new = payload(FIRST, AccountSid=SUBACCOUNT, ConversationSid=sid("CH"))
    assert shared_key_webhook(new).status_code == 200
    assert ChatConversation.objects.get(conversation_sid=new["ConversationSid"]).account_sid == ""
    # A replay of the refused delivery is refused again: the log keeps how it was signed.
    out = StringIO()
    refused = WebhookDelivery.objects.get(message_sid=intruder["MessageSid"])
    call_command("replay_twilio_webhooks", str(refused.pk), stdout=out, stderr=StringIO())
    assert "1 rejected or refused" in out.getvalue()
    assert ChatMessage.objects.filter(message_sid=intruder["MessageSid"]).count() == 0


def test_subaccount_cannot_mark_a_main_account_message_delivered(subaccount, main_message):
    forged = payload("onDeliveryUpdated", AccountSid=SUBACCOUNT, MessageSid=main_message.message_sid,
                     ConversationSid=main_message.conversation.conversation_sid, Status="failed",
                     ErrorCode="30007")
    assert_refused(subaccount.webhook(forged), 403, "may not change conversation")
    main_message.refresh_from_db()
    assert main_message.delivery_status == "" and main_message.delivery_receipts == {}


def test_subaccount_receipt_waiting_in_a_main_account_conversation_is_refused(subaccount, main_message):
    from django_twilio_convlink.models import WaitingReceipt

    forged = payload("onDeliveryUpdated", AccountSid=SUBACCOUNT, MessageSid=sid("IM"),
                     ConversationSid=main_message.conversation.conversation_sid)
    assert_refused(subaccount.webhook(forged), 403, "may not change conversation")
    assert not WaitingReceipt.objects.exists()


def test_subaccount_receipt_naming_no_conversation_is_dropped_when_its_message_comes(
        twilio_client, subaccount, main_message):
    from django_twilio_convlink.models import WaitingReceipt

    later = payload(FIRST, Author="ASSISTANT", Index="1",
                    ConversationSid=main_message.conversation.conversation_sid)
    forged = payload("onDeliveryUpdated", AccountSid=SUBACCOUNT, MessageSid=later["MessageSid"])
    del forged["ConversationSid"]
    assert subaccount.webhook(forged).status_code == 200  # it names nothing it may not write
    assert twilio_client.webhook(later).status_code == 200
    assert ChatMessage.objects.get(message_sid=later["MessageSid"]).delivery_status == ""
    assert not WaitingReceipt.objects.exists()
