"""update_conversation_links in batches of phones: the statements do not grow with
the number of phones, and every conversation gets the booking the one-phone lookup
(find_booking, the rule of test_booking_lookup) gives it."""

import io

import pytest
from django.core.management import call_command
from django.db import connection

from django_twilio_convlink.linking import batch as batch_module
from django_twilio_convlink.linking import update_conversation_links
from django_twilio_convlink.linking.bookings import booking_fields
from django_twilio_convlink.linking.lookup import best_bookings, find_booking
from tests.factories import ConversationFactory, GuestFactory, ReservationFactory
from tests.testapp.models import ChatConversation

pytestmark = pytest.mark.django_db


def phone(i: int) -> str:
    return f"+1561555{i:04d}"


def stay(guest, start_offset: int, nights: int, **kwargs):
    return ReservationFactory(guest=guest, days_from_today=start_offset + 1, nights=nights, **kwargs)


# Stays (start offset from today, nights) of one phone, per case of the choice rule.
CASES = [
    [(3, 2), (-2, 5), (-20, 3)],   # staying now beats upcoming and past
    [(30, 2), (4, 2), (-10, 3)],   # soonest upcoming beats past
    [(-60, 3), (-10, 3)],          # most recent past
    [(-1, 3), (-1, 3)],            # two stays at once: the newest booking
    [(-200, 3), (120, 3)],         # only outside the window: nothing
    [],                            # no booking at all
]


def populate(phones: int) -> list[str]:
    """Per phone one of CASES, three unlinked conversations, and one a manager
    unlinked by hand (automation leaves it alone). Returns the phones."""
    numbers = [phone(i) for i in range(phones)]
    for i, number in enumerate(numbers):
        guest = GuestFactory(mobile=number)
        for start_offset, nights in CASES[i % len(CASES)]:
            stay(guest, start_offset, nights)
        ConversationFactory.create_batch(3, customer_phone=number)
        ConversationFactory(customer_phone=number, link_method="manual")
    return numbers


def expected_links(numbers: list[str]) -> dict[int, tuple]:
    """What the per-phone algorithm gives every conversation: find_booking for the
    unlinked ones, the manual ones as they are."""
    expected = {}
    for number in numbers:
        booking = find_booking(number)
        for conversation in ChatConversation.objects.filter(customer_phone=number):
            if conversation.link_method == "manual" or booking is None:
                expected[conversation.pk] = (conversation.booking_id, conversation.apartment_id,
                                             conversation.link_method)
            else:
                expected[conversation.pk] = (booking.pk, booking.unit_id, "retroactive")
    return expected


def actual_links() -> dict[int, tuple]:
    return {pk: (booking, apartment, method) for pk, booking, apartment, method in
            ChatConversation.objects.values_list("pk", "booking_id", "apartment_id", "link_method")}


@pytest.mark.parametrize("batch", [None, 1, 4])
def test_links_are_those_of_the_one_phone_lookup(monkeypatch, batch):
    if batch is not None:
        monkeypatch.setattr(batch_module, "PHONE_BATCH", batch)
    numbers = populate(14)
    expected = expected_links(numbers)
    report = update_conversation_links()
    assert actual_links() == expected
    linked = sum(1 for _, _, method in expected.values() if method == "retroactive")
    assert (report.examined, report.linked) == (14 * 3, linked)
    assert sum(len(link.conversation_sids) for link in report.links) == linked


def test_best_bookings_is_find_booking_for_each_phone():
    numbers = populate(12)
    best = best_bookings([*numbers, "+15615559999"])
    for number in numbers:
        booking = find_booking(number)
        assert best.get(number) == (None if booking is None else (booking.pk, booking.unit_id))


def test_best_bookings_without_date_fields(settings):
    settings.TWILIO_CONVLINK = {**settings.TWILIO_CONVLINK, "BOOKING_START_FIELD": None,
                                "BOOKING_END_FIELD": None}
    guest = GuestFactory(mobile=phone(1))
    stay(guest, -2, 5)
    newest = stay(guest, -400, 3)  # far outside any window: dates are not considered
    assert best_bookings([phone(1)], booking_fields()) == {phone(1): (newest.pk, newest.unit_id)}


