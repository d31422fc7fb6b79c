"""Bookings that reached the database without post_save (``bulk_create``, ``loaddata``,
raw SQL, ``QuerySet.update()``) and the phone index: the manual linking command, the
admin's relink action and the status report must not trust a stale index."""

import datetime
import io
import json

import pytest
from django.core.management import call_command
from django.db import connection
from django.db.models import F
from django.urls import reverse
from django.utils import timezone

from django_twilio_convlink.linking import phone_index
from django_twilio_convlink.models import BookingPhone
from tests.factories import ConversationFactory, GuestFactory, PropertyFactory, ReservationFactory
from tests.testapp.models import ChatConversation, Guest, Reservation

pytestmark = pytest.mark.django_db

CHANGELIST = "admin:testapp_chatconversation_changelist"


def run(*args: str) -> str:
    out = io.StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


def phone(i: int) -> str:
    return f"+1415555{i:04d}"


def stay_dates() -> tuple[datetime.date, datetime.date]:
    today = timezone.localdate()
    return today - datetime.timedelta(days=1), today + datetime.timedelta(days=3)


def bulk_create_bookings(guests: list[Guest]) -> list[Reservation]:
    """Stays around today, one per guest, saved as an import would: no post_save."""
    check_in, check_out = stay_dates()
    unit = PropertyFactory()
    return Reservation.objects.bulk_create(
        Reservation(guest=guest, unit=unit, check_in=check_in, check_out=check_out) for guest in guests)


def loaddata_bookings(guests: list[Guest], tmp_path) -> list[Reservation]:
    check_in, check_out = stay_dates()
    fixture = tmp_path / "bookings.json"
    fixture.write_text(json.dumps([
        {"model": "testapp.reservation", "pk": 9000 + i,
         "fields": {"guest": guest.pk, "unit": None, "check_in": str(check_in), "check_out": str(check_out)}}
        for i, guest in enumerate(guests)
    ]))
    call_command("loaddata", str(fixture), verbosity=0)
    return list(Reservation.objects.filter(pk__gte=9000).order_by("pk"))


def raw_sql_bookings(guests: list[Guest], tmp_path) -> list[Reservation]:
    check_in, check_out = stay_dates()
    quote = connection.ops.quote_name
    with connection.cursor() as cursor:
        for guest in guests:
            cursor.execute(
                f"INSERT INTO {quote(Reservation._meta.db_table)} "
                f"({quote('guest_id')}, {quote('check_in')}, {quote('check_out')}) VALUES (%s, %s, %s)",
                [guest.pk, check_in, check_out])
    return list(Reservation.objects.filter(guest__in=guests).order_by("pk"))


IMPORTS = {
    "bulk_create": lambda guests, tmp_path: bulk_create_bookings(guests),
    "loaddata": loaddata_bookings,
    "raw SQL": raw_sql_bookings,
}


def customers(n: int, start: int = 0) -> list[Guest]:
    # Saved one by one (post_save runs), but before their bookings exist: their phone
    # index receivers have nothing to index yet.
    return [GuestFactory(mobile=f"(415) 555-{start + i:04d}") for i in range(n)]


# --- 1. update_conversation_links indexes the bookings missing from the index ---------

@pytest.mark.parametrize("how", IMPORTS)
def test_command_finds_bookings_that_bypassed_post_save(how, tmp_path):
    bookings = IMPORTS[how](customers(2), tmp_path)
    conversations = [ConversationFactory(customer_phone=phone(i)) for i in range(2)]
    assert not BookingPhone.objects.exists()

    out = run("update_conversation_links")

    assert "Indexed 2 booking(s) missing from the phone index." in out
    assert "linked 2 of 2 unlinked conversation(s) to bookings; 0 without a matching booking." in out
    for conversation, booking in zip(conversations, bookings, strict=True):
        conversation.refresh_from_db()
        assert (conversation.booking_id, conversation.link_method) == (booking.pk, "retroactive")
    assert dict(BookingPhone.objects.values_list("booking_key", "phone")) == {
        str(booking.pk): phone(i) for i, booking in enumerate(bookings)}


def test_command_says_it_indexed_nothing_when_nothing_was_missing():
    ReservationFactory(guest=GuestFactory(mobile=phone(1)))
    ConversationFactory(customer_phone=phone(1))
    out = run("update_conversation_links")
    assert "Indexed 0 booking(s) missing from the phone index." in out
    assert "linked 1 of 1" in out


def test_bookings_without_a_phone_are_not_missing():
    # No tenant, a tenant without a phone: nothing to index, nothing to read each run.
    bulk_create_bookings([None, GuestFactory(mobile="")])
    out = run("update_conversation_links")
    assert "Indexed 0 booking(s) missing from the phone index." in out
    assert "not a phone number" not in out


