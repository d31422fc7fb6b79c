"""The app's public signals: what a site connects to, to react to what the app stored.

======================  =============================  ==================================================
signal                  sender                         keyword arguments
======================  =============================  ==================================================
message_received        the concrete message model     ``message``, ``conversation``, ``origin``
message_updated         the concrete message model     ``message``, ``conversation``, ``origin``
message_removed         the concrete message model     ``message``, ``conversation``, ``origin``
conversation_linked     the concrete conversation      ``conversation_pks`` (list), ``booking_pk``,
                        model                          ``apartment_pk``, ``method``
event_received          ``WebhookDelivery``            ``delivery``, ``event_type``, ``params``
delivery_failed         ``WebhookDelivery``            ``delivery``, ``exception``
message_status_changed  the concrete message model     ``message``, ``status``, ``error_code``, ``origin``
customer_opted_out      ``OptOut``                     ``phone``, ``how``, ``origin``
customer_opted_in       ``OptOut``                     ``phone``, ``how``, ``origin``
media_stored            ``StoredMedia``                ``media``, ``message``
======================  =============================  ==================================================

``origin`` says where the change came from: ``"webhook"`` (a live delivery),
``"replay"`` (``replay_twilio_webhooks``, the admin's replay action),
``"group_chat"`` (the copy of a customer's message the app posted into the group
chat and stored itself, or a 21610 answer to it), ``"api"`` (a message the site sent
with ``send_message``), ``"sync"`` (history brought in by ``sync_twilio_conversations``)
or ``"admin"`` (a person, through the admin or ``opt_out``/``opt_in``).
``message_status_changed`` is sent when a delivery receipt changes the message's
summary status or error code (``receipts``); ``customer_opted_out`` and
``customer_opted_in`` when a phone's opt-out state changes (``optouts``: ``how`` is
"keyword", "error" or "admin"); ``media_stored`` when a file a message carried is
in the site's storage (``media``: ``media`` is the ``StoredMedia`` row, ``message``
the message that carried it, None if that row is gone). The instances are safe to
save: ``save()`` writes only the fields changed on them (``models.ChangedFieldsModel``).
``conversation_linked`` is sent whenever conversations got a booking, by any path:
``method`` is ``"automatic"`` (the customer's first message), ``"retroactive"`` (a
booking saved later, ``update_conversation_links``, the admin's relink action) or
``"manual"`` (a person chose the booking); one signal per booking.

The contract, for every signal but ``delivery_failed``:

* sent after the transaction that stored the change commits, never for a change that
  rolled back, and once per change: a redelivery, a concurrent duplicate that lost its
  race, a replay that changes nothing send nothing (``event_received`` is per
  delivery processed, so it comes with every one);
* a receiver that raises is logged (``django_twilio_convlink.signals``, ERROR, with
  its traceback) and changes nothing else: the rows stay, the webhook still answers
  200, the other receivers still run;
* with no receiver connected, sending costs one attribute check: no callback is
  registered, no query is made.

``delivery_failed`` is sent when processing a delivery raised (the 500 path, a failed
replay), after the failure is recorded on the row; the event's transaction has
rolled back by then.

Django signals are at most once: a process that dies between the commit and the
callback never sends. A site that must not miss a message pairs its receiver with a
periodic sweep over the rows (the documentation's Signals page, "At most once").
"""

from __future__ import annotations

import logging
from typing import Any

from django.db import transaction
from django.dispatch import Signal

# The origin of what ``sync_twilio_conversations`` brings in from Twilio's API: history,
# which the write path's insert steps store but do not act on (no forward, no
# download, no opt-out by an old keyword).
HISTORY = "sync"

logger = logging.getLogger(__name__)

#: A new message row was stored, inbound or outbound (check ``message.direction``; a
#: message whose first news was its removal arrives with ``message.is_removed``).
#: Sender: the concrete message model; arguments ``message``, ``conversation``,
#: ``origin``. A customer's message is announced before its group chat copy.
message_received = Signal()
#: An ``onMessageUpdated`` changed a stored message (a redelivered or older update
#: sends nothing). Sender: the concrete message model; ``message``,
#: ``conversation``, ``origin``.
message_updated = Signal()
#: An ``onMessageRemoved`` marked a stored message removed (the row and its body are
#: kept). Sender: the concrete message model; ``message``, ``conversation``,
#: ``origin``.
message_removed = Signal()
#: Conversations got a booking, by any path. Sender: the concrete conversation model;
#: ``conversation_pks`` (a list), ``booking_pk``, ``apartment_pk``, ``method``:
#: ``"automatic"`` (the customer's first message found it), ``"retroactive"`` (a
#: booking or tenant saved later, ``update_conversation_links``, the admin's relink
#: action) or ``"manual"`` (a person chose it in the admin; code that sets a link with
#: ``linking.link_manually`` calls ``linking.manual_link_saved(conversation)`` after
#: saving). The admin announces a manual link when the booking changes, not when only
#: the apartment does. One signal per booking: relinking 100,000 conversations sends
#: one per booking, and costs a query only while a receiver is connected.
conversation_linked = Signal()
#: Every signed delivery processed, including the event types the app does not store
#: (``onParticipantAdded``, ...). Sender: ``WebhookDelivery``; ``delivery``,
#: ``event_type``, ``params`` (the delivery's form, as Twilio sent it).
event_received = Signal()
#: Processing a delivery raised (the webhook's 500, a failed replay); the delivery row
#: holds the error and nothing of the event was written. Sender: ``WebhookDelivery``;
#: ``delivery``, ``exception``.
delivery_failed = Signal()
#: A delivery receipt changed the message's summary ``status`` or ``error_code`` (a
#: receipt that changes neither sends nothing). Sender: the concrete message model;
#: ``message``, ``status``, ``error_code``, ``origin``.
message_status_changed = Signal()
#: A phone opted out. Sender: ``OptOut``; ``phone`` (E.164), ``how`` (``"keyword"``,
#: ``"error"`` or ``"admin"``), ``origin``.
customer_opted_out = Signal()
#: A phone opted back in. Sender: ``OptOut``; ``phone``, ``how``, ``origin``.
customer_opted_in = Signal()
#: A file a message carried is in the site's storage, once per file whatever runs the
#: download. Sender: ``StoredMedia``; ``media`` (its ``StoredMedia`` row),
#: ``message`` (the message that carried it, None if that row is gone).
media_stored = Signal()


def send_after_commit(signal: Signal, sender: Any, *, using: str | None = None, **kwargs: Any) -> None:
    """Send ``signal`` once the current transaction commits (at once outside one),
    and not at all if it rolls back: Django drops the on_commit callbacks of a
    rolled-back atomic block, savepoints included, which is what makes a lost race
    or a deadlock victim's first attempt send nothing."""
    if not signal.receivers:  # nothing listens, nothing costs
        return
    transaction.on_commit(lambda: send_robust(signal, sender, **kwargs), using=using)


def send_robust(signal: Signal, sender: Any, **kwargs: Any) -> None:
    """Send ``signal`` now; a receiver that raises is logged and the others still run."""
    if not signal.receivers:
        return
    for receiver, result in signal.send_robust(sender, **kwargs):
        if isinstance(result, Exception):
            logger.error("Receiver %s of %s raised", getattr(receiver, "__qualname__", receiver),
                         _name(signal), exc_info=(type(result), result, result.__traceback__))


def _name(signal: Signal) -> str:
    for name, value in globals().items():
        if value is signal:
            return name
    return repr(signal)