@pytest.mark.parametrize("list_conversations", [True, False])
def test_statements_do_not_grow_with_the_phones(captured_sql, list_conversations):
    counts = []
    for phones in (2, 40):
        ChatConversation.objects.all().delete()
        numbers = populate(phones)
        with captured_sql() as capture:
            update_conversation_links(list_conversations=list_conversations)
        counts.append(len(capture.sql))
        assert ChatConversation.objects.filter(link_method="retroactive").count() == sum(
            3 for number in numbers if find_booking(number) is not None)
    # The distinct phones; their index rows; their candidate bookings; one UPDATE.
    assert counts == [4, 4]


def test_statements_grow_with_batches_not_phones(monkeypatch, captured_sql):
    monkeypatch.setattr(batch_module, "PHONE_BATCH", 10)
    populate(25)
    with captured_sql() as capture:
        update_conversation_links()
    assert len(capture.sql) == 1 + 3 * 3


def test_batch_whose_bookings_have_no_apartment():
    # Every key in the apartment CASE is NULL: it must still be typed as the column.
    numbers = [phone(1), phone(2)]
    bookings = [stay(GuestFactory(mobile=number), -1, 3, unit=None) for number in numbers]
    conversations = [ConversationFactory(customer_phone=number) for number in numbers]
    assert update_conversation_links().linked == 2
    for conversation, booking in zip(conversations, bookings, strict=True):
        conversation.refresh_from_db()
        assert (conversation.booking, conversation.apartment) == (booking, None)


def test_counts_only_report_keeps_no_sids():
    numbers = populate(6)
    expected = expected_links(numbers)
    report = update_conversation_links(dry_run=True, list_conversations=False)
    linked = sum(1 for _, _, method in expected.values() if method == "retroactive")
    assert (report.examined, report.linked, report.links) == (18, linked, [])
    assert not ChatConversation.objects.filter(link_method="retroactive").exists()


def test_already_linked_conversations_are_not_examined():
    number = phone(1)
    first = stay(GuestFactory(mobile=number), -1, 3)
    linked = ConversationFactory(customer_phone=number, booking=first, link_method="automatic")
    stay(first.guest, -1, 3)  # a newer stay: would win, but the link stands
    report = update_conversation_links()
    linked.refresh_from_db()
    assert (report.examined, linked.booking) == (0, first)


@pytest.mark.skipif(connection.vendor != "sqlite", reason="SQLite's planner, without statistics")
def test_batch_update_finds_rows_through_the_phone_index(captured_sql):
    """Written "booking_id IS NULL", the unlinked filter makes SQLite walk every unlinked
    conversation through the booking index in each batch's UPDATE (quadratic)."""
    populate(6)
    with captured_sql() as capture:
        update_conversation_links()
    [update] = [sql for sql in capture.sql if sql.startswith("UPDATE")]
    with connection.cursor() as cursor:
        cursor.execute(f"EXPLAIN QUERY PLAN {update}")
        plan = " ".join(str(row) for row in cursor.fetchall())
    assert "customer_phone" in plan and "booking_id" not in plan, plan


def test_empty_selection_links_nothing():
    populate(2)
    report = update_conversation_links(conversations=ChatConversation.objects.filter(pk__in=[]))
    assert (report.examined, report.linked) == (0, 0)


@pytest.mark.parametrize(("args", "listed"), [((), False), (("-v", "2"), True), (("--dry-run",), True)])
def test_command_lists_conversations_only_to_print_them(monkeypatch, args, listed):
    from django_twilio_convlink.management.commands import update_conversation_links as command

    seen = {}

    def spy(**kwargs):
        seen.update(kwargs)
        return update_conversation_links(**kwargs)

    monkeypatch.setattr(command, "update_conversation_links", spy)
    call_command("update_conversation_links", *args, stdout=io.StringIO())
    assert seen["list_conversations"] is listed
