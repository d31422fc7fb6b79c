"""The site's booking model as the settings name it, resolved against ``_meta``.

The site names its booking model and the ORM path to the customer's phone in
settings; ``booking_fields()`` resolves those names once per call into what the
queries need, and the readers below are the only places that read a phone off the
site's own tables.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.db import models

from .. import get_booking_model
from ..conf import convlink_settings
from ..phones import normalize_phone


@dataclass(frozen=True)
class BookingFields:
    """What the settings say about the site's booking model, resolved against _meta."""

    model: type[models.Model]
    phone_path: str  # "tenant__phone": from a booking to the customer's phone
    holder_model: type[models.Model]  # the model that holds the phone (Tenant)
    phone_field: models.Field  # the phone's field on it
    holder_path: str  # "tenant": from a booking to the holder; "" when the booking holds it
    apartment_attname: str  # "apartment_id"
    # (start field, end field) of the stay; None when the site gave no dates, and the
    # newest booking wins.
    stay: tuple[str, str] | None
    window_days: int

    @property
    def integer_keys(self) -> bool:
        """Whether bookings have integer primary keys (nearly every site)."""
        return isinstance(self.model._meta.pk, models.IntegerField | models.AutoField)


def resolve_path(model: type[models.Model], path: str) -> tuple[type[models.Model], models.Field]:
    """Follow an ORM path ("tenant__phone") to (the model holding the last field, the field).

    Raises FieldDoesNotExist or ImproperlyConfigured with the offending part named.
    """
    parts = path.split("__")
    for part in parts[:-1]:
        field = model._meta.get_field(part)
        related = field.related_model
        if field.many_to_many or field.one_to_many or not isinstance(related, type):
            raise ImproperlyConfigured(
                f"{part!r} in {path!r} is not a foreign key or one-to-one field of "
                f"{model._meta.label}."
            )
        model = related
    last = model._meta.get_field(parts[-1])
    if not isinstance(last, models.Field):
        raise ImproperlyConfigured(f"{parts[-1]!r} in {path!r} is a reverse relation of "
                                   f"{model._meta.label}, not one of its fields.")
    return model, last


def booking_fields() -> BookingFields:
    s = convlink_settings
    model = get_booking_model()
    holder_model, phone_field = resolve_path(model, s.BOOKING_PHONE_FIELD)
    apartment = model._meta.get_field(s.BOOKING_APARTMENT_FIELD)
    if not isinstance(apartment, models.Field):  # a reverse relation; E005 reports it
        raise ImproperlyConfigured(f"BOOKING_APARTMENT_FIELD {s.BOOKING_APARTMENT_FIELD!r} is not a field "
                                   f"of {model._meta.label}.")
    return BookingFields(
        model=model,
        phone_path=s.BOOKING_PHONE_FIELD,
        holder_model=holder_model,
        phone_field=phone_field,
        holder_path=s.BOOKING_PHONE_FIELD.rpartition("__")[0],
        apartment_attname=apartment.attname,
        stay=(s.BOOKING_START_FIELD, s.BOOKING_END_FIELD)
        if s.BOOKING_START_FIELD and s.BOOKING_END_FIELD else None,
        window_days=int(s.BOOKING_WINDOW_DAYS),
    )


def booking_phone(fields: BookingFields, booking_pk: Any) -> str | None:
    """The booking's customer phone in E.164 (None: no booking, no phone, not a number)."""
    raw = (fields.model._default_manager.filter(pk=booking_pk)
           .values_list(fields.phone_path, flat=True).first())
    return normalize_phone(raw)


def holder_phone(fields: BookingFields, holder_pk: Any) -> str | None:
    """The phone of a holder (a tenant) in E.164, the same way."""
    raw = (fields.holder_model._default_manager.filter(pk=holder_pk)
           .values_list(fields.phone_field.name, flat=True).first())
    return normalize_phone(raw)


def holder_booking_pks(fields: BookingFields, holder_pk: Any) -> list[Any]:
    """The primary keys of the holder's bookings."""
    return list(fields.model._default_manager.filter(**{fields.holder_path: holder_pk})
                .values_list("pk", flat=True))