def test_a_phone_that_is_no_number_is_reported_not_indexed(monkeypatch):
    # Pages of 10, and the first two pages hold only phones that do not parse: paging
    # must move past them, not read them again forever.
    monkeypatch.setattr(phone_index, "INDEX_BATCH", 10)
    bulk_create_bookings([GuestFactory(mobile="n/a") for _ in range(20)])
    bulk_create_bookings(customers(25))
    ConversationFactory(customer_phone=phone(24))
    out = run("update_conversation_links")
    assert ("Indexed 25 booking(s) missing from the phone index; "
            "20 more have a customer phone that is not a phone number and cannot be indexed.") in out
    assert "linked 1 of 1" in out
    assert BookingPhone.objects.count() == 25


@pytest.mark.parametrize("missing", [0, 1000])
def test_statements_do_not_grow_with_the_conversations(captured_sql, missing):
    """Nothing missing: the four statements of linking (test_update_links_batch) and the
    anti-join. Missing bookings add their writes, never a statement per conversation."""
    counts = []
    for phones in (2, 40):
        ChatConversation.objects.all().delete()
        Reservation.objects.all().delete()
        Guest.objects.all().delete()
        BookingPhone.objects.all().delete()
        for i in range(phones):
            ReservationFactory(guest=GuestFactory(mobile=phone(i)))
            ConversationFactory.create_batch(3, customer_phone=phone(i))
        imported = Guest.objects.bulk_create(
            Guest(full_name=f"imported {i}", mobile=f"+1561555{i:04d}") for i in range(missing))
        bulk_create_bookings(imported)
        with captured_sql() as capture:
            out = run("update_conversation_links")
        assert f"Indexed {missing} booking(s)" in out and f"linked {3 * phones} of {3 * phones}" in out
        counts.append(len(capture.sql))
    assert counts[0] == counts[1]
    if not missing:
        assert counts == [5, 5]


def test_dry_run_leaves_the_index_as_it_was():
    bulk_create_bookings(customers(2))
    conversations = [ConversationFactory(customer_phone=phone(i)) for i in range(2)]
    out = run("update_conversation_links", "--dry-run")
    assert "[dry run] would index 2 booking(s) missing from the phone index." in out
    assert "[dry run] would link 2 of 2 unlinked conversation(s)" in out
    assert not BookingPhone.objects.exists()
    assert not ChatConversation.objects.filter(pk__in=[c.pk for c in conversations], booking__isnull=False)


# --- 2. --reindex: phones changed behind the app's back ---------------------------------

def test_reindex_reads_phones_changed_behind_the_apps_back():
    guest = GuestFactory(mobile="(415) 555-0100")
    booking = ReservationFactory(guest=guest)
    Guest.objects.filter(pk=guest.pk).update(mobile="(415) 555-0111")  # no post_save
    conversation = ConversationFactory(customer_phone="+14155550111")

    # The booking is in the index (under its old phone): the anti-join cannot see it.
    assert "linked 0 of 1" in run("update_conversation_links")

    out = run("update_conversation_links", "--reindex")
    assert "Rebuilt the phone index: 1 booking phone(s)." in out
    assert "linked 1 of 1" in out
    conversation.refresh_from_db()
    assert conversation.booking == booking
    assert list(BookingPhone.objects.values_list("booking_key", "phone")) == [
        (str(booking.pk), "+14155550111")]


def test_reindex_does_the_work_of_rebuild_booking_phones():
    bookings = bulk_create_bookings(customers(3))
    ReservationFactory(guest=GuestFactory(mobile=phone(7)))
    BookingPhone.objects.create(booking_key="999999", phone=phone(9))  # a stale row
    assert "Rebuilt the phone index: 4 booking phone(s)." in run("update_conversation_links", "--reindex")
    via_reindex = set(BookingPhone.objects.values_list("booking_key", "phone"))
    assert "Indexed 4 booking phone(s)." in run("rebuild_booking_phones")
    assert set(BookingPhone.objects.values_list("booking_key", "phone")) == via_reindex
    assert {key for key, _ in via_reindex} >= {str(b.pk) for b in bookings}
    assert "999999" not in {key for key, _ in via_reindex}


def test_dry_run_reindex_leaves_the_index_as_it_was():
    guest = GuestFactory(mobile="(415) 555-0100")
    ReservationFactory(guest=guest)
    Guest.objects.filter(pk=guest.pk).update(mobile="(415) 555-0111")
    ConversationFactory(customer_phone="+14155550111")
    out = run("update_conversation_links", "--reindex", "--dry-run")
    assert "[dry run] would rebuild the phone index: 1 booking phone(s)." in out
    assert "[dry run] would link 1 of 1" in out
    assert list(BookingPhone.objects.values_list("phone", flat=True)) == ["+14155550100"]


# --- 3. --phone that matches no conversation -------------------------------------------

def test_phone_matching_no_conversation_says_what_was_looked_for():
    ConversationFactory(customer_phone="+14155550199")
    out = run("update_conversation_links", "--phone", "(415) 555-0111")
    assert ('No unlinked conversation has the phone +14155550111 (typed "(415) 555-0111"); '
            "nothing to link.") in out
    assert "linked 0 of 0" not in out


