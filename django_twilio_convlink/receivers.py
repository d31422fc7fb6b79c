"""Retroactive linking: the site's booking (and tenant) saves, wired without site code.

Receivers are connected in AppConfig.ready() to whatever models BOOKING_MODEL and
BOOKING_PHONE_FIELD name. Two steps per save:

* the phone index row is written inside the saving transaction (in a savepoint), so
  a booking and its index entry commit or roll back together;
* linking conversations runs after the commit (a rolled-back booking links nothing).

Failures of either are logged, never raised: a booking form must not fail because of
a conversation.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from django.db import transaction
from django.db.models.signals import post_delete, post_save, pre_delete

from .linking.bookings import booking_fields
from .linking.phone_index import (
    forget_booking,
    index_booking_phone,
    index_holder_bookings,
    unindex_holder_bookings,
)
from .linking.rules import link_conversations_to_booking, relink_phone_holder

logger = logging.getLogger(__name__)


def _index_now(func: Callable[[Any], Any], instance: Any) -> None:
    try:
        with transaction.atomic(using=instance._state.db):
            func(instance.pk)
    except Exception:
        # Broad on purpose: a settings typo or a database hiccup here must cost the
        # site a stale index entry (rebuild_booking_phones fixes it), not a booking.
        logger.exception("Indexing the phone of %s %s failed; run rebuild_booking_phones",
                         type(instance).__name__, instance.pk)


def _link_after_commit(func: Callable[[Any], int], instance: Any) -> None:
    pk, using = instance.pk, instance._state.db

    def run() -> None:
        try:
            func(pk)
        except Exception:
            logger.exception("Linking conversations after saving %s %s failed",
                             type(instance).__name__, pk)

    transaction.on_commit(run, using=using)


def booking_saved(sender: type, instance: Any, raw: bool = False, **kwargs: Any) -> None:
    if raw:  # loaddata: related rows may not exist yet; rebuild_booking_phones covers it
        return
    _index_now(index_booking_phone, instance)
    _link_after_commit(link_conversations_to_booking, instance)


def booking_deleted(sender: type, instance: Any, **kwargs: Any) -> None:
    _index_now(forget_booking, instance)


def phone_holder_saved(sender: type, instance: Any, raw: bool = False, **kwargs: Any) -> None:
    if raw:
        return
    _index_now(index_holder_bookings, instance)
    _link_after_commit(relink_phone_holder, instance)


def phone_holder_deleted(sender: type, instance: Any, **kwargs: Any) -> None:
    # pre_delete: the bookings still point at the tenant, so they can be found; after
    # the delete they are gone (CASCADE) or have no tenant (SET_NULL) and no phone.
    _index_now(unindex_holder_bookings, instance)


def connect() -> None:
    """Connect the receivers for the configured models (called from ready())."""
    fields = booking_fields()
    post_save.connect(booking_saved, sender=fields.model,
                      dispatch_uid="django_twilio_convlink.booking_saved")
    post_delete.connect(booking_deleted, sender=fields.model,
                        dispatch_uid="django_twilio_convlink.booking_deleted")
    if fields.holder_model is not fields.model:
        post_save.connect(phone_holder_saved, sender=fields.holder_model,
                          dispatch_uid="django_twilio_convlink.phone_holder_saved")
        pre_delete.connect(phone_holder_deleted, sender=fields.holder_model,
                           dispatch_uid="django_twilio_convlink.phone_holder_deleted")
