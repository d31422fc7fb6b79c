"""Linking conversations to bookings: at once, retroactively, and on demand.

Three ways a conversation gets its booking and apartment:

* automatic: the first time the app learns the customer's phone (first customer
  message or onConversationAdded, whichever comes first), one lookup;
* retroactive: a booking (or the model holding its phone) is saved later, and the
  customer's unlinked conversations are bulk-updated to it after the commit;
* manual: an admin sets the booking; automation never touches that link again.

Every way sends ``signals.conversation_linked`` after the commit: one signal per
booking with the primary keys of the conversations it got, so a batch of 100,000
conversations is one signal per booking and, with a receiver connected, one SELECT
more per batch (none without one).
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from django.core.exceptions import EmptyResultSet
from django.db import connection, connections, transaction
from django.db.models import Count, F, Func, QuerySet
from django.utils import timezone

from . import get_conversation_model, signals
from .booking_lookup import (
    best_bookings,
    booking_fields,
    find_booking,
    index_key,
    unindexed_bookings,
    window_q,
)
from .models import AbstractTwilioConversation, BookingPhone, LinkMethod
from .phones import normalize_phone

logger = logging.getLogger(__name__)


def link_on_first_phone(conversation: AbstractTwilioConversation, phone: str) -> bool:
    """Record the customer's phone and run the one booking lookup for ``conversation``.

    Does nothing (and runs no query) when the lookup already ran. The claim is a
    conditional UPDATE, so of two concurrent first messages only one links, and a
    booking found never replaces a link an admin set by hand. Returns True when a
    booking was linked.
    """
    if conversation.booking_lookup_at is not None:
        return False
    now = timezone.now()
    updates = phone_only = {"customer_phone": phone, "booking_lookup_at": now}
    booking = None
    may_link = conversation.booking_id is None and conversation.link_method != LinkMethod.MANUAL
    if may_link:
        fields = booking_fields()
        booking = find_booking(phone, fields)
        if booking is not None:
            updates = {
                **phone_only,
                "booking_id": booking.pk,
                "apartment_id": getattr(booking, fields.apartment_attname),
                "link_method": LinkMethod.AUTOMATIC,
                "linked_at": now,
            }
    unclaimed = type(conversation)._default_manager.filter(pk=conversation.pk, booking_lookup_at__isnull=True)
    if booking is not None:
        # The conversation was read without a lock: an admin may have linked it by hand
        # since. The link is written only where there still is none to respect...
        claimed = (unclaimed.filter(booking__isnull=True).exclude(link_method=LinkMethod.MANUAL)
                   .update(**updates))
        if not claimed:
            # ...and otherwise only the phone is recorded (rare: one more statement).
            booking, updates = None, phone_only
    if booking is None:
        claimed = unclaimed.update(**updates)
    if not claimed:
        return False
    if may_link and booking is None:
        # A booking committed while this transaction was open is invisible to the
        # lookup above, and its own after-commit relink cannot see this uncommitted
        # conversation: each would miss the other. Looking again after our commit
        # closes that gap; it costs two queries, only for customers without a booking.
        transaction.on_commit(partial(_relink_phone_safely, phone))
    for name, value in updates.items():
        setattr(conversation, name, value)
    if booking is not None:
        logger.info("Linked conversation %s to booking %s (phone %s)",
                    conversation.conversation_sid, booking.pk, phone)
        _announce(type(conversation), [conversation.pk], booking.pk, updates["apartment_id"],
                  LinkMethod.AUTOMATIC)
    return booking is not None


def _announce(model: type, conversation_pks: list[Any], booking_pk: Any, apartment_pk: Any,
              method: str) -> None:
    signals.send_after_commit(signals.conversation_linked, model, using=model._default_manager.db,
                              conversation_pks=conversation_pks, booking_pk=booking_pk,
                              apartment_pk=apartment_pk, method=str(method))


def _announce_linked(model: type, linked_at: Any, method: str) -> None:
    """``conversation_linked`` for every booking the UPDATE stamped with ``linked_at``:
    one SELECT, and only when someone listens. The timestamp is this UPDATE's own (to
    the microsecond), so it names exactly the rows the UPDATE changed."""
    if not signals.conversation_linked.receivers:
        return
    by_booking: dict[tuple[Any, Any], list[Any]] = {}
    for pk, booking_pk, apartment_pk in model._default_manager.filter(
            linked_at=linked_at, link_method=method).values_list("pk", "booking_id", "apartment_id"):
        by_booking.setdefault((booking_pk, apartment_pk), []).append(pk)
    for (booking_pk, apartment_pk), pks in by_booking.items():
        _announce(model, pks, booking_pk, apartment_pk, method)


def relink_phone(phone: str) -> int:
    """Link the unlinked conversations of ``phone`` (E.164) to its best booking now."""
    fields = booking_fields()
    booking = find_booking(phone, fields)
    if booking is None:
        return 0
    linked = _bulk_link(_unlinked(phone), booking.pk, getattr(booking, fields.apartment_attname),
                        LinkMethod.RETROACTIVE)
    if linked:
        logger.info("Linked %d conversation(s) of %s to booking %s", linked, phone, booking.pk)
    return linked


def _relink_phone_safely(phone: str) -> None:
    try:
        relink_phone(phone)
    except Exception:
        # After the commit the webhook's answer is settled; a failure here must not
        # turn it into a 500 that makes Twilio redeliver a stored message.
        logger.exception("Looking up a booking for %s after the commit failed", phone)


def _unlinked(phone: str):
    # Unlinked means no booking and no admin decision: a manager who cleared a link
    # by hand (link_method=manual, booking empty) has decided, automation stays out.
    return (
        get_conversation_model()._default_manager
        .filter(customer_phone=phone, booking__isnull=True)
        .exclude(link_method=LinkMethod.MANUAL)
    )


def _bulk_link(qs, booking_pk: Any, apartment_pk: Any, method: str) -> int:
    """One UPDATE linking every conversation of ``qs``; returns how many it changed.
    The keys may be expressions (a CASE on the phone, see ``_link_batch``)."""
    now = timezone.now()
    linked = qs.update(booking_id=booking_pk, apartment_id=apartment_pk, link_method=method,
                       linked_at=now, booking_lookup_at=now, updated_at=now)
    if linked:
        _announce_linked(qs.model, now, method)
    return linked


def index_booking_phone(booking_pk: Any) -> str | None:
    """Write the booking's normalized phone into the index (or drop its row when it
    has none). Two queries. Runs inside the saving transaction, so the index never
    disagrees with committed bookings. Returns the phone."""
    fields = booking_fields()
    raw = (fields.model._default_manager.filter(pk=booking_pk)
           .values_list(fields.phone_path, flat=True).first())
    phone = normalize_phone(raw)
    _store_booking_phones([booking_pk], phone)
    return phone


def link_conversations_to_booking(booking_pk: Any, method: str = LinkMethod.RETROACTIVE) -> int:
    """Link the booking's customer's unlinked conversations to it, when its stay is
    inside the lookup window. Returns the number of conversations linked.

    Two queries whatever the number of conversations: read the booking, one bulk
    UPDATE.
    """
    fields = booking_fields()
    values = [fields.phone_path, fields.apartment_attname]
    qs = fields.model._default_manager.filter(pk=booking_pk)
    if fields.has_dates:
        qs = qs.annotate(_convlink_in_window=window_q(fields, timezone.localdate()))
        values.append("_convlink_in_window")
    row = qs.values(*values).first()
    if row is None:
        return 0  # deleted before the commit hook ran
    phone = normalize_phone(row[fields.phone_path])
    if phone is None or (fields.has_dates and not row["_convlink_in_window"]):
        return 0
    linked = _bulk_link(_unlinked(phone), booking_pk, row[fields.apartment_attname], method)
    if linked:
        logger.info("Linked %d conversation(s) of %s to booking %s", linked, phone, booking_pk)
    return linked


def index_holder_bookings(holder_pk: Any) -> str | None:
    """A tenant (the model along BOOKING_PHONE_FIELD) was saved: re-index the phone of
    all its bookings. Three queries. Returns the phone."""
    fields = booking_fields()
    holder_field = fields.phone_path.rpartition("__")[2]
    raw = (fields.holder_model._default_manager.filter(pk=holder_pk)
           .values_list(holder_field, flat=True).first())
    phone = normalize_phone(raw)
    booking_pks = list(fields.model._default_manager.filter(**{fields.holder_path: holder_pk})
                       .values_list("pk", flat=True))
    _store_booking_phones(booking_pks, phone)
    return phone


def relink_phone_holder(holder_pk: Any) -> int:
    """Link the tenant's unlinked conversations to the best of its bookings (its phone
    may just have changed). Returns the number of conversations linked."""
    fields = booking_fields()
    holder_field = fields.phone_path.rpartition("__")[2]
    phone = normalize_phone(fields.holder_model._default_manager.filter(pk=holder_pk)
                            .values_list(holder_field, flat=True).first())
    return 0 if phone is None else relink_phone(phone)


def unindex_holder_bookings(holder_pk: Any) -> None:
    """A tenant is being deleted: its bookings lose their phone (SET_NULL) or go too."""
    fields = booking_fields()
    booking_pks = list(fields.model._default_manager.filter(**{fields.holder_path: holder_pk})
                       .values_list("pk", flat=True))
    _store_booking_phones(booking_pks, None)


def _store_booking_phones(booking_pks: list[Any], phone: str | None) -> None:
    if not booking_pks:
        return
    keys = [index_key(pk) for pk in booking_pks]
    if phone is None:
        BookingPhone.objects.filter(booking_key__in=keys).delete()
        return
    # One upsert statement: ON CONFLICT (booking_key) on PostgreSQL and SQLite; MySQL
    # and MariaDB take no conflict target (ON DUPLICATE KEY UPDATE) and refuse one.
    conflict_target = connection.features.supports_update_conflicts_with_target
    BookingPhone.objects.bulk_create(
        [BookingPhone(booking_key=key, phone=phone) for key in keys],
        update_conflicts=True, update_fields=["phone"],
        unique_fields=["booking_key"] if conflict_target else None,
    )


def forget_booking(booking_pk: Any) -> None:
    BookingPhone.objects.filter(booking_key=index_key(booking_pk)).delete()


# Bookings per page of the anti-join, and per statement writing the index (SQLite's
# parameter limit may split a statement further: bulk_create does).
INDEX_BATCH = 2000


def _index_booking_rows(rows: Iterable[tuple[Any, Any]], batch_size: int) -> int:
    """Add the normalized phone of each (booking pk, phone as the site stores it) of
    ``rows`` to the index, ``batch_size`` rows per statement; a phone that is not a
    number is left out. Returns the rows written.

    A row that exists by the time it is written is left as it is: only a receiver can
    have written it since ``rows`` were read, from the booking as saved then, which
    is at least as new as what was read here.
    """
    written = 0
    batch: list[BookingPhone] = []
    for pk, raw in rows:
        phone = normalize_phone(raw)
        if phone:
            batch.append(BookingPhone(booking_key=index_key(pk), phone=phone))
        if len(batch) >= batch_size:
            BookingPhone.objects.bulk_create(batch, ignore_conflicts=True)
            written += len(batch)
            batch = []
    if batch:
        BookingPhone.objects.bulk_create(batch, ignore_conflicts=True)
        written += len(batch)
    return written


def rebuild_booking_phones(batch_size: int | None = None) -> int:
    """Rebuild the whole phone index from the booking table, in one transaction: for
    phones changed behind the app's back (``QuerySet.update()`` of a tenant) and rows
    of bookings deleted behind its back, which ``index_missing_booking_phones`` cannot
    see. Returns the rows written."""
    fields = booking_fields()
    batch_size = batch_size or INDEX_BATCH
    with transaction.atomic():
        BookingPhone.objects.all().delete()
        rows = fields.model._default_manager.values_list("pk", fields.phone_path)
        return _index_booking_rows(rows.iterator(chunk_size=batch_size), batch_size)


@dataclass
class PhoneIndexRepair:
    """What was done to the phone index before linking (``update_conversation_links``)."""

    rebuilt: bool = False  # the whole index was rebuilt; else the missing bookings added
    indexed: int = 0  # index rows written
    # Bookings missing from the index whose phone is not a number, left out (they stay
    # missing). Counted when adding the missing ones, not by a rebuild.
    not_numbers: int = 0


def index_missing_booking_phones() -> PhoneIndexRepair:
    """Add the bookings missing from the phone index (``unindexed_bookings``: saved
    without post_save, by ``bulk_create``, ``loaddata``, raw SQL) to it.

    One statement when none is missing: the anti-join, which reads nothing. Otherwise
    per page of ``INDEX_BATCH`` missing bookings one read and its writes. Pages follow
    the primary key, so bookings whose phone is not a number are read once per call,
    never again within it. No transaction spans the pages: each one written is right
    on its own, and a booking saved meanwhile is indexed by its receiver.
    """
    fields = booking_fields()
    missing = unindexed_bookings(fields).order_by("pk").values_list("pk", fields.phone_path)
    repair = PhoneIndexRepair()
    page: list[tuple[Any, Any]] = []
    while True:
        page = list((missing.filter(pk__gt=page[-1][0]) if page else missing)[:INDEX_BATCH])
        written = _index_booking_rows(page, INDEX_BATCH)
        repair.indexed += written
        repair.not_numbers += len(page) - written
        if len(page) < INDEX_BATCH:
            break
    if repair.indexed or repair.not_numbers:
        logger.info("Indexed %d booking(s) missing from the phone index; %d more with a phone that "
                    "is not a number", repair.indexed, repair.not_numbers)
    return repair


@dataclass
class PlannedLink:
    """The conversations of one phone and the booking they are (to be) linked to."""

    phone: str
    booking_pk: Any
    apartment_pk: Any
    # One UPDATE links a whole batch of phones, so when someone linked some of these
    # meanwhile only the report's total (rows the UPDATEs changed) shows it.
    conversation_sids: list[str] = field(default_factory=list)


@dataclass
class LinkReport:
    """What ``update_conversation_links`` linked (or, in a dry run, would link)."""

    examined: int = 0
    # Rows the UPDATEs changed; in a dry run, the conversations that would be linked.
    linked: int = 0
    # Per phone, only when the conversations were listed (list_conversations=True).
    links: list[PlannedLink] = field(default_factory=list)
    # What was done to the phone index first (index_missing or reindex), else None.
    # In a dry run: what would have been done.
    index: PhoneIndexRepair | None = None

    @property
    def unmatched(self) -> int:
        return self.examined - self.linked


def _phone_groups(qs: QuerySet, with_sids: bool) -> Iterator[tuple[str, int, list[str]]]:
    """(phone, number of conversations, their SIDs or []) per distinct phone of ``qs``,
    in phone order, streamed: memory does not grow with the number of conversations."""
    if not with_sids:
        # The database counts; only one row per phone comes back.
        counts = qs.order_by("customer_phone").values_list("customer_phone").annotate(n=Count("pk"))
        for phone, count in counts.iterator(chunk_size=2000):
            yield phone, count, []
        return
    current, sids = None, []
    for phone, sid in qs.order_by("customer_phone", "pk").values_list(
        "customer_phone", "conversation_sid"
    ).iterator(chunk_size=2000):
        if phone != current and sids:
            yield current, len(sids), sids
            sids = []
        current = phone
        sids.append(sid)
    if sids:
        yield current, len(sids), sids


def _batches(groups: Iterator[tuple[str, int, list[str]]], size: int
             ) -> Iterator[list[tuple[str, int, list[str]]]]:
    batch = []
    for group in groups:
        batch.append(group)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


# Phones linked per batch: three statements (index, candidates, UPDATE) each. Larger
# batches save round trips but lengthen the CASE every updated row runs through.
PHONE_BATCH = 500


def _max_query_params(alias: str) -> int | None:
    """How many parameters one statement of this database takes (None: no limit)."""
    conn = connections[alias]
    if conn.vendor == "sqlite":
        # Django 5.2 reports 999, SQLite's limit before 3.32 (now 32,766); Django 6.0
        # asks SQLite, as this does. Bigger batches mean fewer write transactions,
        # each of which journals and syncs every page its scattered rows sit on.
        conn.ensure_connection()
        return conn.connection.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)
    return conn.features.max_query_params


def _phone_batch_size(qs: QuerySet) -> int:
    """Phones per batch: PHONE_BATCH, or fewer where one UPDATE could not take them all
    as parameters: it names each phone five times (twice in each CASE, once in the IN
    list) besides the parameters of ``qs`` itself."""
    limit = _max_query_params(qs.db)
    if not limit:
        return PHONE_BATCH
    try:
        own = len(qs.query.sql_with_params()[1]) + 8  # + the four new values, with room
    except EmptyResultSet:
        return PHONE_BATCH  # an empty selection (pk__in=[]): nothing to batch anyway
    return max(1, min(PHONE_BATCH, (limit - own) // 5))


class _PhoneCase(Func):
    """``CASE <phone> WHEN %s THEN %s ... ELSE <default> END``: the simple CASE, one
    node however many phones. The ORM's Case(When(customer_phone=...)) builds and
    resolves a filter per phone, about 0.2 ms each in Python: as long as the UPDATE
    takes per phone (20 conversations). This costs microseconds."""

    def __init__(self, phone: Any, values: list[tuple[str, Any]], default: Any, output_field: Any) -> None:
        self.values = values
        super().__init__(phone, default, output_field=output_field)

    def as_sql(self, compiler: Any, connection: Any, **extra_context: Any) -> tuple[str, list[Any]]:
        phone_sql, phone_params = compiler.compile(self.source_expressions[0])
        default_sql, default_params = compiler.compile(self.source_expressions[1])
        params = [*phone_params]
        for phone, value in self.values:
            params += [phone, self.output_field.get_db_prep_value(value, connection)]
        whens = " ".join(["WHEN %s THEN %s"] * len(self.values))
        return f"CASE {phone_sql} {whens} ELSE {default_sql} END", [*params, *default_params]


def _link_batch(qs: QuerySet, targets: dict[str, tuple[Any, Any]]) -> int:
    """Link the conversations of ``qs`` whose phone is a key of ``targets`` (phone ->
    (booking pk, apartment pk)) in one UPDATE: a CASE on the phone picks each row's keys."""
    model = qs.model

    def case(name: str, position: int) -> _PhoneCase:
        # The ELSE is never taken (every row's phone has a WHEN); it types the CASE as
        # the column where all the values are NULL, which PostgreSQL would take for text.
        return _PhoneCase(F("customer_phone"), [(phone, keys[position]) for phone, keys in targets.items()],
                          F(name), model._meta.get_field(name).target_field)

    return _bulk_link(qs.filter(customer_phone__in=list(targets)), case("booking", 0), case("apartment", 1),
                      LinkMethod.RETROACTIVE)


