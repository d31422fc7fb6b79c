"""Twilio's form fields in, typed events out; every bad value becomes InvalidPayload.

Parsing is complete before anything is written, so a payload with a malformed field
is refused with a 400 and a reason, never half-saved. Unknown event types and
unknown fields are accepted: Twilio adds both without notice.
"""

from __future__ import annotations

import datetime
import json
import logging
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from django.utils.dateparse import parse_datetime

from .conf import convlink_settings

# Re-exported: the documentation and sites import the exceptions from here too.
from .exceptions import ForeignAccount as ForeignAccount
from .exceptions import InvalidPayload as InvalidPayload
from .exceptions import RefusedEvent as RefusedEvent

logger = logging.getLogger(__name__)

CONVERSATION_SID = re.compile(r"^CH[0-9a-fA-F]{32}$")
MESSAGE_SID = re.compile(r"^IM[0-9a-fA-F]{32}$")
PARTICIPANT_SID = re.compile(r"^MB[0-9a-fA-F]{32}$")
SERVICE_SID = re.compile(r"^(IS|MG)[0-9a-fA-F]{32}$")
ACCOUNT_SID = re.compile(r"^AC[0-9a-fA-F]{32}$")
RECEIPT_SID = re.compile(r"^DY[0-9a-fA-F]{32}$")
CHANNEL_MESSAGE_SID = re.compile(r"^(SM|MM)[0-9a-fA-F]{32}$")


@dataclass(frozen=True)
class MessageEvent:
    """onMessageAdded, onMessageUpdated, onMessageRemoved."""

    event_type: str
    conversation_sid: str
    account_sid: str
    message_sid: str
    author: str
    body: str
    index: int | None
    date_created: datetime.datetime | None
    date_updated: datetime.datetime | None
    date_removed: datetime.datetime | None
    source: str
    participant_sid: str
    attributes: Any
    media: list
    # Where the message's media live (the Media Content Service's path); Twilio may
    # leave it out.
    chat_service_sid: str = ""


@dataclass(frozen=True)
class ConversationEvent:
    """onConversationAdded, onConversationUpdated, onConversationStateUpdated."""

    event_type: str
    conversation_sid: str
    account_sid: str
    friendly_name: str
    unique_name: str
    state: str
    chat_service_sid: str
    messaging_service_sid: str
    attributes: Any
    date_created: datetime.datetime | None
    # When Twilio made the change the event reports: StateUpdated for a state change,
    # DateUpdated otherwise. Events arrive out of order; the older one loses.
    date_updated: datetime.datetime | None
    binding_address: str


@dataclass(frozen=True)
class ReceiptEvent:
    """onDeliveryUpdated: what became of one message at one recipient."""

    event_type: str
    conversation_sid: str
    account_sid: str
    message_sid: str
    participant_sid: str
    receipt_sid: str
    # One of choices.ReceiptStatus, or "" for a status Twilio added since (logged,
    # and the receipt acknowledged without changing anything).
    status: str
    # Twilio's error code; None for ErrorCode "0" or none.
    error_code: int | None
    date_created: datetime.datetime | None
    date_updated: datetime.datetime | None


@dataclass(frozen=True)
class OtherEvent:
    """Everything the app acknowledges without storing (participants, receipts, ...).
    The conversation it names (if any) is kept: storing nothing is no licence to speak
    about another account's conversation (``handlers.handle_event`` checks it)."""

    event_type: str
    conversation_sid: str = ""
    account_sid: str = ""


Event = MessageEvent | ConversationEvent | ReceiptEvent | OtherEvent

MESSAGE_EVENTS = {"onMessageAdded", "onMessageUpdated", "onMessageRemoved"}
CONVERSATION_EVENTS = {"onConversationAdded", "onConversationUpdated", "onConversationStateUpdated"}


def _sid(data: Mapping[str, str], name: str, pattern: re.Pattern, *, required: bool = True) -> str:
    value = data.get(name, "")
    if not value:
        if required:
            raise InvalidPayload(f"{name} is missing.")
        return ""
    if not pattern.fullmatch(value):  # fullmatch: "$" would let a trailing newline through
        raise InvalidPayload(f"{name} {value[:40]!r} is not a Twilio SID ({pattern.pattern[1:3]}...).")
    return canonical_sid(value)


def canonical_sid(value: str) -> str:
    """``value`` with its hex digits lowercased. Twilio's API description lets them be
    either case, and MariaDB's default collation compares them case-blind while
    PostgreSQL and SQLite do not: one spelling (Twilio's own, lowercase) makes "the
    same SID" mean the same everywhere."""
    return value[:2] + value[2:].lower()


# MariaDB refuses JSON nested 32 levels deep (MySQL: 100); Twilio attributes are shallow.
MAX_JSON_DEPTH = 20


