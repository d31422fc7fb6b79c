"""Delivery receipts (``onDeliveryUpdated``): what became of each message at each
recipient, and the one status the message shows for all of them.

Twilio sends one stream of receipts per SMS or WhatsApp recipient of a message (a
group MMS message has several: the customer and the manager). Each message keeps the
last receipt of each recipient, keyed by participant SID, in ``delivery_receipts``,
and a summary in ``delivery_status``, ``delivery_error_code`` and
``delivery_updated_at`` (``summarize``):

* failed or undelivered when any recipient's last receipt is: ``failed`` when one
  is failed (Twilio could not send it), else ``undelivered`` (the carrier could not
  deliver it), with that recipient's error code;
* else the least advanced status of the recipients, ``sent`` < ``delivered`` <
  ``read``: "delivered" means delivered to everyone.

Receipts arrive retried, out of order, and before their message (``WaitingReceipt``):

* a receipt older (DateUpdated) than the one stored for its recipient changes nothing,
  and so does the same receipt twice; of two with the same time the further one
  stays (a failure, then ``read``, ``delivered``, ``sent``);
* a receipt whose message is not stored yet waits in ``WaitingReceipt`` and is
  applied when the message row appears (``apply_waiting``), even when the two are
  processed at the same moment (``settle_after_commit``).

``message_status_changed`` is sent after the commit when the summary (status or
error code) changes. Nothing here opens a transaction: ``handlers`` owns it.
"""

from __future__ import annotations

import datetime
import logging
from collections.abc import Iterable
from typing import Any

from django.db import connections, transaction
from django.db.models import QuerySet
from django.utils import timezone

from .accounts import account_owner, may_skip_account_checks
from .choices import Direction, OptOutMethod, ReceiptStatus
from .db import run_with_retries
from .events import ReceiptEvent
from .models import AbstractTwilioConversation, AbstractTwilioMessage, WaitingReceipt, unfinished_cutoff
from .optouts import OPTED_OUT_ERROR, record_opt_out
from .signals import message_status_changed, send_after_commit
from .swappable import get_message_model

logger = logging.getLogger(__name__)

FAILURES = (ReceiptStatus.FAILED, ReceiptStatus.UNDELIVERED)
# How far a status has come, for the summary (the least advanced) and for two
# receipts of one recipient with the same time (the further one stays).
PROGRESS = {ReceiptStatus.SENT: 0, ReceiptStatus.DELIVERED: 1, ReceiptStatus.READ: 2,
            ReceiptStatus.UNDELIVERED: 3, ReceiptStatus.FAILED: 4}
# What the common error codes mean, for the admin and the logs (Twilio's docs).
ERROR_MEANINGS = {
    30003: "Unreachable: the phone is off or out of coverage.",
    30005: "Unknown number: it does not exist or is no longer in service.",
    30006: "Landline or unreachable carrier: this number cannot receive texts.",
    30007: "Filtered by the carrier as spam.",
    30008: "Unknown error at the carrier.",
    21610: "The customer opted out (texted STOP); nothing more can be sent until they text START.",
    63016: "WhatsApp: outside the 24-hour window, only a template message may be sent.",
}


def error_meaning(code: int | None) -> str:
    """What Twilio's error ``code`` means in words, "" for codes not listed."""
    return ERROR_MEANINGS.get(code or 0, "")


def entry(event: ReceiptEvent) -> dict[str, Any]:
    """A recipient's receipt as ``delivery_receipts`` stores it (JSON)."""
    when = event.date_updated or timezone.now()
    return {"status": event.status, "error_code": event.error_code,
            "updated": when.isoformat(), "receipt_sid": event.receipt_sid}


def _when(receipt: dict[str, Any]) -> datetime.datetime | None:
    try:
        return datetime.datetime.fromisoformat(receipt["updated"])
    except (KeyError, TypeError, ValueError):
        return None


