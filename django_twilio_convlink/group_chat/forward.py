"""The forward: the customer's group chat created once, each customer message posted
there once, and what happens when that fails.

Exactly once, under retries, concurrency and lost answers, and no lock held while
Twilio is called (a webhook of the same conversation must never wait for Twilio):

1. claim: a short transaction marks the message ``sending`` until a deadline; a
   second run of the same task finds the claim and leaves;
2. the group chat is created under a unique name derived from the customer's
   conversation, and the backend turns Twilio's "already exists" answers into the
   existing SID, so two runs for two messages still make one group chat; it is then
   stored in a short transaction of its own;
3. the copy is posted with ``forwarded_from`` in its attributes. A run that follows a
   failed or abandoned one first looks for copies already in the group chat (a
   timeout may hide a post that Twilio did store) and posts only what is missing;
4. a short transaction stores the copy and marks the message ``sent``.

Failures are counted per message (``forward_attempts``, ``forward_retry_at``); the
conversation shows the last one. A run that dies without recording anything leaves
the claim to expire, after which the message is due again.
"""

from __future__ import annotations

import datetime
import logging
from typing import Any

from django.db import DatabaseError, transaction
from django.db.models import F, Q, QuerySet
from django.utils import timezone

from .. import get_conversation_model, get_message_model, receipts, signals
from ..choices import Direction, ForwardState, OptOutMethod
from ..conf import convlink_settings
from ..db import run_with_retries
from ..exceptions import ApiError, CustomerOptedOut
from ..models import AbstractTwilioConversation, AbstractTwilioMessage
from ..optouts import OPTED_OUT_ERROR, record_opt_out, refuse_if_opted_out
from ..persistence import save_conversation_to_db
from .remote import create_group_chat, group_chat_unique_name, media_items, parts, post_copies

logger = logging.getLogger(__name__)

MAX_RETRY_DELAY = datetime.timedelta(hours=1)
UNFINISHED = (ForwardState.PENDING, ForwardState.SENDING, ForwardState.FAILED)


def drop_forward(Message: type[AbstractTwilioMessage], message_pk: Any, **only: Any) -> None:
    """The message will not be forwarded: no state, no retry time (``only``: if it is so)."""
    Message._default_manager.filter(pk=message_pk, **only).update(forward_state="", forward_retry_at=None)


def claim_duration() -> datetime.timedelta:
    # Room for the three calls a forward may make, each up to API_TIMEOUT.
    return datetime.timedelta(seconds=max(60, 4 * int(convlink_settings.API_TIMEOUT)))


def ensure_group_chat(conversation: AbstractTwilioConversation) -> AbstractTwilioConversation:
    """The customer's group chat row, created at Twilio and stored if it does not exist.

    Call outside a transaction: the Twilio call holds no lock. The group chat row is
    linked to the same booking and apartment as the customer's conversation.
    """
    Conversation = type(conversation)
    if conversation.group_chat_id is not None:
        return Conversation._default_manager.get(pk=conversation.group_chat_id)
    friendly_name = f"{conversation.customer_phone} with the manager and assistant"
    sid = create_group_chat(conversation, friendly_name)
    unique_name = group_chat_unique_name(conversation)
    # Runs for the customer's other messages may store the same new row at the same
    # moment; a deadlock victim simply tries again.
    return run_with_retries(lambda: _store_group_chat(conversation, sid, friendly_name, unique_name),
                            what=f"storing group chat {sid}")


def _store_group_chat(conversation: AbstractTwilioConversation, sid: str, friendly_name: str,
                      unique_name: str) -> AbstractTwilioConversation:
    with transaction.atomic():
        group, _ = save_conversation_to_db(sid, friendly_name=friendly_name, unique_name=unique_name)
        attach_group_chat(conversation, group)
    logger.info("Group chat %s ready for conversation %s", sid, conversation.conversation_sid)
    return group


def attach_group_chat(conversation: AbstractTwilioConversation, group: AbstractTwilioConversation) -> None:
    """Mark ``group`` as ``conversation``'s group chat, with its customer, booking and
    link: when the app has just created it, and when history brings in one it made
    before (``sync_twilio_conversations``, by its unique name). Call in a transaction."""
    now = timezone.now()
    # Through the instance, not a queryset update: it is the one message_received
    # hands the receivers of the copies, and must say what is stored.
    marks = {"is_group_chat": True, "customer_phone": conversation.customer_phone,
             "booking_id": conversation.booking_id, "apartment_id": conversation.apartment_id,
             "link_method": conversation.link_method, "linked_at": conversation.linked_at,
             "booking_lookup_at": now}
    for name, value in marks.items():
        setattr(group, name, value)
    group.save(update_fields=[name.removesuffix("_id") for name in marks] + ["updated_at"])
    type(conversation)._default_manager.filter(pk=conversation.pk).update(group_chat=group, updated_at=now)
    conversation.group_chat = group


