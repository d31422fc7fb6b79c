"""Messages stored once, with their direction, whatever the order."""

import json

import pytest

from tests.helpers import CUSTOMER, payload, sid
from tests.testapp.models import ChatConversation, ChatMessage

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("author", [
    "+13153524379",          # TWILIO_PHONE
    "+15612205252",          # MANAGER_PHONE, configured as "(561) 220-5252"
    "ASSISTANT",             # ASSISTANT_IDENTITY
    "+15550009999",          # SYSTEM_IDENTITIES, configured as "+1 555 000 9999"
    "night-desk",            # SYSTEM_IDENTITIES chat identity
    "system",                # REST message sent without an author
    "whatsapp:+15612205252", # the manager on WhatsApp
])
def test_system_authors_are_outbound(twilio_client, author):
    twilio_client.webhook(payload("onMessageAdded_sms_from_customer", Author=author))
    assert ChatMessage.objects.get().direction == "outbound"


@pytest.mark.parametrize("author", [CUSTOMER, "whatsapp:+14155550142", "guest-identity-7", "(415) 555-0142"])
def test_everyone_else_is_inbound(twilio_client, author):
    twilio_client.webhook(payload("onMessageAdded_sms_from_customer", Author=author))
    assert ChatMessage.objects.get().direction == "inbound"


def test_message_fields_are_stored(twilio_client):
    data = payload("onMessageAdded_mms_with_media", Body="photo attached")
    assert twilio_client.webhook(data).status_code == 200
    message = ChatMessage.objects.get()
    assert message.message_sid == data["MessageSid"]
    assert message.conversation.conversation_sid == data["ConversationSid"]
    assert (message.author, message.body, message.index, message.source) == (
        CUSTOMER, "photo attached", 1, "SMS")
    assert message.participant_sid == data["ParticipantSid"]
    assert message.media[0]["Sid"] == "ME66666666666666666666666666666666"
    assert message.date_created.isoformat().startswith("2026-11-20T13:43:02")
    assert message.attributes == {}


def test_conversation_is_created_with_placeholder_name(twilio_client):
    data = payload("onMessageAdded_sms_from_customer")
    twilio_client.webhook(data)
    conversation = ChatConversation.objects.get()
    assert conversation.friendly_name == f"Conversation {data['ConversationSid']}"
    assert conversation.messages.count() == 1


def test_redelivery_leaves_one_row_and_answers_200(twilio_client):
    data = payload("onMessageAdded_sms_from_customer")
    assert twilio_client.webhook(data).status_code == 200
    assert twilio_client.webhook({**data, "RetryCount": "1", "Body": "changed?"}).status_code == 200
    assert ChatMessage.objects.count() == 1
    assert ChatMessage.objects.get().body == data["Body"]
    assert ChatConversation.objects.count() == 1


def test_sid_hex_case_does_not_make_another_message(twilio_client):
    # The same 128-bit SID in upper- and lowercase hex is one message on every database
    # (MariaDB's collation would compare them equal, PostgreSQL's would not).
    data = payload("onMessageAdded_sms_from_customer")
    upper = {**data, "MessageSid": "IM" + data["MessageSid"][2:].upper(),
             "ConversationSid": "CH" + data["ConversationSid"][2:].upper()}
    assert twilio_client.webhook(upper).status_code == 200
    assert twilio_client.webhook(data).status_code == 200
    message = ChatMessage.objects.get()
    assert (message.message_sid, message.conversation.conversation_sid) == (
        data["MessageSid"], data["ConversationSid"])


def test_many_messages_one_conversation(twilio_client):
    for index in range(3):
        twilio_client.webhook(payload("onMessageAdded_sms_from_customer", Index=str(index)))
    assert ChatConversation.objects.count() == 1
    assert ChatMessage.objects.count() == 3


