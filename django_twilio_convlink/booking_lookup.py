"""From a phone number to the site's booking: settings-driven, indexed, deterministic.

The site names its booking model and the ORM path to the customer's phone in
settings; ``BookingFields`` resolves those names once per call into what the
queries need. Phones are compared through the ``BookingPhone`` index (one E.164 row
per booking), so a lookup is one indexed query whatever format the site stores.
"""

from __future__ import annotations

import datetime
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from django.core.exceptions import FieldDoesNotExist, ImproperlyConfigured
from django.db import connections, models, router
from django.db.models import Case, Exists, F, IntegerField, OuterRef, Q, Value, When
from django.db.models.functions import Cast, Concat, Substr
from django.utils import timezone

from . import get_booking_model
from .conf import convlink_settings
from .models import BookingPhone
from .phones import normalize_phone


@dataclass(frozen=True)
class BookingFields:
    """What the settings say about the site's booking model, resolved against _meta."""

    model: type[models.Model]
    phone_path: str  # "tenant__phone": from a booking to the customer's phone
    holder_model: type[models.Model]  # the model that holds the phone (Tenant)
    holder_path: str  # "tenant": from a booking to the holder; "" when the booking holds it
    apartment_attname: str  # "apartment_id"
    start_field: str | None
    end_field: str | None
    window_days: int

    @property
    def has_dates(self) -> bool:
        return bool(self.start_field and self.end_field)


def resolve_path(model: type[models.Model], path: str) -> tuple[type[models.Model], models.Field]:
    """Follow an ORM path ("tenant__phone") to (the model holding the last field, the field).

    Raises FieldDoesNotExist or ImproperlyConfigured with the offending part named.
    """
    parts = path.split("__")
    for part in parts[:-1]:
        field = model._meta.get_field(part)
        if not field.is_relation or field.many_to_many or field.one_to_many:
            raise ImproperlyConfigured(
                f"{part!r} in {path!r} is not a foreign key or one-to-one field of "
                f"{model._meta.label}."
            )
        model = field.related_model
    return model, model._meta.get_field(parts[-1])


def booking_fields() -> BookingFields:
    s = convlink_settings
    model = get_booking_model()
    holder_model, _ = resolve_path(model, s.BOOKING_PHONE_FIELD)
    apartment = model._meta.get_field(s.BOOKING_APARTMENT_FIELD)
    return BookingFields(
        model=model,
        phone_path=s.BOOKING_PHONE_FIELD,
        holder_model=holder_model,
        holder_path=s.BOOKING_PHONE_FIELD.rpartition("__")[0],
        apartment_attname=apartment.attname,
        start_field=s.BOOKING_START_FIELD,
        end_field=s.BOOKING_END_FIELD,
        window_days=int(s.BOOKING_WINDOW_DAYS),
    )


def _bound(fields: BookingFields, name: str, day: datetime.date) -> Any:
    # Date fields compare with dates; a site whose stays are DateTimeFields gets the
    # start of that day in the current time zone.
    try:
        field = fields.model._meta.get_field(name)
    except FieldDoesNotExist:
        return day
    if isinstance(field, models.DateTimeField):
        return timezone.make_aware(datetime.datetime.combine(day, datetime.time.min))
    return day


def window_q(fields: BookingFields, today: datetime.date) -> Q:
    """Bookings whose stay overlaps [today - WINDOW, today + WINDOW]."""
    delta = datetime.timedelta(days=fields.window_days)
    return Q(**{
        f"{fields.start_field}__lte": _bound(fields, fields.start_field, today + delta),
        f"{fields.end_field}__gte": _bound(fields, fields.end_field, today - delta),
    })


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
    pk_field = model._meta.pk
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
    _, phone_field = resolve_path(fields.model, fields.phone_path)
    indexed = BookingPhone.objects.filter(booking_key=index_key_sql(fields.model, OuterRef("pk")))
    bookings = fields.model._default_manager.filter(**{f"{fields.phone_path}__isnull": False})
    if phone_field.empty_strings_allowed:  # a text column; "" would not compare with a number
        bookings = bookings.exclude(**{fields.phone_path: ""})
    return bookings.filter(~Exists(indexed))


def _integer_keys(fields: BookingFields) -> bool:
    return isinstance(fields.model._meta.pk, models.IntegerField | models.AutoField)


def booking_keys(fields: BookingFields, phone: str) -> models.QuerySet | list[Any]:
    """The primary keys of the bookings indexed under ``phone``.

    For integer keys (nearly every site) a subquery casting the stored text back, so
    the lookup stays one statement; for other key types (UUIDs) a list, one more
    query, because their text form differs per database.
    """
    keys = BookingPhone.objects.filter(phone=phone)
    if _integer_keys(fields):
        return keys.values(key=Cast("booking_key", output_field=models.BigIntegerField()))
    pk_field = fields.model._meta.pk
    return [pk_field.to_python(key) for key in keys.values_list("booking_key", flat=True)]