def update_conversation_links(
    *, phone: str | None = None, conversation_sid: str | None = None, dry_run: bool = False,
    conversations: QuerySet | None = None, list_conversations: bool = True,
    index_missing: bool = False, reindex: bool = False,
) -> LinkReport:
    """Look up a booking for every unlinked conversation with a known customer phone,
    optionally only for one phone (any format), one conversation SID, or the unlinked
    ones among ``conversations`` (a queryset of the conversation model: the admin's
    selection). Each phone gets the booking ``find_booking`` would give it.

    The lookup trusts the phone index. With ``index_missing`` the bookings missing
    from it are added first (``index_missing_booking_phones``: one statement more
    when none is missing); with ``reindex`` the whole index is rebuilt first
    (``rebuild_booking_phones``), which also sees phones changed behind the app's
    back. Either is for all bookings, whatever the selection; ``report.index`` says
    what it did. A dry run changes nothing, the index included: its repair is rolled
    back after the run that saw it.

    Batched by phone: one query streams the distinct phones, then per batch of up to
    500 phones one query reads their index rows, one their candidate bookings and one
    UPDATE links their conversations, so 100,000 conversations of 5,000 phones take
    about 30 statements instead of two per phone. Manual links and conversations whose
    manager unlinked them by hand are never touched. With ``list_conversations``
    false the report has counts only (``links`` stays empty) and memory does not grow
    with the number of conversations. Raises ValueError for a phone that does not parse.
    """
    Conversation = get_conversation_model()
    qs = (
        # "NOT (booking_id IS NOT NULL)", not "booking_id IS NULL": the same rows, but
        # SQLite (no statistics unless someone runs ANALYZE) takes IS NULL for a
        # selective index lookup and would walk every unlinked conversation through
        # the booking index in each batch's UPDATE instead of using the phone index
        # for its IN list, making the run quadratic. PostgreSQL reads both as IS NULL.
        Conversation._default_manager.exclude(booking__isnull=False)
        .exclude(customer_phone="").exclude(link_method=LinkMethod.MANUAL)
    )
    if phone is not None:
        normalized = normalize_phone(phone)
        if normalized is None:
            raise ValueError(f"{phone!r} is not a phone number.")
        qs = qs.filter(customer_phone=normalized)
    if conversation_sid is not None:
        qs = qs.filter(conversation_sid=conversation_sid)
    if conversations is not None:
        qs = qs.filter(pk__in=conversations.values("pk"))

    if not (index_missing or reindex):
        return _link_unlinked(qs, dry_run, list_conversations)
    # A dry run must see the repaired index to say what a real run would link, and
    # leave it as it was: the repair happens in a transaction that is rolled back.
    with transaction.atomic() if dry_run else nullcontext():
        repair = _repair_index(reindex)
        report = _link_unlinked(qs, dry_run, list_conversations)
        if dry_run:
            transaction.set_rollback(True)
    report.index = repair
    return report