def _claim(message_pk: int) -> tuple[AbstractTwilioMessage, AbstractTwilioConversation, bool] | None:
    """Take the message for this run, or None when there is nothing to do (done,
    permanent, not forwardable, or another run holds an unexpired claim). The third
    value says whether an earlier run may have posted already."""
    Message, Conversation = get_message_model(), get_conversation_model()
    now = timezone.now()
    with transaction.atomic():
        message = Message._default_manager.select_for_update().get(pk=message_pk)
        if message.forward_state not in UNFINISHED or message.forwarded_sid:
            return None
        if message.forward_state == ForwardState.SENDING and message.forward_retry_at \
                and message.forward_retry_at > now:
            return None
        if message.date_removed is not None and message.forward_state != ForwardState.SENDING:
            # Taken back by the customer. cancel_forward (after the removal's commit) is
            # the fast path; this is the durable one, for a process that died before it.
            drop_forward(Message, message.pk)
            return None
        conversation = Conversation._default_manager.get(pk=message.conversation_id)
        # The lookup is in a Q: django-stubs' plugin (as pinned in setup.cfg) crashes
        # checking a keyword lookup on a ForeignKey("self") of an abstract model,
        # which has no primary key.
        if conversation.is_group_chat or Conversation._default_manager.filter(
                Q(group_chat_id=conversation.pk)).exists():
            # A group chat row that a webhook stored before the task marked it.
            drop_forward(Message, message.pk)
            return None
        # Only a pending message has never been tried: the claim marks it sending before
        # any Twilio call, every failure leaves it failed or permanent, and reopen()
        # makes it failed. The attempt count says nothing: reopen() starts it again at
        # zero, yet the runs before may have posted copies (a lost answer, the first
        # photo of an MMS whose second one was refused).
        resumed = message.forward_state != ForwardState.PENDING
        Message._default_manager.filter(pk=message.pk).update(
            forward_state=ForwardState.SENDING, forward_retry_at=now + claim_duration())
    return message, conversation, resumed


def forward_customer_message(message_pk: int) -> str:
    """Make sure the customer's group chat exists and the message is posted there once.

    Returns the SID of the (first) copy in the group chat, or "" when this run had
    nothing to do. Raises ApiError after recording it on the message and the
    conversation; a database error or a bug is recorded the same way and re-raised.
    """
    claimed = _claim(message_pk)
    if claimed is None:
        return get_message_model()._default_manager.filter(pk=message_pk).values_list(
            "forwarded_sid", flat=True).first() or ""
    message, conversation, resumed = claimed
    try:
        # Asked again right before each call to Twilio: the customer may have texted
        # STOP after this message was queued, or while the group chat was made.
        refuse_if_opted_out(conversation.customer_phone)
        group = ensure_group_chat(conversation)
        refuse_if_opted_out(conversation.customer_phone)
        try:
            sids = post_copies(message, group, resumed)
        except ApiError as error:
            if error.status == 404:
                # The group chat is gone at Twilio (deleted, closed and purged): forget
                # it so that the retry makes a new one.
                type(conversation)._default_manager.filter(pk=conversation.pk).update(group_chat=None)
                error.transient = True
            raise
        _record_sent(message, conversation, group, sids)
        return sids[0]
    except CustomerOptedOut as refused:
        skip(message, str(refused))
        return ""
    except ApiError as error:
        if error.code == OPTED_OUT_ERROR and conversation.customer_phone:
            # Twilio knows of an opt-out the app did not (a STOP that never reached
            # the conversation): on record from now on, and this message skipped.
            run_with_retries(lambda: record_opt_out(conversation.customer_phone, how=OptOutMethod.ERROR,
                                                    detail=str(OPTED_OUT_ERROR), origin="group_chat"),
                             what=f"opting out {conversation.customer_phone}")
            skip(message, str(CustomerOptedOut(conversation.customer_phone,
                                               detail=f"Twilio error {OPTED_OUT_ERROR}")))
            return ""
        record_failure(message, conversation, error)
        raise
    except DatabaseError as exc:
        record_failure(message, conversation, ApiError(f"database: {exc}", transient=True))
        raise
    except Exception as exc:
        record_failure(message, conversation, ApiError(f"{type(exc).__name__}: {exc}", transient=False))
        raise


