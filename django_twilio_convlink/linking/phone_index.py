"""The ``BookingPhone`` index: one E.164 row per booking, so a lookup by phone is one
indexed query whatever format the site stores its phones in.

Its key format (``index_key``) is defined here once, in Python and in SQL. Bookings
saved through the ORM are kept in it by ``receivers.py`` inside the saving
transaction; bookings that arrive without post_save (``bulk_create``, ``loaddata``,
raw SQL) are found by the anti-join ``unindexed_bookings`` and added by
``index_missing_booking_phones``; ``rebuild_booking_phones`` starts over.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from django.db import connection, connections, models, router, transaction
from django.db.models import Exists, OuterRef, Value
from django.db.models.functions import Cast, Concat, Substr

from ..models import BookingPhone
from ..phones import normalize_phone
from .bookings import (
    BookingFields,
    booking_fields,
    booking_phone,
    holder_booking_pks,
    holder_phone,
)

logger = logging.getLogger(__name__)

# Bookings per page of the anti-join, and per statement writing the index (SQLite's
# parameter limit may split a statement further: bulk_create does).
INDEX_BATCH = 2000


def index_key(pk: Any) -> str:
    """A booking's key in ``BookingPhone``: its primary key as text, ``str(pk)``. Every
    row is written under it; ``index_key_sql`` is the same key computed in SQL."""
    return str(pk)


def index_key_sql(model: type[models.Model], pk: Any) -> models.Expression:
    """``index_key`` of the primary key expression ``pk`` of ``model`` (``F("pk")``,
    ``OuterRef("pk")``), computed by the database: the text an anti-join compares with
    ``BookingPhone.booking_key``. Comparing as text keeps the unique index on
    ``booking_key`` usable and works for every key type.
    """
    text: models.Expression = Cast(pk, models.CharField())
    pk_field: Any = model._meta.pk
    pk_field = getattr(pk_field, "target_field", pk_field)  # a parent link: the parent's key
    features = connections[router.db_for_read(model)].features
    if isinstance(pk_field, models.UUIDField) and not features.has_native_uuid_field:
        # Stored as 32 hex digits there (SQLite, MySQL, MariaDB before 10.7), while
        # str(uuid) has the hyphens: put them back, 8-4-4-4-12.
        parts: list[Any] = []
        for start, length in ((1, 8), (9, 4), (13, 4), (17, 4), (21, 12)):
            if parts:
                parts.append(Value("-"))
            parts.append(Substr(text, start, length))
        text = Concat(*parts, output_field=models.CharField())
    return text


def booking_keys(fields: BookingFields, index: models.QuerySet[BookingPhone],
                 stored_keys: Iterable[str] | None = None) -> models.QuerySet | list[Any]:
    """The primary keys of the bookings of the ``index`` rows, for a ``pk__in``.

    For integer keys (nearly every site) a subquery casting the stored text back, so
    the lookup stays one statement; for other key types (UUIDs) a list, because their
    text form differs per database: from ``stored_keys`` when the caller has read
    them already, else one query more.
    """
    if fields.integer_keys:
        return index.values(key=Cast("booking_key", output_field=models.BigIntegerField()))
    if stored_keys is None:
        stored_keys = index.values_list("booking_key", flat=True)
    pk_field = fields.model._meta.pk
    assert pk_field is not None  # a concrete model always has one
    return [pk_field.to_python(key) for key in stored_keys]


def unindexed_bookings(fields: BookingFields | None = None) -> models.QuerySet:
    """The bookings with a customer phone on record but no row in ``BookingPhone``:
    those that reached the database without post_save (``bulk_create``, ``loaddata``,
    raw SQL). An anti-join on ``index_key``: one statement to count them or to read a
    page of them, whatever the number of bookings.

    Bookings without a phone (no tenant, a blank or NULL phone) are not in it: they
    never get a row. One whose phone is not a number is, on every call: the index
    holds E.164 phones only. A booking whose phone changed behind the app's back
    (``QuerySet.update()`` of its tenant) still has its row, under the old phone, so
    it is not in it either; only a rebuild (``rebuild_booking_phones``) sees that.
    """
    fields = fields or booking_fields()
    indexed = BookingPhone.objects.filter(booking_key=index_key_sql(fields.model, OuterRef("pk")))
    bookings = fields.model._default_manager.filter(**{f"{fields.phone_path}__isnull": False})
    if fields.phone_field.empty_strings_allowed:  # a text column; "" would not compare with a number
        bookings = bookings.exclude(**{fields.phone_path: ""})
    return bookings.filter(~Exists(indexed))


# -- upkeep from the site's saves (receivers.py) --------------------------------------

def index_booking_phone(booking_pk: Any) -> str | None:
    """Write the booking's normalized phone into the index (or drop its row when it
    has none). Two queries. Runs inside the saving transaction, so the index never
    disagrees with committed bookings. Returns the phone."""
    phone = booking_phone(booking_fields(), booking_pk)
    _store_booking_phones([booking_pk], phone)
    return phone


def index_holder_bookings(holder_pk: Any) -> str | None:
    """A tenant (the model along BOOKING_PHONE_FIELD) was saved: re-index the phone of
    all its bookings. Three queries. Returns the phone."""
    fields = booking_fields()
    phone = holder_phone(fields, holder_pk)
    _store_booking_phones(holder_booking_pks(fields, holder_pk), phone)
    return phone


def unindex_holder_bookings(holder_pk: Any) -> None:
    """A tenant is being deleted: its bookings lose their phone (SET_NULL) or go too."""
    _store_booking_phones(holder_booking_pks(booking_fields(), holder_pk), None)


def forget_booking(booking_pk: Any) -> None:
    BookingPhone.objects.filter(booking_key=index_key(booking_pk)).delete()


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


# -- repair (update_conversation_links, rebuild_booking_phones, the admin) ------------

@dataclass
class PhoneIndexRepair:
    """What was done to the phone index before linking (``update_conversation_links``)."""

    rebuilt: bool = False  # the whole index was rebuilt; else the missing bookings added
    indexed: int = 0  # index rows written
    # Bookings missing from the index whose phone is not a number, left out (they stay
    # missing). Counted when adding the missing ones, not by a rebuild.
    not_numbers: int = 0


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


def repair_index(reindex: bool) -> PhoneIndexRepair:
    """Rebuild the index (``reindex``), else add the bookings missing from it."""
    if reindex:
        return PhoneIndexRepair(rebuilt=True, indexed=rebuild_booking_phones())
    return index_missing_booking_phones()
