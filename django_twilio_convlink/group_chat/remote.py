"""The group chat's Twilio calls: who is in it, creating it, posting a message's
copies. Through the configured API backend (``api``), which turns every Twilio
failure into ``ApiError``; nothing here touches the database."""

from __future__ import annotations

from typing import Any

from ..api import Participant, get_api_backend
from ..conf import convlink_settings
from ..exceptions import ApiError
from ..models import AbstractTwilioConversation, AbstractTwilioMessage
from ..phones import normalize_phone

UNIQUE_NAME_PREFIX = "convlink-group-"
# Twilio's limit for a message body sent through the API.
MAX_FORWARD_BODY = 1600


def group_chat_unique_name(conversation: AbstractTwilioConversation) -> str:
    return UNIQUE_NAME_PREFIX + conversation.conversation_sid


def participants(customer_phone: str) -> list[Participant]:
    """The customer, the manager and the assistant (projected onto the Twilio
    number). Raises a permanent ApiError when the settings or the phones cannot make
    a group MMS."""
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


def create_group_chat(conversation: AbstractTwilioConversation, friendly_name: str) -> str:
    """Create the customer's group chat at Twilio (or find it: the backend answers
    Twilio's "already exists" with the existing SID) and return its SID."""
    if not conversation.customer_phone:
        raise ApiError("The conversation has no customer phone yet.", transient=False)
    sid: str = get_api_backend().create_group_chat(
        unique_name=group_chat_unique_name(conversation),
        friendly_name=friendly_name,
        attributes={"customer_conversation_sid": conversation.conversation_sid,
                    "customer_phone": conversation.customer_phone},
        messaging_service_sid=convlink_settings.MESSAGING_SERVICE_SID,
        participants=participants(conversation.customer_phone),
    )
    return sid


def parts(message: AbstractTwilioMessage) -> list[tuple[str, str]]:
    """(body, media SID) per message to post: Twilio takes one media SID per message,
    so each further photo of an MMS is a message of its own."""
    body = message.body
    if len(body) > MAX_FORWARD_BODY:
        body = body[: MAX_FORWARD_BODY - 1] + "…"
    media = [m["Sid"] for m in media_items(message)]
    return [(body, media[0] if media else "")] + [("", sid) for sid in media[1:]]


def media_items(message: AbstractTwilioMessage) -> list[dict[str, Any]]:
    """The message's media descriptors that name a file. The webhook validates them
    (``events``); rows stored by older versions may hold any JSON."""
    media = message.media if isinstance(message.media, list) else []
    return [m for m in media if isinstance(m, dict) and isinstance(m.get("Sid"), str) and m["Sid"]]


def post_copies(message: AbstractTwilioMessage, group: AbstractTwilioConversation,
                resumed: bool) -> list[str]:
    """Post the message's parts into the group chat as the assistant; returns the
    SIDs of the copies. A ``resumed`` run (an earlier one may have posted before it
    failed) first looks for the copies already there and posts only the others."""
    backend = get_api_backend()
    already = backend.find_forwards(conversation_sid=group.conversation_sid,
                                    source_sid=message.message_sid) if resumed else {}
    sids = []
    for part, (body, media_sid) in enumerate(parts(message)):
        attributes: dict[str, Any] = {"forwarded_from": message.message_sid}
        if part:
            attributes["part"] = part
        sid = already.get(part) or backend.send_message(
            conversation_sid=group.conversation_sid, author=convlink_settings.ASSISTANT_IDENTITY,
            body=body, media_sid=media_sid, attributes=attributes)
        sids.append(sid)
    return sids