def _supersedes(new: dict[str, Any], stored: Any) -> bool:
    """Whether ``new`` replaces the ``stored`` receipt of the same recipient."""
    if not isinstance(stored, dict) or stored.get("status") not in PROGRESS:
        return True
    new_when, stored_when = _when(new), _when(stored)
    if new_when is None or stored_when is None or new_when != stored_when:
        return stored_when is None or (new_when is not None and new_when > stored_when)
    if new["status"] == stored["status"]:
        return False  # the same receipt again (or one saying nothing newer)
    return PROGRESS[new["status"]] > PROGRESS[stored["status"]]


def summarize(receipts: dict[str, Any]) -> tuple[str, int | None, datetime.datetime | None]:
    """(status, error code, newest receipt time) over the recipients' receipts."""
    entries = [r for r in receipts.values() if isinstance(r, dict) and r.get("status") in PROGRESS]
    if not entries:
        return "", None, None
    times = [when for r in entries if (when := _when(r)) is not None]
    newest = max(times) if times else None
    failures = [r for r in entries if r["status"] in FAILURES]
    if failures:
        worst = max(failures, key=lambda r: (PROGRESS[r["status"]], r.get("updated") or ""))
        return worst["status"], worst.get("error_code"), newest
    return min(entries, key=lambda r: PROGRESS[r["status"]])["status"], None, newest


def apply(message: AbstractTwilioMessage, participant_sid: str, receipt: dict[str, Any], *,
          origin: str) -> bool:
    """Apply one recipient's ``receipt`` to a stored (locked) ``message``: store it
    when it supersedes the one stored, update the summary, send
    ``message_status_changed`` after the commit when the summary changed. Returns
    whether anything was written. A receipt with Twilio's opt-out error (21610) in a
    customer's own conversation also opts the customer out (``optouts``): they are
    its only texting recipient."""
    receipts = message.delivery_receipts if isinstance(message.delivery_receipts, dict) else {}
    if not _supersedes(receipt, receipts.get(participant_sid)):
        return False
    receipts = {**receipts, participant_sid: receipt}
    status, error_code, updated = summarize(receipts)
    summary_changed = (status, error_code) != (message.delivery_status, message.delivery_error_code)
    message.delivery_receipts = receipts
    message.delivery_status, message.delivery_error_code = status, error_code
    message.delivery_updated_at = updated
    message.save(update_fields=["delivery_receipts", "delivery_status", "delivery_error_code",
                                "delivery_updated_at", "updated_at"])
    if receipt.get("error_code") == OPTED_OUT_ERROR:
        _opt_out_customer(message, origin)
    if summary_changed:
        if status in FAILURES:
            logger.warning("Message %s %s: error %s %s", message.message_sid, status, error_code,
                           error_meaning(error_code))
        send_after_commit(message_status_changed, type(message), using=message._state.db,
                                  message=message, status=status, error_code=error_code, origin=origin)
    return True


def _opt_out_customer(message: AbstractTwilioMessage, origin: str) -> None:
    conversation = message.conversation
    if conversation.is_group_chat or not conversation.customer_phone:
        # A group chat has two texting recipients (customer and manager); the receipt
        # names a participant, not a phone, so which one refused is not known here.
        logger.warning("Message %s was refused with error 21610 (opted out) in group chat %s",
                       message.message_sid, conversation.conversation_sid)
        return
    record_opt_out(conversation.customer_phone, how=OptOutMethod.ERROR, detail=str(OPTED_OUT_ERROR),
                   origin=origin)


def lock_message(message_sid: str) -> AbstractTwilioMessage | None:
    """The stored message ``message_sid`` with its conversation, the message row locked
    for this transaction (two recipients' receipts at once must both be kept), or None."""
    # A slice, not first(): the SID is unique, and first()'s ORDER BY costs compiling.
    for message in _locked_messages().filter(message_sid=message_sid)[:1]:
        return message
    return None


def _locked_messages() -> QuerySet:
    """Messages with their conversation, only the message rows locked where the
    database can say so: a receipt must not wait for the conversation's events."""
    manager = get_message_model()._default_manager
    messages = manager.select_related("conversation")
    if connections[manager.db].features.has_select_for_update_of:
        return messages.select_for_update(of=("self",))
    return messages.select_for_update()


