"""Retroactive linking: the site's booking (and tenant) saves, wired without site code.

Receivers are connected in AppConfig.ready() to whatever models BOOKING_MODEL and
BOOKING_PHONE_FIELD name. The work runs after the saving transaction commits (a
rolled-back booking links nothing) and its failures are logged, never raised: a
booking form must not fail because of a conversation.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from django.db import transaction
from django.db.models.signals import post_delete, post_save

from .booking_lookup import booking_fields
from .linking import forget_booking, link_conversations_to_booking, relink_phone_holder

logger = logging.getLogger(__name__)


def _run_after_commit(func: Callable[[Any], int], pk: Any, using: str | None) -> None:
    def run() -> None:
        try:
            func(pk)
        except Exception:
            logger.exception("Linking conversations after saving %s failed", pk)

    transaction.on_commit(run, using=using)


def booking_saved(sender: type, instance: Any, raw: bool = False, **kwargs: Any) -> None:
    if raw:  # loaddata: related rows may not exist yet; rebuild_booking_phones covers it
        return
    _run_after_commit(link_conversations_to_booking, instance.pk, instance._state.db)


def booking_deleted(sender: type, instance: Any, **kwargs: Any) -> None:
    _run_after_commit(forget_booking, instance.pk, instance._state.db)


def phone_holder_saved(sender: type, instance: Any, raw: bool = False, **kwargs: Any) -> None:
    if raw:
        return
    _run_after_commit(relink_phone_holder, instance.pk, instance._state.db)


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

