"""get_booking_from_phone compares in E.164, in a window, deterministically."""

import datetime

import pytest
from django.db import connection
from django.utils import timezone

from django_twilio_convlink.booking_lookup import get_booking_from_phone
from django_twilio_convlink.linking import rebuild_booking_phones
from django_twilio_convlink.linking.bookings import booking_fields
from django_twilio_convlink.linking.lookup import ordered_candidates
from django_twilio_convlink.models import BookingPhone
from django_twilio_convlink.phones import normalize_phone
from tests.factories import GuestFactory, ReservationFactory
from tests.testapp.models import Guest, Reservation

pytestmark = pytest.mark.django_db

PHONE = "+15615550123"


@pytest.mark.parametrize("stored", ["(561) 555-0123", "+1 561-555-0123", "5615550123", "561.555.0123",
                                    "+15615550123", "1 (561) 555 0123"])
def test_site_formats_match_e164(stored):
    booking = ReservationFactory(guest=GuestFactory(mobile=stored))
    assert get_booking_from_phone(PHONE) == booking


@pytest.mark.parametrize("asked", ["+15615550123", "whatsapp:+15615550123", "(561) 555-0123", "5615550123"])
def test_any_incoming_format_matches(asked):
    booking = ReservationFactory(guest=GuestFactory(mobile="+1 561 555 0123"))
    assert get_booking_from_phone(asked) == booking


def test_possible_but_invalid_number_is_accepted():
    assert normalize_phone("+15551234567") == "+15551234567"
    booking = ReservationFactory(guest=GuestFactory(mobile="555-123-4567"))
    assert get_booking_from_phone("+15551234567") == booking


@pytest.mark.parametrize("raw", ["", None, "ASSISTANT", "12", "CALL-ME-NOW", "+1 (561)"])
def test_non_numbers_find_nothing(raw):
    ReservationFactory(guest=GuestFactory(mobile="(561) 555-0123"))
    assert get_booking_from_phone(raw) is None


def test_other_customers_booking_is_not_found():
    ReservationFactory(guest=GuestFactory(mobile="(561) 555-0199"))
    assert get_booking_from_phone(PHONE) is None


def stay(guest, start_offset, nights):
    return ReservationFactory(guest=guest, days_from_today=start_offset + 1, nights=nights)


def test_staying_now_beats_upcoming_and_past():
    guest = GuestFactory(mobile=PHONE)
    stay(guest, 3, 2)          # upcoming
    current = stay(guest, -2, 5)
    stay(guest, -20, 3)        # past
    assert get_booking_from_phone(PHONE) == current


def test_soonest_upcoming_beats_past():
    guest = GuestFactory(mobile=PHONE)
    stay(guest, 30, 2)
    soonest = stay(guest, 4, 2)
    stay(guest, -10, 3)
    assert get_booking_from_phone(PHONE) == soonest


def test_most_recent_past_when_nothing_else():
    guest = GuestFactory(mobile=PHONE)
    stay(guest, -60, 3)
    recent = stay(guest, -10, 3)
    assert get_booking_from_phone(PHONE) == recent


def test_ties_go_to_the_newest_booking():
    guest = GuestFactory(mobile=PHONE)
    first = stay(guest, -1, 3)
    second = stay(guest, -1, 3)
    assert second.pk > first.pk
    assert get_booking_from_phone(PHONE) == second


def test_stays_outside_the_window_do_not_qualify():
    guest = GuestFactory(mobile=PHONE)
    stay(guest, -200, 3)
    stay(guest, 120, 3)
    assert get_booking_from_phone(PHONE) is None


def test_window_edges(settings):
    guest = GuestFactory(mobile=PHONE)
    today = timezone.localdate()
    edge = Reservation.objects.create(guest=guest, check_in=today + datetime.timedelta(days=90),
                                      check_out=today + datetime.timedelta(days=95))
    assert get_booking_from_phone(PHONE) == edge
    settings.TWILIO_CONVLINK = {**settings.TWILIO_CONVLINK, "BOOKING_WINDOW_DAYS": 89}
    assert get_booking_from_phone(PHONE) is None


def test_without_date_fields_the_newest_booking_wins(settings):
    settings.TWILIO_CONVLINK = {**settings.TWILIO_CONVLINK, "BOOKING_START_FIELD": None,
                                "BOOKING_END_FIELD": None}
    guest = GuestFactory(mobile=PHONE)
    stay(guest, -2, 5)
    newest = stay(guest, -400, 3)  # far outside any window: dates are not considered
    assert get_booking_from_phone(PHONE) == newest


def test_lookup_is_one_query(django_assert_num_queries):
    guest = GuestFactory(mobile=PHONE)
    stay(guest, -2, 5)
    with django_assert_num_queries(1):
        assert get_booking_from_phone(PHONE) is not None


def test_phone_index_follows_tenant_phone_changes():
    guest = GuestFactory(mobile="(561) 555-0100")
    booking = stay(guest, 0, 2)
    guest.mobile = "(561) 555-0123"
    guest.save()
    assert get_booking_from_phone("+15615550100") is None
    assert get_booking_from_phone(PHONE) == booking


def test_deleted_booking_leaves_the_index():
    booking = stay(GuestFactory(mobile=PHONE), 0, 2)
    booking.delete()
    assert not BookingPhone.objects.exists()


def test_rebuild_indexes_rows_that_bypassed_signals():
    guest = GuestFactory(mobile="(561) 555-0100")
    booking = stay(guest, 0, 2)
    Guest.objects.filter(pk=guest.pk).update(mobile=PHONE)  # no post_save
    assert get_booking_from_phone(PHONE) is None
    assert rebuild_booking_phones() == 1
    assert get_booking_from_phone(PHONE) == booking


def test_lookup_uses_the_phone_index():
    """With many bookings the plan must use the index, not scan (checked on the plan)."""
    guests = Guest.objects.bulk_create(
        Guest(full_name=f"g{i}", mobile=f"+1561555{i:04d}") for i in range(2000))
    today = timezone.localdate()
    Reservation.objects.bulk_create(
        Reservation(guest=g, check_in=today, check_out=today + datetime.timedelta(days=2)) for g in guests)
    rebuild_booking_phones()
    qs = ordered_candidates(booking_fields(), "+15615550042")
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("ANALYZE")
    plan = qs.explain()
    assert "convlink_phone_booking" in plan, plan
    assert qs.first().guest.full_name == "g42"


def test_deleted_tenant_leaves_the_index():
    guest = GuestFactory(mobile=PHONE)
    booking = stay(guest, 0, 2)  # Reservation.guest is SET_NULL: the booking stays
    guest.delete()
    assert Reservation.objects.filter(pk=booking.pk).exists()
    assert get_booking_from_phone(PHONE) is None