def park(event: ReceiptEvent, *, origin: str) -> None:
    """Keep a receipt whose message is not stored yet, for ``apply_waiting``; look
    again after the commit, for a message stored meanwhile (``settle_after_commit``)."""
    WaitingReceipt.objects.create(message_sid=event.message_sid, participant_sid=event.participant_sid,
                                  account_sid=event.account_sid, receipt=entry(event))
    logger.info("Receipt for %s arrived before its message; it waits for it", event.message_sid)
    settle_after_commit([event.message_sid], origin=origin)


def may_get_receipts(message: AbstractTwilioMessage, conversation: AbstractTwilioConversation) -> bool:
    """Whether Twilio may send receipts for ``message``: ours (outbound: they go to
    the customer's phone), or anyone's in a group chat (each goes to the other
    phones). A customer's text in their own conversation reaches no other phone."""
    return message.direction == Direction.OUTBOUND or conversation.is_group_chat


def settle_after_commit(message_sids: list[str], *, origin: str, using: str | None = None) -> None:
    """Once the current transaction commits, apply the receipts still waiting for
    these messages whose rows exist by then.

    Why after the commit: a receipt and its message can be in flight at once, each
    transaction unable to see the other's uncommitted row, so the receipt waits and
    the message's own look for waiting receipts finds none. Each side looks again
    after its commit, and of two commits one is the later: its look sees the other's
    row. The message side asks only for messages that may get receipts
    (``may_get_receipts``): one SELECT, after the webhook's transaction.
    """
    def settle() -> None:
        try:
            if WaitingReceipt.objects.filter(message_sid__in=message_sids).exists():
                run_with_retries(lambda: _apply_waiting_atomically(message_sids, origin),
                                 what=f"applying waiting receipts of {', '.join(message_sids)}")
        except Exception:
            # The receipts stay waiting; the next look (the message's next receipt,
            # its row's arrival) applies them. Nothing else must fail for it.
            logger.exception("Could not apply the receipts waiting for %s", ", ".join(message_sids))

    transaction.on_commit(settle, using=using)


def _apply_waiting_atomically(message_sids: list[str], origin: str) -> None:
    with transaction.atomic():
        apply_waiting(message_sids, origin=origin)


def apply_waiting(message_sids: Iterable[str], *, origin: str) -> int:
    """Apply the receipts that arrived before these messages were stored, now that
    their rows exist, and forget them; returns how many were applied. Call in the
    transaction that stored the rows. A receipt signed for another account than its
    message's conversation is dropped (logged), as it would have been refused."""
    sids = list(message_sids)
    waiting = list(WaitingReceipt.objects.filter(message_sid__in=sids).order_by("pk"))
    if not waiting:
        return 0
    messages = {m.message_sid: m for m in _locked_messages().filter(
        message_sid__in={w.message_sid for w in waiting})}
    applied = 0
    for receipt in sorted(waiting, key=lambda w: (w.receipt.get("updated") or "", w.pk)):
        message = messages.get(receipt.message_sid)
        if message is None:
            continue
        if not may_skip_account_checks() and (
                account_owner(receipt.account_sid) != account_owner(message.conversation.account_sid)):
            logger.warning("Dropped a receipt for %s signed for account %s, not the conversation's",
                           receipt.message_sid, receipt.account_sid or "(none)")
        elif apply(message, receipt.participant_sid, receipt.receipt, origin=origin):
            applied += 1
    WaitingReceipt.objects.filter(pk__in=[w.pk for w in waiting if w.message_sid in messages]).delete()
    return applied


def prune_waiting(older_than_days: int, *, dry_run: bool = False) -> int:
    """Delete the receipts that have waited for their message more than
    ``older_than_days``; returns how many (would) go."""
    now = timezone.now()
    # Even with --days 0, not one that may be waiting for a message being stored
    # right now: a delivery that young is not unfinished yet either.
    cutoff = min(now - datetime.timedelta(days=older_than_days), unfinished_cutoff(now))
    old = WaitingReceipt.objects.filter(received_at__lt=cutoff)
    return old.count() if dry_run else old.delete()[0]