def best_first(fields: BookingFields, qs: models.QuerySet, today: datetime.date | None = None
               ) -> models.QuerySet:
    """``qs`` (bookings) cut to the lookup window and ordered best first.

    With start and end fields: only stays overlapping the window, ordered staying now,
    then the soonest upcoming, then the most recent past. Without dates: newest first.
    Ties (two stays at once, two arrivals on the same day) go to the newest booking
    (highest pk), the same rule as the no-dates case. The order never depends on the
    phone, so over the bookings of many phones each phone's best comes first among
    its own (``best_bookings`` relies on it).
    """
    if not fields.has_dates:
        return qs.order_by("-pk")
    today = today or timezone.localdate()
    start, end = fields.start_field, fields.end_field
    today_start, today_end = _bound(fields, start, today), _bound(fields, end, today)
    return qs.filter(window_q(fields, today)).annotate(
        _convlink_rank=Case(
            When(Q(**{f"{start}__lte": today_start, f"{end}__gte": today_end}), then=Value(0)),
            When(**{f"{start}__gt": today_start}, then=Value(1)),
            default=Value(2),
            output_field=IntegerField(),
        ),
    ).order_by(
        "_convlink_rank",
        # Upcoming: soonest start first. Past: latest end first. Each key is NULL
        # outside its own rank, so it never reorders the other ranks.
        Case(When(**{f"{start}__gt": today_start}, then=F(start))).asc(nulls_last=True),
        Case(When(**{f"{end}__lt": today_end}, then=F(end))).desc(nulls_last=True),
        "-pk",
    )


def ordered_candidates(
    fields: BookingFields, phone: str, today: datetime.date | None = None
) -> models.QuerySet:
    """Bookings for ``phone`` (E.164), best first (``best_first``), as one lazy queryset."""
    qs = fields.model._default_manager.filter(pk__in=booking_keys(fields, phone))
    return best_first(fields, qs, today)


def best_bookings(phones: Collection[str], fields: BookingFields | None = None,
                  today: datetime.date | None = None) -> dict[str, tuple[Any, Any]]:
    """``find_booking`` for many phones at once: {phone: (booking pk, apartment pk)}
    for each phone (E.164) of ``phones`` that has a booking; two queries whatever
    their number.

    One query maps the phones' index rows (booking key -> phone); one reads all their
    candidates in ``best_first`` order, whose first row per phone is that phone's
    best. The caller bounds ``phones`` (a batch): both queries take each phone as a
    parameter, and the candidates of the whole batch are read.
    """
    if not phones:
        return {}
    fields = fields or booking_fields()
    index = BookingPhone.objects.filter(phone__in=list(phones))
    phone_of = dict(index.values_list("booking_key", "phone"))
    if not phone_of:
        return {}
    if _integer_keys(fields):
        keys: models.QuerySet | list[Any] = index.values(
            key=Cast("booking_key", output_field=models.BigIntegerField()))
    else:
        keys = [fields.model._meta.pk.to_python(key) for key in phone_of]
    candidates = best_first(fields, fields.model._default_manager.filter(pk__in=keys), today)
    best: dict[str, tuple[Any, Any]] = {}
    for pk, apartment_pk in candidates.values_list("pk", fields.apartment_attname):
        # A booking re-indexed between the two queries may be missing from phone_of:
        # it waits for the next run.
        phone = phone_of.get(index_key(pk))
        if phone is not None and phone not in best:
            best[phone] = (pk, apartment_pk)
    return best


def find_booking(phone: str, fields: BookingFields | None = None) -> models.Model | None:
    """The best booking for an already normalized phone, loading only what linking
    needs (pk and the apartment's key): one indexed query."""
    fields = fields or booking_fields()
    apartment_field = fields.apartment_attname.removesuffix("_id")
    return ordered_candidates(fields, phone).only("pk", apartment_field).first()


def get_booking_from_phone(phone: str | None) -> models.Model | None:
    """The booking a message from ``phone`` belongs to, or None.

    ``phone`` may be in any format the site or Twilio uses ("(561) 555-0123",
    "whatsapp:+15615550123"); it is normalized to E.164 first. The choice rule is
    documented in ``ordered_candidates`` and in the README.
    """
    normalized = normalize_phone(phone)
    if normalized is None:
        return None
    fields = booking_fields()
    return ordered_candidates(fields, normalized).first()