def _repair_index(reindex: bool) -> PhoneIndexRepair:
    if reindex:
        return PhoneIndexRepair(rebuilt=True, indexed=rebuild_booking_phones())
    return index_missing_booking_phones()


def _link_unlinked(qs: QuerySet, dry_run: bool, list_conversations: bool) -> LinkReport:
    fields = booking_fields()
    today = timezone.localdate()  # one day for the whole run, as one lookup would have
    report = LinkReport()
    for batch in _batches(_phone_groups(qs, list_conversations), _phone_batch_size(qs)):
        targets = best_bookings([group[0] for group in batch], fields, today)
        planned = 0
        for customer_phone, count, sids in batch:
            report.examined += count
            if customer_phone not in targets:
                continue
            planned += count
            if list_conversations:
                booking_pk, apartment_pk = targets[customer_phone]
                report.links.append(PlannedLink(customer_phone, booking_pk, apartment_pk, sids))
        if dry_run or not targets:
            report.linked += planned
            continue
        linked = _link_batch(qs, targets)
        report.linked += linked
        logger.info("Linked %d conversation(s) of %d phone(s) to bookings", linked, len(targets))
    return report


def link_manually(conversation: AbstractTwilioConversation) -> None:
    """Mark an admin's choice of booking (or of no booking) as manual, so that
    automation never overwrites it. The caller saves the conversation, then calls
    ``manual_link_saved``."""
    conversation.link_method = LinkMethod.MANUAL
    conversation.linked_at = timezone.now()

    # booking_lookup_at stays as it is: the customer's first message must still record
    # the phone; link_on_first_phone sees the manual method and looks nothing up.


def manual_link_saved(conversation: AbstractTwilioConversation) -> None:
    """A manual link was saved: ``conversation_linked`` (method "manual") after the
    commit, when a booking was chosen (clearing it links nothing)."""
    if conversation.booking_id is not None:
        _announce(type(conversation), [conversation.pk], conversation.booking_id,
                  conversation.apartment_id, LinkMethod.MANUAL)