def _depth(value: Any) -> int:
    """Nesting depth of a parsed JSON value, without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, level)
            if level <= MAX_JSON_DEPTH:
                children = item.values() if isinstance(item, dict) else item
                stack.extend((child, level + 1) for child in children)
    return deepest


def _not_json(literal: str) -> Any:
    # Python's json reads NaN and Infinity, which JSON does not have: databases refuse
    # them (SQLite's JSON_VALID check, found by the fuzz test).
    raise ValueError(f"{literal} is not JSON")


def _finite(literal: str) -> float:
    value = float(literal)
    if not math.isfinite(value):  # 1e400 overflows to inf: the same problem
        raise ValueError(f"{literal} is out of range")
    return value


def _json(data: Mapping[str, str], name: str, default: Any) -> Any:
    raw = data.get(name, "")
    if not raw:
        return default
    try:
        value = json.loads(raw, parse_constant=_not_json, parse_float=_finite)
    except (ValueError, RecursionError):  # RecursionError: nesting thousands deep
        raise InvalidPayload(f"{name} is not valid JSON.") from None
    # Depth first: it bounds the recursion of the dump below.
    if _depth(value) > MAX_JSON_DEPTH:
        raise InvalidPayload(f"{name} nests deeper than {MAX_JSON_DEPTH} levels.")
    # One dump serves both database checks: PostgreSQL's jsonb refuses the NUL
    # character (a 400 here, not a 500 that Twilio would retry forever), and "\ud800"
    # is valid JSON text but an unpaired surrogate, not Unicode, which PostgreSQL's
    # jsonb and MariaDB's JSON_VALID refuse (found by the fuzz test).
    dumped = json.dumps(value, ensure_ascii=False)
    if "\\u0000" in dumped:
        raise InvalidPayload(f"{name} contains a NUL character.")
    try:
        dumped.encode()
    except UnicodeEncodeError:
        raise InvalidPayload(f"{name} contains an unpaired surrogate.") from None
    # JSON null stands for "none": the columns are NOT NULL.
    return default if value is None else value


def _date(data: Mapping[str, str], name: str) -> datetime.datetime | None:
    raw = data.get(name, "")
    if not raw:
        return None
    try:
        value = parse_datetime(raw)
    except ValueError:
        value = None
    if value is None:
        raise InvalidPayload(f"{name} {raw[:40]!r} is not an ISO 8601 date and time.")
    # Twilio's timestamps are UTC; one without an offset is read as such rather than
    # in the site's TIME_ZONE.
    if value.tzinfo is None:
        value = value.replace(tzinfo=datetime.UTC)
    try:
        # Stored in UTC; year 1 with a positive offset would underflow there (found by
        # the fuzz test), and no database column takes years outside 1000-9999.
        value = value.astimezone(datetime.UTC)
    except OverflowError:
        value = None
    if value is None or not 1970 <= value.year <= 9998:
        raise InvalidPayload(f"{name} {raw[:40]!r} is outside the years Twilio uses.")
    return value


def _index(data: Mapping[str, str]) -> int | None:
    raw = data.get("Index", "")
    if raw == "":
        return None
    if not raw.isascii() or not raw.isdigit() or len(raw) > 9:
        raise InvalidPayload(f"Index {raw[:20]!r} is not a non-negative integer.")
    return int(raw)


def _text(data: Mapping[str, str], name: str, max_length: int) -> str:
    value = data.get(name, "")
    if len(value) > max_length:
        raise InvalidPayload(f"{name} is {len(value)} characters long; the limit is {max_length}.")
    return value


MEDIA_SID = re.compile(r"^ME[0-9a-fA-F]{32}$")
# Twilio allows 10 files per SMS/MMS message and documents no cap for chat (SDK)
# messages. Five times the MMS limit refuses no real message and still bounds what one
# delivery makes the app do: the group chat posts one message per file, the admin
# renders one line per file.
MAX_MEDIA_ITEMS = 50


def _media(data: Mapping[str, str]) -> list[dict[str, Any]]:
    """Media as Twilio sends it: a list of objects with an ME SID (canonicalised) and,
    when present, a string ContentType, a string or null Filename and a non-negative
    integer Size. The group chat and the admin read these keys, so an item without
    them is refused here rather than stored for them to trip over; other keys are
    kept, as Twilio adds fields."""
    media = _json(data, "Media", [])
    if not isinstance(media, list):
        raise InvalidPayload("Media must be a JSON list.")
    if len(media) > MAX_MEDIA_ITEMS:
        raise InvalidPayload(f"Media lists {len(media)} files; the limit is {MAX_MEDIA_ITEMS}.")
    return [_media_item(position, item) for position, item in enumerate(media)]


def _media_item(position: int, item: Any) -> dict[str, Any]:
    where = f"Media[{position}]"
    if not isinstance(item, dict):
        raise InvalidPayload(f"{where} is not a JSON object.")
    sid = item.get("Sid")
    if sid is None:
        raise InvalidPayload(f"{where}.Sid is missing.")
    if not isinstance(sid, str) or not MEDIA_SID.fullmatch(sid):
        raise InvalidPayload(f"{where}.Sid {str(sid)[:40]!r} is not a Twilio media SID (ME...).")
    if not isinstance(item.get("ContentType", ""), str):
        raise InvalidPayload(f"{where}.ContentType is not a string.")
    if not isinstance(item.get("Filename", ""), str | None):
        raise InvalidPayload(f"{where}.Filename is not a string or null.")
    size = item.get("Size", 0)
    # bool is an int to Python; JSON true is no size.
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise InvalidPayload(f"{where}.Size is not a non-negative integer.")
    return {**item, "Sid": canonical_sid(sid)}


# Twilio's conversation states (conversation_enum_state in its OpenAPI description).
STATES = frozenset({"initializing", "active", "inactive", "closed"})


def _state(data: Mapping[str, str]) -> str:
    """StateTo (a state change) or State, when it is one of Twilio's states; else ""
    so the stored state stays. An unknown value is logged, not refused: Twilio adds
    values without notice, and the rest of the event is still good."""
    raw = data.get("StateTo", "") or data.get("State", "")
    if not raw or raw in STATES:
        return raw
    logger.warning("Ignored unknown conversation state %r of %s", raw[:40], data.get("ConversationSid", "?"))
    return ""


RECEIPT_STATUSES = frozenset({"sent", "delivered", "read", "failed", "undelivered"})


def _receipt_status(data: Mapping[str, str]) -> str:
    raw = data.get("Status", "")
    if not raw:
        raise InvalidPayload("Status is missing.")
    if raw in RECEIPT_STATUSES:
        return raw
    logger.warning("Ignored unknown delivery status %r of %s", raw[:40], data.get("MessageSid", "?"))
    return ""


def _error_code(data: Mapping[str, str]) -> int | None:
    raw = data.get("ErrorCode", "")
    if raw in ("", "0"):
        return None
    if not raw.isascii() or not raw.isdigit() or len(raw) > 9:
        raise InvalidPayload(f"ErrorCode {raw[:20]!r} is not a Twilio error code.")
    return int(raw) or None


def parse_event(data: Mapping[str, str]) -> Event:
    """Turn a webhook's POST data (a QueryDict or dict of strings) into an event."""
    values = (v for _, vs in data.lists() for v in vs) if hasattr(data, "lists") else data.values()
    if any("\x00" in value for value in values):
        # No database text column stores NUL (PostgreSQL raises); Twilio never sends it.
        raise InvalidPayload("A field contains a NUL character.")
    event_type = data.get("EventType", "")
    if not event_type:
        raise InvalidPayload("EventType is missing.")
    if event_type in MESSAGE_EVENTS:
        return MessageEvent(
            event_type=event_type,
            conversation_sid=_sid(data, "ConversationSid", CONVERSATION_SID),
            account_sid=_sid(data, "AccountSid", ACCOUNT_SID, required=False),
            message_sid=_sid(data, "MessageSid", MESSAGE_SID),
            author=_text(data, "Author", 255),
            body=_text(data, "Body", convlink_settings.MAX_BODY_LENGTH),
            index=_index(data),
            date_created=_date(data, "DateCreated"),
            date_updated=_date(data, "DateUpdated"),
            date_removed=_date(data, "DateRemoved"),
            source=_text(data, "Source", 20),
            participant_sid=_sid(data, "ParticipantSid", PARTICIPANT_SID, required=False),
            attributes=_json(data, "Attributes", {}),
            media=_media(data),
            chat_service_sid=_sid(data, "ChatServiceSid", SERVICE_SID, required=False),
        )
    if event_type in CONVERSATION_EVENTS:
        return ConversationEvent(
            event_type=event_type,
            conversation_sid=_sid(data, "ConversationSid", CONVERSATION_SID),
            account_sid=_sid(data, "AccountSid", ACCOUNT_SID, required=False),
            friendly_name=_text(data, "FriendlyName", 256),
            unique_name=_text(data, "UniqueName", 256),
            state=_state(data),
            chat_service_sid=_sid(data, "ChatServiceSid", SERVICE_SID, required=False),
            messaging_service_sid=_sid(data, "MessagingServiceSid", SERVICE_SID, required=False),
            attributes=_json(data, "Attributes", {}),
            date_created=_date(data, "DateCreated"),
            date_updated=_date(data, "StateUpdated") or _date(data, "DateUpdated"),
            binding_address=_text(data, "MessagingBinding.Address", 1000),
        )
    if event_type == "onDeliveryUpdated":
        return ReceiptEvent(
            event_type=event_type,
            conversation_sid=_sid(data, "ConversationSid", CONVERSATION_SID, required=False),
            account_sid=_sid(data, "AccountSid", ACCOUNT_SID, required=False),
            message_sid=_sid(data, "MessageSid", MESSAGE_SID),
            participant_sid=_sid(data, "ParticipantSid", PARTICIPANT_SID),
            receipt_sid=_sid(data, "DeliveryReceiptSid", RECEIPT_SID, required=False),
            status=_receipt_status(data),
            error_code=_error_code(data),
            date_created=_date(data, "DateCreated"),
            date_updated=_date(data, "DateUpdated") or _date(data, "DateCreated"),
        )
    return OtherEvent(event_type=event_type,
                      conversation_sid=_sid(data, "ConversationSid", CONVERSATION_SID, required=False),
                      account_sid=_sid(data, "AccountSid", ACCOUNT_SID, required=False))
