"""The customer's group chat: created once, and each customer message forwarded once.

A customer texts the Twilio number; Twilio puts that in a 1:1 conversation. The app
makes sure a group MMS conversation exists with the customer, the manager and the
assistant, and posts the customer's message there as the assistant, so the manager
sees it on their phone and can answer the whole group.

Exactly once, under retries and concurrency:

* the work for one customer message holds that message's row lock from start to
  finish, so the same task run twice at once does it once; webhooks never lock
  message rows, so the lock never delays Twilio's 5-second budget;
* the group chat is created under a unique name derived from the customer's
  conversation, and the backend turns Twilio's "already exists" answers into the
  existing SID: two different messages racing still leave one group chat;
* the forward is recorded on the source message (``forwarded_sid``) in the same
  transaction as the outbound copy; a retry that finds it does nothing.

One gap is left, and Twilio's API leaves no way to close it: if the message was
posted and the commit that records it then fails, a retry posts it again.
"""

from __future__ import annotations

import datetime
import logging

from django.db import transaction
from django.db.models import F, Q, QuerySet
from django.utils import timezone

from . import get_conversation_model, get_message_model
from .api import ApiError, Participant, get_api_backend
from .conf import convlink_settings
from .models import AbstractTwilioConversation, AbstractTwilioMessage, Direction, ForwardState
from .persistence import save_conversation_to_db
from .phones import customer_phone_from_author, normalize_phone

logger = logging.getLogger(__name__)

UNIQUE_NAME_PREFIX = "convlink-group-"
# Twilio's limit for a message body sent through the API.
MAX_FORWARD_BODY = 1600
MAX_RETRY_DELAY = datetime.timedelta(hours=1)


def wants_forward(conversation: AbstractTwilioConversation, author: str) -> bool:
    """Whether a new message by ``author`` in ``conversation`` goes to the group chat:
    an inbound message from a customer's phone, in a conversation that is not itself
    a group chat (a message in a group chat never makes another group chat)."""
    return (
        bool(convlink_settings.GROUP_CHAT)
        and not conversation.is_group_chat
        and not conversation.unique_name.startswith(UNIQUE_NAME_PREFIX)
        and customer_phone_from_author(author) is not None
    )


def group_chat_unique_name(conversation: AbstractTwilioConversation) -> str:
    return UNIQUE_NAME_PREFIX + conversation.conversation_sid


def _participants(customer_phone: str) -> list[Participant]:
    s = convlink_settings
    manager = normalize_phone(s.MANAGER_PHONE)
    twilio_phone = normalize_phone(s.TWILIO_PHONE)
    if not manager or not twilio_phone:
        raise ApiError("MANAGER_PHONE and TWILIO_PHONE must be set for the group chat.", transient=False)
    for phone in (customer_phone, manager, twilio_phone):
        # Group MMS exists on US and Canadian (+1) long codes only; Twilio would
        # refuse the conversation, every time.
        if not phone.startswith("+1"):
            raise ApiError(f"Group MMS serves +1 numbers only; {phone} is not one.", transient=False)
    return [
        Participant(address=customer_phone),
        Participant(address=manager),
        Participant(identity=s.ASSISTANT_IDENTITY, projected_address=twilio_phone),
    ]


def ensure_group_chat(conversation: AbstractTwilioConversation) -> AbstractTwilioConversation:
    """The customer's group chat row, created at Twilio and stored if it does not exist.

    Call inside a transaction. The group chat row is linked to the same booking and
    apartment as the customer's conversation.
    """
    Conversation = type(conversation)
    if conversation.group_chat_id is not None:
        return Conversation._default_manager.get(pk=conversation.group_chat_id)
    if not conversation.customer_phone:
        raise ApiError("The conversation has no customer phone yet.", transient=False)
    unique_name = group_chat_unique_name(conversation)
    friendly_name = f"{conversation.customer_phone} with the manager and assistant"
    sid = get_api_backend().create_group_chat(
        unique_name=unique_name,
        friendly_name=friendly_name,
        attributes={"customer_conversation_sid": conversation.conversation_sid,
                    "customer_phone": conversation.customer_phone},
        messaging_service_sid=convlink_settings.MESSAGING_SERVICE_SID,
        participants=_participants(conversation.customer_phone),
    )
    group, _ = save_conversation_to_db(sid, friendly_name=friendly_name, unique_name=unique_name)
    now = timezone.now()
    Conversation._default_manager.filter(pk=group.pk).update(
        is_group_chat=True, customer_phone=conversation.customer_phone,
        booking_id=conversation.booking_id, apartment_id=conversation.apartment_id,
        link_method=conversation.link_method, linked_at=conversation.linked_at,
        booking_lookup_at=now, updated_at=now,
    )
    Conversation._default_manager.filter(pk=conversation.pk).update(group_chat=group, updated_at=now)
    conversation.group_chat = group
    logger.info("Group chat %s created for conversation %s", sid, conversation.conversation_sid)
    return group