def test_phone_whose_conversations_are_all_decided_says_so():
    booking = ReservationFactory(guest=GuestFactory(mobile="(415) 555-0111"))
    ConversationFactory(customer_phone="+14155550111", booking=booking, link_method="automatic")
    ConversationFactory(customer_phone="+14155550111", link_method="manual")
    out = run("update_conversation_links", "--phone", "415.555.0111")
    assert 'No unlinked conversation has the phone +14155550111 (typed "415.555.0111")' in out
    assert "2 conversation(s) with this phone are linked already or were decided by hand." in out


# --- 4. check_twilio_status --detailed ---------------------------------------------------

def test_detailed_status_counts_bookings_missing_from_the_index(captured_sql):
    bulk_create_bookings(customers(3))
    bulk_create_bookings([None, GuestFactory(mobile="")])  # no phone: nothing to index
    ReservationFactory(guest=GuestFactory(mobile=phone(50)))  # indexed by its post_save
    with captured_sql() as capture:
        out = run("check_twilio_status", "--detailed")
    assert ("Bookings missing from the phone index: 3 (index them with: manage.py "
            "update_conversation_links; for phones changed behind the app's back: manage.py "
            "rebuild_booking_phones, or update_conversation_links --reindex)") in out
    # One aggregate query for it, whatever the number of bookings.
    assert len([sql for sql in capture.sql if BookingPhone._meta.db_table in sql]) == 1

    run("update_conversation_links")
    assert "Bookings missing from the phone index: 0\n" in run("check_twilio_status", "--detailed")


# --- 5. the admin's relink action --------------------------------------------------------

def test_admin_relink_indexes_missing_bookings_first(admin_client):
    bookings = bulk_create_bookings(customers(2))
    conversations = [ConversationFactory(customer_phone=phone(i)) for i in range(2)]
    response = admin_client.post(reverse(CHANGELIST), {
        "action": "relink_selected", "_selected_action": [c.pk for c in conversations]}, follow=True)
    page = response.content.decode()
    assert "2 of 2 unlinked conversations linked" in page
    assert "2 bookings missing from the phone index were indexed first." in page
    for conversation, booking in zip(conversations, bookings, strict=True):
        conversation.refresh_from_db()
        assert conversation.booking_id == booking.pk


# --- 6. what still needs --reindex: stale rows -------------------------------------------

def delete_behind_the_apps_back(booking: Reservation) -> None:
    quote = connection.ops.quote_name
    with connection.cursor() as cursor:
        cursor.execute(f"DELETE FROM {quote(Reservation._meta.db_table)} WHERE {quote('id')} = %s",
                       [booking.pk])


def test_a_stale_row_of_a_deleted_booking_links_nothing():
    booking = ReservationFactory(guest=GuestFactory(mobile=phone(1)))
    delete_behind_the_apps_back(booking)
    conversation = ConversationFactory(customer_phone=phone(1))
    out = run("update_conversation_links")
    # The row is still there, but the lookup joins it to the bookings: no booking, no link.
    assert BookingPhone.objects.filter(booking_key=str(booking.pk)).exists()
    assert "Indexed 0 booking(s)" in out and "linked 0 of 1" in out
    conversation.refresh_from_db()
    assert conversation.booking is None


def test_a_reused_key_keeps_the_stale_phone_until_reindex():
    old = ReservationFactory(guest=GuestFactory(mobile=phone(1)))
    delete_behind_the_apps_back(old)
    # A booking imported with the deleted one's primary key (a fixture, an import that
    # keeps its ids): the anti-join sees the stale row and takes the key for indexed.
    check_in, check_out = stay_dates()
    Reservation.objects.bulk_create([Reservation(pk=old.pk, guest=GuestFactory(mobile=phone(2)),
                                                 check_in=check_in, check_out=check_out)])
    ConversationFactory(customer_phone=phone(2))
    assert "Indexed 0 booking(s)" in run("update_conversation_links")
    assert "linked 1 of 1" in run("update_conversation_links", "--reindex")
    assert list(BookingPhone.objects.values_list("booking_key", "phone")) == [(str(old.pk), phone(2))]


# --- the key the database computes is the key the app writes ----------------------------

def test_the_database_spells_index_keys_as_str_of_the_pk():
    from django_twilio_convlink.linking.phone_index import index_key_sql

    booking = ReservationFactory()
    key = Reservation.objects.annotate(key=index_key_sql(Reservation, F("pk"))).values_list("key", flat=True)
    assert list(key) == [str(booking.pk)]

    # UUID keys: SQLite and MySQL store 32 hex digits, str(uuid) has hyphens. The only
    # UUID-keyed model at hand is the task backend's.
    from django_tasks_db.models import DBTaskResult

    task = DBTaskResult.objects.create(args_kwargs={}, task_path="x.y", backend_name="default",
                                       run_after=timezone.now(), exception_class_path="", traceback="")
    key = DBTaskResult.objects.annotate(key=index_key_sql(DBTaskResult, F("pk")))
    assert list(key.values_list("key", flat=True)) == [str(task.pk)]