def test_conversation_added_after_message_completes_the_row(twilio_client):
    message = payload("onMessageAdded_sms_from_customer")
    twilio_client.webhook(message)
    added = payload("onConversationAdded_sms_autocreated", FriendlyName="Heater in 4B",
                    UniqueName="tenant-4b")
    assert twilio_client.webhook(added).status_code == 200
    conversation = ChatConversation.objects.get()
    assert conversation.friendly_name == "Heater in 4B"
    assert conversation.unique_name == "tenant-4b"
    assert conversation.state == "active"
    assert conversation.chat_service_sid == "IS88888888888888888888888888888888"
    assert conversation.messages.count() == 1


def test_conversation_added_first_then_message(twilio_client):
    twilio_client.webhook(payload("onConversationAdded_sms_autocreated", FriendlyName="Heater"))
    twilio_client.webhook(payload("onMessageAdded_sms_from_customer"))
    conversation = ChatConversation.objects.get()
    assert conversation.friendly_name == "Heater"
    assert conversation.messages.count() == 1


def test_conversation_added_twice_is_one_row(twilio_client):
    data = payload("onConversationAdded_sms_autocreated")
    twilio_client.webhook(data)
    twilio_client.webhook(data)
    assert ChatConversation.objects.count() == 1


def test_state_updated(twilio_client):
    twilio_client.webhook(payload("onConversationAdded_sms_autocreated"))
    data = payload("onConversationStateUpdated", StateFrom="active", StateTo="closed")
    assert twilio_client.webhook(data).status_code == 200
    assert ChatConversation.objects.get().state == "closed"


def test_message_updated_changes_body(twilio_client):
    added = payload("onMessageAdded_from_assistant_via_api")
    twilio_client.webhook(added)
    updated = payload("onMessageUpdated", MessageSid=added["MessageSid"], Body="Within the hour.")
    assert twilio_client.webhook(updated).status_code == 200
    message = ChatMessage.objects.get()
    assert message.body == "Within the hour."
    assert message.date_updated is not None


def test_message_updated_before_added_creates_it(twilio_client):
    updated = payload("onMessageUpdated")
    twilio_client.webhook(updated)
    twilio_client.webhook(payload("onMessageAdded_from_assistant_via_api", MessageSid=updated["MessageSid"]))
    message = ChatMessage.objects.get()
    assert message.body == updated["Body"]
    assert message.direction == "outbound"


def test_message_removed_is_marked_and_kept(twilio_client):
    added = payload("onMessageAdded_sms_from_customer")
    twilio_client.webhook(added)
    removed = payload("onMessageRemoved", MessageSid=added["MessageSid"],
                      ConversationSid=added["ConversationSid"])
    assert twilio_client.webhook(removed).status_code == 200
    message = ChatMessage.objects.get()
    assert message.is_removed
    assert message.body == added["Body"]


@pytest.mark.parametrize("name", ["onParticipantAdded_sms", "onDeliveryUpdated"])
def test_acknowledged_events(twilio_client, name):
    assert twilio_client.webhook(payload(name)).status_code == 200
    assert not ChatMessage.objects.exists()


def test_unknown_event_type_is_acknowledged(twilio_client):
    data = {"AccountSid": "AC0123456789abcdef0123456789abcdef", "EventType": "onSomethingNew",
            "ConversationSid": sid("CH"), "Whatever": "x"}
    assert twilio_client.webhook(data).status_code == 200


def test_unknown_fields_are_accepted(twilio_client):
    data = payload("onMessageAdded_sms_from_customer", WebhookSid="WH" + "0" * 32, WebhookType="webhook")
    assert twilio_client.webhook(data).status_code == 200


def test_timestamp_without_offset_is_read_as_utc(twilio_client):
    twilio_client.webhook(payload("onMessageAdded_sms_from_customer", DateCreated="2026-11-20T13:42:17"))
    stored = ChatMessage.objects.get().date_created
    assert stored.utcoffset().total_seconds() == 0
    assert stored.hour == 13


def test_late_conversation_added_does_not_undo_a_newer_state(twilio_client):
    twilio_client.webhook(payload("onConversationStateUpdated", StateFrom="active", StateTo="closed"))
    twilio_client.webhook(payload("onConversationAdded_sms_autocreated", State="active"))
    assert ChatConversation.objects.get().state == "closed"


