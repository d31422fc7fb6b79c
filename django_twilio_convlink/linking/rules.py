"""The linking rules: when a conversation gets a booking, and which.

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
from functools import partial
from typing import Any

from django.db import transaction
from django.db.models import Model, QuerySet
from django.utils import timezone

from .. import get_conversation_model, signals
from ..models import AbstractTwilioConversation, LinkMethod
from ..phones import normalize_phone
from .bookings import booking_fields, holder_phone
from .lookup import find_booking, window_q

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


def _announce(model: type[Model], conversation_pks: list[Any], booking_pk: Any, apartment_pk: Any,
              method: str) -> None:
    signals.send_after_commit(signals.conversation_linked, model, using=model._default_manager.db,
                              conversation_pks=conversation_pks, booking_pk=booking_pk,
                              apartment_pk=apartment_pk, method=str(method))


def _announce_linked(model: type[Model], phones: list[str], linked_at: Any, method: str) -> None:
    """``conversation_linked`` for every booking the UPDATE of ``phones``' conversations
    stamped with ``linked_at``: one SELECT, and only when someone listens. The timestamp
    is this UPDATE's own (to the microsecond), so it names exactly the rows the UPDATE
    changed; the phones keep the SELECT on the phone index, not the whole table."""
    if not signals.conversation_linked.receivers:
        return
    by_booking: dict[tuple[Any, Any], list[Any]] = {}
    for pk, booking_pk, apartment_pk in model._default_manager.filter(
            customer_phone__in=phones, linked_at=linked_at, link_method=method,
    ).values_list("pk", "booking_id", "apartment_id"):
        by_booking.setdefault((booking_pk, apartment_pk), []).append(pk)
    for (booking_pk, apartment_pk), pks in by_booking.items():
        _announce(model, pks, booking_pk, apartment_pk, method)


def relink_phone(phone: str) -> int:
    """Link the unlinked conversations of ``phone`` (E.164) to its best booking now."""
    fields = booking_fields()
    booking = find_booking(phone, fields)
    if booking is None:
        return 0
    linked = bulk_link(unlinked(phone), [phone], booking.pk, getattr(booking, fields.apartment_attname),
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


def unlinked(phone: str) -> QuerySet:
    """The conversations of ``phone`` that automation may link."""
    # Unlinked means no booking and no admin decision: a manager who cleared a link
    # by hand (link_method=manual, booking empty) has decided, automation stays out.
    return (
        get_conversation_model()._default_manager
        .filter(customer_phone=phone, booking__isnull=True)
        .exclude(link_method=LinkMethod.MANUAL)
    )


def bulk_link(qs: QuerySet, phones: list[str], booking_pk: Any, apartment_pk: Any, method: str) -> int:
    """One UPDATE linking every conversation of ``qs``, all of them conversations of
    ``phones``; returns how many it changed. The keys may be expressions (a CASE on the
    phone, see ``batch._link_batch``)."""
    now = timezone.now()
    linked = qs.update(booking_id=booking_pk, apartment_id=apartment_pk, link_method=method,
                       linked_at=now, booking_lookup_at=now, updated_at=now)
    if linked:
        _announce_linked(qs.model, phones, now, method)
    return linked


def link_conversations_to_booking(booking_pk: Any, method: str = LinkMethod.RETROACTIVE) -> int:
    """Link the booking's customer's unlinked conversations to it, when its stay is
    inside the lookup window. Returns the number of conversations linked.

    Two queries whatever the number of conversations: read the booking, one bulk
    UPDATE.
    """
    fields = booking_fields()
    values = [fields.phone_path, fields.apartment_attname]
    qs = fields.model._default_manager.filter(pk=booking_pk)
    if fields.stay is not None:
        qs = qs.annotate(_convlink_in_window=window_q(fields, fields.stay, timezone.localdate()))
        values.append("_convlink_in_window")
    row = qs.values(*values).first()
    if row is None:
        return 0  # deleted before the commit hook ran
    phone = normalize_phone(row[fields.phone_path])
    if phone is None or (fields.stay is not None and not row["_convlink_in_window"]):
        return 0
    linked = bulk_link(unlinked(phone), [phone], booking_pk, row[fields.apartment_attname], method)
    if linked:
        logger.info("Linked %d conversation(s) of %s to booking %s", linked, phone, booking_pk)
    return linked


def relink_phone_holder(holder_pk: Any) -> int:
    """Link the tenant's unlinked conversations to the best of its bookings (its phone
    may just have changed). Returns the number of conversations linked."""
    phone = holder_phone(booking_fields(), holder_pk)
    return 0 if phone is None else relink_phone(phone)


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