def _record_sent(message: AbstractTwilioMessage, conversation: AbstractTwilioConversation,
                 group: AbstractTwilioConversation, sids: list[str]) -> None:
    Message, Conversation = type(message), type(conversation)
    now = timezone.now()
    assistant = convlink_settings.ASSISTANT_IDENTITY
    copies = [
        # django-stubs types the swappable foreign key by the settings mypy runs with
        # (the test site's ChatConversation); the app only knows the abstract model.
        Message(message_sid=sid, conversation=group, author=assistant, body=body,  # type: ignore[misc]
                direction=Direction.OUTBOUND, source="API", date_created=now,
                attributes={"forwarded_from": message.message_sid, **({"part": part} if part else {})},
                media=[m for m in media_items(message) if m["Sid"] == media_sid])
        for part, (sid, (body, media_sid)) in enumerate(zip(sids, parts(message), strict=True))
    ]
    with transaction.atomic():
        # Messages made through the REST API fire no webhook: the copies are stored here,
        # and announced like every new row. A copy already stored (an echo, were a site
        # to enable webhooks for API messages) is neither stored nor announced twice.
        stored = set(Message._default_manager.filter(message_sid__in=sids).values_list(
            "message_sid", flat=True))
        new = Message._default_manager.bulk_create([c for c in copies if c.message_sid not in stored])
        for copy in new:
            signals.send_after_commit(signals.message_received, Message, using=copy._state.db,
                                      message=copy, conversation=group, origin="group_chat")
        if new:
            # Twilio may report a copy delivered before this transaction stores it.
            receipts.settle_after_commit([c.message_sid for c in new], origin="group_chat")
        Message._default_manager.filter(pk=message.pk).update(
            forward_state=ForwardState.SENT, forwarded_sid=sids[0], forward_retry_at=None, updated_at=now)
        Conversation._default_manager.filter(pk=conversation.pk).exclude(
            group_chat_error="", group_chat_attempts=0).update(
            group_chat_error="", group_chat_error_code=None, group_chat_attempts=0, group_chat_retry_at=None)


def skip(message: AbstractTwilioMessage, reason: str) -> None:
    """The message is not forwarded, on purpose (its customer has opted out): recorded
    as skipped with the reason, and never retried by itself (``reopen`` does, on
    ``retry_group_chats --include-permanent``)."""
    type(message)._default_manager.filter(pk=message.pk).update(
        forward_state=ForwardState.SKIPPED, forward_skip_reason=reason[:255], forward_retry_at=None,
        updated_at=timezone.now())
    logger.info("Forward of %s to the group chat skipped: %s", message.message_sid, reason)


def record_failure(message: AbstractTwilioMessage, conversation: AbstractTwilioConversation,
                   error: ApiError) -> None:
    """Count the failure on the message (and schedule its retry, or give up) and show
    it on the conversation."""
    attempts = message.forward_attempts + 1
    permanent = not error.transient or attempts >= convlink_settings.GROUP_CHAT_MAX_ATTEMPTS
    retry_at = None if permanent else timezone.now() + retry_delay(attempts)
    try:
        with transaction.atomic():
            type(message)._default_manager.filter(pk=message.pk).update(
                forward_state=ForwardState.PERMANENT if permanent else ForwardState.FAILED,
                forward_attempts=attempts, forward_retry_at=retry_at)
            type(conversation)._default_manager.filter(pk=conversation.pk).update(
                group_chat_error=str(error)[:2000], group_chat_error_code=error.code,
                group_chat_attempts=F("group_chat_attempts") + 1, group_chat_retry_at=retry_at)
    except DatabaseError:
        # The claim expires on its own and makes the message due again.
        logger.exception("Could not record the forward failure of %s", message.message_sid)
    log = logger.error if permanent else logger.warning
    log("Forward of %s to the group chat failed (attempt %d%s): %s", message.message_sid, attempts,
        ", giving up" if permanent else f", retry after {retry_at:%H:%M:%S}", error)
    message.forward_attempts, message.forward_retry_at = attempts, retry_at


def retry_delay(attempts: int) -> datetime.timedelta:
    """Exponential backoff from GROUP_CHAT_RETRY_DELAY seconds, at most an hour."""
    delay = datetime.timedelta(seconds=convlink_settings.GROUP_CHAT_RETRY_DELAY * 2 ** (attempts - 1))
    return min(delay, MAX_RETRY_DELAY)


def due_for_retry(now: datetime.datetime | None = None, *, include_permanent: bool = False) -> QuerySet:
    """Unfinished forwards whose time has come: failed ones after their backoff,
    pending ones whose task seems lost, sending ones whose run seems dead; with
    ``include_permanent``, the ones given up on too."""
    now = now or timezone.now()
    due = Q(forward_state__in=UNFINISHED, forward_retry_at__lte=now)
    if include_permanent:
        due |= Q(forward_state__in=[ForwardState.PERMANENT, ForwardState.SKIPPED])
    return get_message_model()._default_manager.filter(due).order_by("pk")


def reopen(message_pks: list[int]) -> int:
    """Make permanent failures and skipped forwards due again (after fixing
    credentials, after an opt-in): failed, with a fresh count of attempts. The next
    run still looks for the copies earlier runs posted before posting (see _claim),
    and skips again a customer still opted out; returns how many were reopened."""
    return get_message_model()._default_manager.filter(
        pk__in=message_pks, forward_state__in=[ForwardState.PERMANENT, ForwardState.SKIPPED]).update(
        forward_state=ForwardState.FAILED, forward_attempts=0, forward_retry_at=timezone.now(),
        forward_skip_reason="")
