"""From a phone number to the site's booking: settings-driven, indexed, deterministic.

The site names its booking model and the ORM path to the customer's phone in
settings; ``BookingFields`` resolves those names once per call into what the
queries need. Phones are compared through the ``BookingPhone`` index (one E.164 row
per booking), so a lookup is one indexed query whatever format the site stores.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import Any

from django.core.exceptions import FieldDoesNotExist, ImproperlyConfigured
from django.db import models
from django.db.models import Case, F, IntegerField, Q, Value, When
from django.db.models.functions import Cast
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


def booking_keys(fields: BookingFields, phone: str) -> models.QuerySet | list[Any]:
    """The primary keys of the bookings indexed under ``phone``.

    For integer keys (nearly every site) a subquery casting the stored text back, so
    the lookup stays one statement; for other key types (UUIDs) a list, one more
    query, because their text form differs per database.
    """
    keys = BookingPhone.objects.filter(phone=phone)
    pk_field = fields.model._meta.pk
    if isinstance(pk_field, models.IntegerField | models.AutoField):
        return keys.values(key=Cast("booking_key", output_field=models.BigIntegerField()))
    return [pk_field.to_python(key) for key in keys.values_list("booking_key", flat=True)]


def ordered_candidates(
    fields: BookingFields, phone: str, today: datetime.date | None = None
) -> models.QuerySet:
    """Bookings for ``phone`` (E.164), best first, as one lazy queryset.

    With start and end fields: only stays overlapping the window, ordered staying now,
    then the soonest upcoming, then the most recent past. Without dates: newest first.
    Ties (two stays at once, two arrivals on the same day) go to the newest booking
    (highest pk), the same rule as the no-dates case.
    """
    qs = fields.model._default_manager.filter(pk__in=booking_keys(fields, phone))
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