def forward_customer_message(message_pk: int) -> str:
    """Make sure the customer's group chat exists and the message is posted there once.

    Returns the SID of the copy in the group chat ("" when the message needs no
    forward). Raises ApiError after recording it on the conversation and the message.
    """
    Message, Conversation = get_message_model(), get_conversation_model()
    try:
        with transaction.atomic():
            message = Message._default_manager.select_for_update().get(pk=message_pk)
            done = ("", ForwardState.SENT, ForwardState.PERMANENT)
            if message.forwarded_sid or message.forward_state in done:
                return message.forwarded_sid
            conversation = Conversation._default_manager.get(pk=message.conversation_id)
            if conversation.is_group_chat or Conversation._default_manager.filter(
                    group_chat_id=conversation.pk).exists():
                # A group chat row that a webhook stored before the task marked it.
                Message._default_manager.filter(pk=message.pk).update(forward_state="")
                return ""
            group = ensure_group_chat(conversation)
            sid = _post_copy(message, group)
            Message._default_manager.filter(pk=message.pk).update(
                forward_state=ForwardState.SENT, forwarded_sid=sid, updated_at=timezone.now())
            if conversation.group_chat_attempts or conversation.group_chat_error:
                Conversation._default_manager.filter(pk=conversation.pk).update(
                    group_chat_error="", group_chat_error_code=None, group_chat_attempts=0,
                    group_chat_retry_at=None)
            return sid
    except ApiError as error:
        record_failure(message_pk, error)
        raise


def _post_copy(message: AbstractTwilioMessage, group: AbstractTwilioConversation) -> str:
    assistant = convlink_settings.ASSISTANT_IDENTITY
    body = message.body
    if len(body) > MAX_FORWARD_BODY:
        body = body[: MAX_FORWARD_BODY - 1] + "…"
    media_sid = next((m.get("Sid", "") for m in message.media if isinstance(m, dict)), "")
    attributes = {"forwarded_from": message.message_sid}
    sid = get_api_backend().send_message(conversation_sid=group.conversation_sid, author=assistant,
                                         body=body, media_sid=media_sid, attributes=attributes)
    # Messages made through the REST API fire no webhook: the copy is stored here.
    type(message)._default_manager.create(
        message_sid=sid, conversation=group, author=assistant, body=body,
        direction=Direction.OUTBOUND, source="API", attributes=attributes, media=message.media,
        date_created=timezone.now(),
    )
    return sid


def record_failure(message_pk: int, error: ApiError) -> None:
    """Note the failure on the conversation (error, code, attempts, when to retry) and
    on the message (failed, or permanent when retrying cannot help)."""
    Message, Conversation = get_message_model(), get_conversation_model()
    with transaction.atomic():
        message = Message._default_manager.select_for_update().get(pk=message_pk)
        conversation = Conversation._default_manager.select_for_update().get(pk=message.conversation_id)
        attempts = conversation.group_chat_attempts + 1
        permanent = not error.transient or attempts >= convlink_settings.GROUP_CHAT_MAX_ATTEMPTS
        retry_at = None if permanent else timezone.now() + retry_delay(attempts)
        Conversation._default_manager.filter(pk=conversation.pk).update(
            group_chat_error=str(error)[:2000], group_chat_error_code=error.code,
            group_chat_attempts=F("group_chat_attempts") + 1, group_chat_retry_at=retry_at)
        Message._default_manager.filter(pk=message.pk).update(
            forward_state=ForwardState.PERMANENT if permanent else ForwardState.FAILED)
    log = logger.error if permanent else logger.warning
    log("Group chat for %s failed (attempt %d%s): %s", conversation.conversation_sid, attempts,
        ", giving up" if permanent else f", retry after {retry_at:%H:%M:%S}", error)


def retry_delay(attempts: int) -> datetime.timedelta:
    """Exponential backoff from GROUP_CHAT_RETRY_DELAY seconds, at most an hour."""
    delay = datetime.timedelta(seconds=convlink_settings.GROUP_CHAT_RETRY_DELAY * 2 ** (attempts - 1))
    return min(delay, MAX_RETRY_DELAY)


def due_for_retry(retry_before: datetime.datetime, pending_before: datetime.datetime) -> QuerySet:
    """Messages whose forward should run again: failed ones whose retry time is before
    ``retry_before``, and pending ones created before ``pending_before`` (their task
    was lost: a worker killed, an enqueue that failed)."""
    return get_message_model()._default_manager.filter(
        Q(forward_state=ForwardState.FAILED, conversation__group_chat_retry_at__lte=retry_before)
        | Q(forward_state=ForwardState.PENDING, created_at__lte=pending_before)
    ).order_by("pk")