def test_conversation_updated_renames(twilio_client):
    twilio_client.webhook(payload("onConversationAdded_sms_autocreated", FriendlyName="Old name"))
    updated = payload("onConversationAdded_sms_autocreated", EventType="onConversationUpdated",
                      FriendlyName="Unit 4B heater")
    assert twilio_client.webhook(updated).status_code == 200
    assert ChatConversation.objects.get().friendly_name == "Unit 4B heater"


def test_older_update_arriving_late_is_ignored(twilio_client):
    added = payload("onMessageAdded_from_assistant_via_api")
    twilio_client.webhook(added)
    newer = payload("onMessageUpdated", MessageSid=added["MessageSid"], Body="v2",
                    DateUpdated="2026-11-20T13:46:00.000Z")
    older = payload("onMessageUpdated", MessageSid=added["MessageSid"], Body="v1",
                    DateUpdated="2026-11-20T13:45:00.000Z")
    twilio_client.webhook(newer)
    assert twilio_client.webhook(older).status_code == 200
    assert ChatMessage.objects.get().body == "v2"


def test_friendly_name_of_256_characters_is_accepted(twilio_client):
    data = payload("onConversationAdded_sms_autocreated", FriendlyName="n" * 256)
    assert twilio_client.webhook(data).status_code == 200
    assert len(ChatConversation.objects.get().friendly_name) == 256


def test_older_state_update_arriving_late_does_not_undo_a_newer_one(twilio_client):
    twilio_client.webhook(payload("onConversationAdded_sms_autocreated"))
    closed = payload("onConversationStateUpdated", StateFrom="inactive", StateTo="closed",
                     StateUpdated="2026-11-20T20:00:00Z")
    inactive = payload("onConversationStateUpdated", StateFrom="active", StateTo="inactive",
                       StateUpdated="2026-11-20T19:00:00Z", RetryCount="1")
    assert twilio_client.webhook(closed).status_code == 200
    assert twilio_client.webhook(inactive).status_code == 200
    conversation = ChatConversation.objects.get()
    assert conversation.state == "closed"
    assert conversation.date_updated.isoformat() == "2026-11-20T20:00:00+00:00"


def test_older_conversation_update_arriving_late_is_ignored(twilio_client):
    def updated(name, when):
        return payload("onConversationAdded_sms_autocreated", EventType="onConversationUpdated",
                       FriendlyName=name, DateUpdated=when)

    twilio_client.webhook(updated("Unit 4B heater", "2026-11-20T20:00:00Z"))
    twilio_client.webhook(updated("Old name", "2026-11-20T19:00:00Z"))
    assert ChatConversation.objects.get().friendly_name == "Unit 4B heater"
    # A state change after it still applies; one at the same moment too.
    twilio_client.webhook(payload("onConversationStateUpdated", StateFrom="active", StateTo="inactive",
                                  StateUpdated="2026-11-20T20:00:00Z"))
    assert ChatConversation.objects.get().state == "inactive"
    twilio_client.webhook(updated("Renamed", "2026-11-20T21:00:00Z"))
    assert ChatConversation.objects.get().friendly_name == "Renamed"


@pytest.mark.parametrize("date_removed, date_updated, expected", [
    ("2026-11-20T13:50:00Z", "2026-11-20T13:49:00Z", "2026-11-20T13:50:00+00:00"),
    ("", "2026-11-20T13:49:00Z", "2026-11-20T13:49:00+00:00"),
    ("", "", None),
])
def test_a_removal_that_overtakes_its_message_is_stored_removed_and_never_forwarded(
        twilio_client, api_outbox, date_removed, date_updated, expected):
    removed = payload("onMessageRemoved", Author=CUSTOMER, DateRemoved=date_removed, DateUpdated=date_updated)
    assert twilio_client.webhook(removed).status_code == 200
    added = payload("onMessageAdded_sms_from_customer", MessageSid=removed["MessageSid"],
                    ConversationSid=removed["ConversationSid"], Author=CUSTOMER)
    assert twilio_client.webhook(added).status_code == 200
    message = ChatMessage.objects.get()
    assert message.is_removed and message.forward_state == ""
    if expected:
        assert message.date_removed.isoformat() == expected
    assert not [call for call in api_outbox if call.method == "send_message"]
    assert not ChatConversation.objects.filter(is_group_chat=True).exists()


