"""A conversation is looked up for a booking once, when the phone is
first learned, whichever event brings it; system messages never query bookings."""

import pytest

from tests.factories import GuestFactory, ReservationFactory
from tests.helpers import CUSTOMER, payload, sid
from tests.testapp.models import ChatConversation

pytestmark = pytest.mark.django_db

BOOKING_TABLES = ("testapp_reservation", "twilio_convlink_bookingphone")


def booking_queries(sql: list[str]) -> list[str]:
    return [q for q in sql if any(table in q for table in BOOKING_TABLES)]


@pytest.fixture
def stay():
    """The customer of the sample payloads, staying now; phone stored formatted."""
    return ReservationFactory(guest=GuestFactory(mobile="(415) 555-0142"))


def test_first_customer_message_links_booking_and_apartment(twilio_client, stay):
    twilio_client.webhook(payload("onMessageAdded_sms_from_customer"))
    conversation = ChatConversation.objects.get()
    assert conversation.customer_phone == CUSTOMER
    assert conversation.booking == stay
    assert conversation.apartment == stay.unit
    assert conversation.link_method == "automatic"
    assert conversation.linked_at is not None


def test_whatsapp_customer_is_linked(twilio_client, stay):
    twilio_client.webhook(payload("onMessageAdded_whatsapp"))
    assert ChatConversation.objects.get().booking == stay


@pytest.mark.parametrize("author", ["+13153524379", "+15612205252", "ASSISTANT", "night-desk", "system"])
def test_system_author_runs_no_booking_query(twilio_client, captured_sql, stay, author):
    with captured_sql() as capture:
        twilio_client.webhook(payload("onMessageAdded_sms_from_customer", Author=author))
    assert capture.sql, "the webhook should have written something"
    assert booking_queries(capture.sql) == []
    conversation = ChatConversation.objects.get()
    assert conversation.booking is None
    assert conversation.booking_lookup_at is None  # a later customer message still links


def test_customer_after_system_message_links(twilio_client, stay):
    conversation_sid = sid("CH")
    twilio_client.webhook(payload("onMessageAdded_from_assistant_via_api", ConversationSid=conversation_sid))
    twilio_client.webhook(payload("onMessageAdded_sms_from_customer", ConversationSid=conversation_sid))
    assert ChatConversation.objects.get().booking == stay


def test_later_messages_run_no_booking_query(twilio_client, captured_sql, stay):
    twilio_client.webhook(payload("onMessageAdded_sms_from_customer", Index="0"))
    with captured_sql() as capture:
        twilio_client.webhook(payload("onMessageAdded_sms_from_customer", Index="1"))
    assert booking_queries(capture.sql) == []


def test_lookup_that_found_nothing_is_not_repeated(twilio_client, captured_sql):
    twilio_client.webhook(payload("onMessageAdded_sms_from_customer", Index="0"))
    assert ChatConversation.objects.get().booking_lookup_at is not None
    with captured_sql() as capture:
        twilio_client.webhook(payload("onMessageAdded_sms_from_customer", Index="1"))
    assert booking_queries(capture.sql) == []


def test_conversation_added_binding_address_links(twilio_client, stay):
    twilio_client.webhook(payload("onConversationAdded_sms_autocreated"))
    conversation = ChatConversation.objects.get()
    assert conversation.customer_phone == CUSTOMER
    assert conversation.booking == stay


@pytest.mark.parametrize("order", ["conversation_first", "message_first"])
def test_link_does_not_depend_on_event_order(twilio_client, captured_sql, stay, order):
    events = [payload("onConversationAdded_sms_autocreated"), payload("onMessageAdded_sms_from_customer")]
    if order == "message_first":
        events.reverse()
    twilio_client.webhook(events[0])
    with captured_sql() as capture:
        twilio_client.webhook(events[1])
    assert booking_queries(capture.sql) == []  # the first event did the one lookup
    conversation = ChatConversation.objects.get()
    assert (conversation.booking, conversation.apartment) == (stay, stay.unit)


def test_group_mms_binding_picks_the_one_customer(twilio_client, stay):
    twilio_client.webhook(payload("onConversationAdded_group_mms_autocreated"))
    assert ChatConversation.objects.get().booking == stay


def test_group_mms_with_two_customers_learns_no_phone(twilio_client, stay):
    twilio_client.webhook(payload("onConversationAdded_group_mms_autocreated",
                                  **{"MessagingBinding.Address": "+14155550142,+14155550199"}))
    conversation = ChatConversation.objects.get()
    assert conversation.customer_phone == ""
    assert conversation.booking is None


def test_manual_link_is_kept_when_customer_writes(twilio_client, stay):
    other = ReservationFactory()
    conversation_sid = sid("CH")
    ChatConversation.objects.create(conversation_sid=conversation_sid, booking=other,
                                    apartment=other.unit, link_method="manual")
    twilio_client.webhook(payload("onMessageAdded_sms_from_customer", ConversationSid=conversation_sid))
    conversation = ChatConversation.objects.get()
    assert (conversation.booking, conversation.link_method) == (other, "manual")
    assert conversation.customer_phone == CUSTOMER


def test_booking_committed_during_the_first_message_is_linked_after_commit(
        twilio_client, django_capture_on_commit_callbacks):
    """The webhook's lookup cannot see a booking whose transaction commits while the
    webhook's is open, and that booking's relink cannot see the webhook's uncommitted
    conversation. The lookup that found nothing is repeated after the commit."""
    from django_twilio_convlink.linking import index_booking_phone
    from tests.testapp.models import Reservation

    with django_capture_on_commit_callbacks(execute=False) as after_webhook:
        twilio_client.webhook(payload("onMessageAdded_sms_from_customer"))
    assert ChatConversation.objects.get().booking is None
    # The booking as the other transaction left it: row and index committed, its own
    # relink already run (and found no conversation to link).
    template = ReservationFactory.build(guest=GuestFactory(mobile="(415) 555-0142"))
    template.unit.save()
    [booking] = Reservation.objects.bulk_create([template])
    index_booking_phone(booking.pk)
    for callback in after_webhook:
        callback()
    assert ChatConversation.objects.get(is_group_chat=False).booking == booking


def test_manual_link_made_before_the_phone_was_known_still_records_it(twilio_client, stay):
    conversation_sid = sid("CH")
    ChatConversation.objects.create(conversation_sid=conversation_sid, booking=stay, link_method="manual")
    twilio_client.webhook(payload("onMessageAdded_sms_from_customer", ConversationSid=conversation_sid))
    conversation = ChatConversation.objects.get()
    assert (conversation.customer_phone, conversation.link_method) == (CUSTOMER, "manual")


def test_manual_link_saved_after_the_webhook_read_the_conversation_is_kept(stay):
    # A message event reads its conversation without a lock; an admin's manual link
    # saved between that read and the lookup's UPDATE must survive it.
    from django_twilio_convlink.linking import link_on_first_phone
    from tests.factories import ConversationFactory

    conversation = ConversationFactory()
    read_by_the_webhook = ChatConversation.objects.get(pk=conversation.pk)
    other = ReservationFactory()
    ChatConversation.objects.filter(pk=conversation.pk).update(
        booking=other, apartment=other.unit, link_method="manual")

    assert link_on_first_phone(read_by_the_webhook, CUSTOMER) is False
    conversation.refresh_from_db()
    assert (conversation.booking, conversation.link_method) == (other, "manual")
    assert conversation.customer_phone == CUSTOMER and conversation.booking_lookup_at is not None
