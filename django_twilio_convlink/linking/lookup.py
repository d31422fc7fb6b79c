"""From a phone number to the site's best booking: indexed, in a window, deterministic.

Phones are compared through the ``BookingPhone`` index (``phone_index``), so a
lookup is one indexed query whatever format the site stores. The choice rule is
``best_first``; ``find_booking`` applies it to one phone, ``best_bookings`` to a
batch of phones in two queries.
"""

from __future__ import annotations

import datetime
from collections.abc import Collection
from typing import Any

from django.core.exceptions import FieldDoesNotExist
from django.db import models
from django.db.models import Case, F, IntegerField, Q, Value, When
from django.utils import timezone

from ..models import BookingPhone
from ..phones import normalize_phone
from .bookings import BookingFields, booking_fields
from .phone_index import booking_keys, index_key


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


def window_q(fields: BookingFields, stay: tuple[str, str], today: datetime.date) -> Q:
    """Bookings whose stay (``fields.stay``) overlaps [today - WINDOW, today + WINDOW]."""
    start, end = stay
    delta = datetime.timedelta(days=fields.window_days)
    return Q(**{
        f"{start}__lte": _bound(fields, start, today + delta),
        f"{end}__gte": _bound(fields, end, today - delta),
    })


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
    if fields.stay is None:
        return qs.order_by("-pk")
    today = today or timezone.localdate()
    start, end = fields.stay
    today_start, today_end = _bound(fields, start, today), _bound(fields, end, today)
    return qs.filter(window_q(fields, fields.stay, today)).annotate(
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
    keys = booking_keys(fields, BookingPhone.objects.filter(phone=phone))
    return best_first(fields, fields.model._default_manager.filter(pk__in=keys), today)


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
    keys = booking_keys(fields, index, stored_keys=phone_of)
    candidates = best_first(fields, fields.model._default_manager.filter(pk__in=keys), today)
    best: dict[str, tuple[Any, Any]] = {}
    for pk, apartment_pk in candidates.values_list("pk", fields.apartment_attname):
        # A booking re-indexed between the two queries may be missing from phone_of:
        # it waits for the next run.
        phone = phone_of.get(index_key(pk))
        if phone is not None and phone not in best:
            best[phone] = (pk, apartment_pk)
    return best


def find_booking(phone: str, fields: BookingFields | None = None, *, whole: bool = False
                 ) -> models.Model | None:
    """The best booking for an already normalized phone: one indexed query. Only what
    linking needs (the pk and the apartment's key) is loaded, unless ``whole``."""
    fields = fields or booking_fields()
    candidates = ordered_candidates(fields, phone)
    if not whole:
        candidates = candidates.only("pk", fields.apartment_attname.removesuffix("_id"))
    return candidates.first()


def get_booking_from_phone(phone: str | None) -> models.Model | None:
    """The booking a message from ``phone`` belongs to, or None.

    ``phone`` may be in any format the site or Twilio uses ("(561) 555-0123",
    "whatsapp:+15615550123"); it is normalized to E.164 first. The choice rule is
    documented in ``best_first`` and in docs/linking.rst.
    """
    normalized = normalize_phone(phone)
    return None if normalized is None else find_booking(normalized, whole=True)
