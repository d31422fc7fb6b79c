"""A booking saved later links its customer's unlinked conversations."""

import logging

import pytest

from tests.factories import ConversationFactory, GuestFactory, PropertyFactory, ReservationFactory
from tests.helpers import CUSTOMER
from tests.testapp.models import ChatConversation, Guest, Reservation

pytestmark = pytest.mark.django_db


def unlinked(n=1, phone=CUSTOMER):
    return ConversationFactory.create_batch(n, customer_phone=phone)


def test_booking_saved_later_links_booking_and_apartment(django_capture_on_commit_callbacks):
    conversations = unlinked(2)
    with django_capture_on_commit_callbacks(execute=True):
        booking = ReservationFactory(guest=GuestFactory(mobile="(415) 555-0142"))
    for conversation in conversations:
        conversation.refresh_from_db()
        assert (conversation.booking, conversation.apartment) == (booking, booking.unit)
        assert conversation.link_method == "retroactive"
        assert conversation.linked_at is not None


def test_linking_waits_for_the_commit(django_capture_on_commit_callbacks):
    [conversation] = unlinked()
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        ReservationFactory(guest=GuestFactory(mobile=CUSTOMER))
    conversation.refresh_from_db()
    assert conversation.booking is None
    assert len(callbacks) >= 1
    for callback in callbacks:
        callback()
    conversation.refresh_from_db()
    assert conversation.booking is not None


def test_other_customers_conversations_are_untouched(django_capture_on_commit_callbacks):
    [other] = unlinked(phone="+14155550199")
    with django_capture_on_commit_callbacks(execute=True):
        ReservationFactory(guest=GuestFactory(mobile=CUSTOMER))
    other.refresh_from_db()
    assert other.booking is None


def test_manual_links_are_never_overwritten(django_capture_on_commit_callbacks):
    mine = ReservationFactory(guest=GuestFactory(mobile="+14155550100"))
    manual = ConversationFactory(customer_phone=CUSTOMER, booking=mine, link_method="manual")
    cleared = ConversationFactory(customer_phone=CUSTOMER, booking=None, link_method="manual")
    with django_capture_on_commit_callbacks(execute=True):
        ReservationFactory(guest=GuestFactory(mobile=CUSTOMER))
    manual.refresh_from_db()
    cleared.refresh_from_db()
    assert (manual.booking, manual.link_method) == (mine, "manual")
    assert (cleared.booking, cleared.link_method) == (None, "manual")


def test_already_linked_conversations_keep_their_booking(django_capture_on_commit_callbacks):
    first = ReservationFactory(guest=GuestFactory(mobile=CUSTOMER))
    linked = ConversationFactory(customer_phone=CUSTOMER, booking=first, link_method="automatic")
    with django_capture_on_commit_callbacks(execute=True):
        ReservationFactory(guest=first.guest, days_from_today=3)
    linked.refresh_from_db()
    assert linked.booking == first


def test_booking_outside_the_window_links_nothing(django_capture_on_commit_callbacks):
    [conversation] = unlinked()
    with django_capture_on_commit_callbacks(execute=True):
        ReservationFactory(guest=GuestFactory(mobile=CUSTOMER), days_from_today=-300)
    conversation.refresh_from_db()
    assert conversation.booking is None


def test_tenant_phone_change_links(django_capture_on_commit_callbacks):
    guest = GuestFactory(mobile="+14155550100")
    booking = ReservationFactory(guest=guest)
    [conversation] = unlinked()
    with django_capture_on_commit_callbacks(execute=True):
        guest.mobile = "(415) 555-0142"
        guest.save()
    conversation.refresh_from_db()
    assert (conversation.booking, conversation.apartment) == (booking, booking.unit)
    assert conversation.link_method == "retroactive"


def test_booking_edit_links_too(django_capture_on_commit_callbacks):
    booking = ReservationFactory(guest=GuestFactory(mobile="+14155550100"))
    [conversation] = unlinked()
    with django_capture_on_commit_callbacks(execute=True):
        booking.guest = GuestFactory(mobile=CUSTOMER)
        booking.unit = PropertyFactory()
        booking.save()
    conversation.refresh_from_db()
    assert (conversation.booking, conversation.apartment) == (booking, booking.unit)


def count_relink_queries(n, django_capture_on_commit_callbacks, captured_sql) -> int:
    unlinked(n)
    guest = Guest.objects.create(full_name="x", mobile=CUSTOMER)
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        Reservation.objects.create(guest=guest, unit=PropertyFactory(),
                                   check_in=ReservationFactory.build().check_in,
                                   check_out=ReservationFactory.build().check_out)
    with captured_sql() as capture:
        for callback in callbacks:
            callback()
    assert ChatConversation.objects.filter(booking__isnull=False).count() == n
    ChatConversation.objects.all().delete()
    return len(capture.sql)


def test_relink_is_a_constant_number_of_queries(django_capture_on_commit_callbacks, captured_sql):
    few = count_relink_queries(3, django_capture_on_commit_callbacks, captured_sql)
    many = count_relink_queries(300, django_capture_on_commit_callbacks, captured_sql)
    assert few == many == 2


def test_failing_link_never_fails_the_booking_save(settings, django_capture_on_commit_callbacks, caplog):
    unlinked()
    guest = GuestFactory(mobile=CUSTOMER)
    # A setting broken after start-up (a typo deployed) makes linking raise.
    settings.TWILIO_CONVLINK = {**settings.TWILIO_CONVLINK, "BOOKING_PHONE_FIELD": "guest__no_such_field"}
    with caplog.at_level(logging.ERROR, logger="django_twilio_convlink"):
        with django_capture_on_commit_callbacks(execute=True):
            booking = ReservationFactory(guest=guest)
    assert Reservation.objects.filter(pk=booking.pk).exists()
    assert "failed" in caplog.text