@pytest.mark.django_db(transaction=True)  # the group chat cancels after the removal commits
def test_a_removal_before_the_forward_ran_cancels_it(twilio_client, api_outbox, settings):
    settings.TWILIO_CONVLINK = {**settings.TWILIO_CONVLINK, "TASK_BACKEND": "dummy"}  # the task waits
    added = payload("onMessageAdded_sms_from_customer", Author=CUSTOMER)
    twilio_client.webhook(added)
    assert ChatMessage.objects.get().forward_state == "pending"
    twilio_client.webhook(payload("onMessageRemoved", MessageSid=added["MessageSid"],
                                  ConversationSid=added["ConversationSid"]))
    message = ChatMessage.objects.get()
    assert message.is_removed and (message.forward_state, message.forward_retry_at) == ("", None)
    from django_twilio_convlink.group_chat import forward_customer_message

    assert forward_customer_message(message.pk) == ""  # the late task finds nothing to do
    assert not [call for call in api_outbox if call.method == "send_message"]


@pytest.mark.parametrize("field", ["StateTo", "State"])
def test_an_unknown_state_is_logged_and_the_known_one_kept(twilio_client, caplog, field):
    twilio_client.webhook(payload("onConversationAdded_sms_autocreated", State="active"))
    data = payload("onConversationStateUpdated", StateTo="archived-ish", StateUpdated="2026-11-20T20:00:00Z")
    if field == "State":
        data = payload("onConversationAdded_sms_autocreated", EventType="onConversationUpdated",
                       State="archived-ish", FriendlyName="Renamed", DateUpdated="2026-11-20T20:00:00Z")
    assert twilio_client.webhook(data).status_code == 200
    conversation = ChatConversation.objects.get()
    assert conversation.state == "active"
    assert "unknown conversation state 'archived-ish'" in caplog.text
    if field == "State":
        assert conversation.friendly_name == "Renamed"  # the rest of the event applies


def test_a_removed_message_is_never_forwarded_even_if_the_cancel_was_lost(
        twilio_client, api_outbox, settings):
    # The removal committed, and the process died before its after-commit cancel ran.
    settings.TWILIO_CONVLINK = {**settings.TWILIO_CONVLINK, "TASK_BACKEND": "dummy"}
    twilio_client.webhook(payload("onMessageAdded_sms_from_customer", Author=CUSTOMER))
    message = ChatMessage.objects.get()
    ChatMessage.objects.filter(pk=message.pk).update(date_removed="2026-11-20T14:00:00Z")
    from django_twilio_convlink.group_chat import forward_customer_message

    assert forward_customer_message(message.pk) == ""
    message.refresh_from_db()
    assert (message.forward_state, message.forward_retry_at) == ("", None)
    assert not [call for call in api_outbox if call.method == "send_message"]


def test_media_is_stored_as_twilio_sends_it_with_canonical_sids(twilio_client):
    media = [
        {"Sid": "ME" + "AB" * 16, "ContentType": "image/jpeg", "Filename": "heater.jpg", "Size": 482113},
        # Filename null and keys Twilio may add are kept as sent.
        {"Sid": "ME" + "c" * 32, "ContentType": "video/mp4", "Filename": None, "Size": 0,
         "Category": "media"},
        {"Sid": "ME" + "d" * 32},
    ]
    data = payload("onMessageAdded_mms_with_media", Media=json.dumps(media))
    assert twilio_client.webhook(data).status_code == 200
    assert ChatMessage.objects.get().media == [{**media[0], "Sid": "ME" + "ab" * 16}, media[1], media[2]]


def test_fifty_media_files_are_accepted(twilio_client):
    media = [{"Sid": sid("ME"), "ContentType": "image/png"} for _ in range(50)]
    data = payload("onMessageAdded_mms_with_media", Media=json.dumps(media))
    assert twilio_client.webhook(data).status_code == 200
    assert len(ChatMessage.objects.get().media) == 50
