"""Twilio's REST resources as the webhook events the app already knows how to store.

A conversation or message read from the API is written out as the form fields its
webhook would have carried (onConversationUpdated, onMessageAdded) and parsed by
``events.parse_event``: the same validation, the same canonical SIDs and media
descriptors, the same fields, so a synced row cannot differ from a webhook's.
"""

from __future__ import annotations

import datetime
import json
from typing import Any

from ..choices import ReceiptStatus
from ..events import ConversationEvent, MessageEvent, parse_event
from ..phones import is_system_author, normalize_phone


def _when(value: Any) -> str:
    if isinstance(value, datetime.datetime):
        return value.isoformat().replace("+00:00", "Z")
    return str(value or "")


def _attributes(value: Any) -> str:
    if value is None:
        return "{}"
    return value if isinstance(value, str) else json.dumps(value)


def conversation_event(conversation: Any, addresses: list[str]) -> ConversationEvent:
    """A conversation resource (and its participants' addresses, which tell the
    customer) as onConversationUpdated: it fills what is blank and replaces what is
    older than the resource's ``date_updated``, as that webhook does."""
    event = parse_event({
        "EventType": "onConversationUpdated",
        "ConversationSid": conversation.sid or "",
        "AccountSid": conversation.account_sid or "",
        "ChatServiceSid": conversation.chat_service_sid or "",
        "MessagingServiceSid": conversation.messaging_service_sid or "",
        "FriendlyName": conversation.friendly_name or "",
        "UniqueName": conversation.unique_name or "",
        "Attributes": _attributes(conversation.attributes),
        "State": conversation.state or "",
        "DateCreated": _when(conversation.date_created),
        "DateUpdated": _when(conversation.date_updated),
        "MessagingBinding.Address": ",".join(addresses),
    })
    assert isinstance(event, ConversationEvent)
    return event


def source_of(author: str) -> str:
    """The webhook's ``Source`` of a message, which the REST resource does not carry:
    WHATSAPP for a whatsapp: author, SMS for a phone, else API (an identity: the
    assistant, or your code)."""
    if author.startswith("whatsapp:"):
        return "WHATSAPP"
    if normalize_phone(author) is not None:
        return "SMS"
    return "API"


def message_event(message: Any, chat_service_sid: str = "") -> MessageEvent:
    """A message resource as onMessageAdded."""
    author = message.author or ""
    media = [{"Sid": item.get("sid"), "ContentType": item.get("content_type") or "",
              "Filename": item.get("filename"), "Size": item.get("size") or 0,
              **({"Category": item["category"]} if item.get("category") else {})}
             for item in (message.media or [])]
    event = parse_event({
        "EventType": "onMessageAdded",
        "ConversationSid": message.conversation_sid or "",
        "AccountSid": message.account_sid or "",
        "MessageSid": message.sid or "",
        "Author": author,
        "Body": message.body or "",
        "Index": "" if message.index is None else str(message.index),
        "DateCreated": _when(message.date_created),
        "DateUpdated": _when(message.date_updated),
        "Source": source_of(author),
        "ParticipantSid": message.participant_sid or "",
        "Attributes": _attributes(message.attributes),
        "Media": json.dumps(media) if media else "",
        "ChatServiceSid": chat_service_sid,
    })
    assert isinstance(event, MessageEvent)
    return event


def delivery_summary(delivery: Any, author: str) -> str:
    """The summary status (``receipts.summarize``'s rule) that a message's
    ``delivery`` object implies, for our texts; "" when it tells nothing.

    The object counts the recipients at each status as "all", "some" or "none":
    failed wins, then undelivered, then the least advanced of sent < delivered < read.
    The per-recipient receipts themselves are not listed (a call per message).
    """
    if not isinstance(delivery, dict) or not is_system_author(author):
        return ""
    some = {status: delivery.get(status) in ("all", "some") for status in
            ("failed", "undelivered", "sent", "delivered", "read")}
    if some["failed"]:
        return ReceiptStatus.FAILED
    if some["undelivered"]:
        return ReceiptStatus.UNDELIVERED
    if some["sent"]:
        return ReceiptStatus.SENT
    if some["delivered"]:
        return ReceiptStatus.DELIVERED
    return ReceiptStatus.READ if some["read"] else ""
