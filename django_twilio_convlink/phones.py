"""Phone numbers in E.164, and who counts as the system side of a conversation."""

from __future__ import annotations

import re
from functools import lru_cache

import phonenumbers

from .conf import convlink_settings

# Channel prefixes Twilio puts before an address ("whatsapp:+14155550142").
_CHANNEL_PREFIX = re.compile(r"^(whatsapp|sms|mms):", re.IGNORECASE)
# Only strings made of phone punctuation are read as numbers. phonenumbers would read
# letters as a vanity number, turning a chat identity like "CALL-ME-NOW" into a phone.
_PHONE_CHARS = re.compile(r"^\+?[\d\s().\-/]{3,}$")


def normalize_phone(raw: str | None, region: str | None = None) -> str | None:
    """Return ``raw`` in E.164 ("+15615550123"), or None when it is not a phone number.

    Accepts what sites and Twilio actually store: "(561) 555-0123", "+1 561-555-0123",
    "5615550123" (read in ``region``, PHONE_REGION by default) and "whatsapp:+1...".
    A number libphonenumber calls possible but not valid (+1 555 numbers, used in
    fixtures and demos everywhere) is accepted: length decides, not allocation tables.
    """
    if not raw:
        return None
    return _normalized(str(raw), region or convlink_settings.PHONE_REGION)


# A webhook asks about the same author three times (direction, customer phone, group
# chat), and a site's customers text again and again: libphonenumber's parse is the
# cost, and its answer depends only on the text and the region.
@lru_cache(maxsize=4096)
def _normalized(raw: str, region: str) -> str | None:
    candidate = _CHANNEL_PREFIX.sub("", raw.strip())
    if not _PHONE_CHARS.match(candidate):
        return None
    try:
        parsed = phonenumbers.parse(candidate, region)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_possible_number(parsed):
        return None
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


def system_authors() -> tuple[frozenset[str], frozenset[str]]:
    """(E.164 phones, chat identities) whose messages count as outbound.

    Settings may hold formatted numbers such as "(561) 220-5252"; they are normalized
    once per distinct set of values. ``system`` is always included: Twilio writes it as
    the author of a REST-API message sent without one.
    """
    s = convlink_settings
    values = (s.TWILIO_PHONE, s.MANAGER_PHONE, s.ASSISTANT_IDENTITY, "system", *s.SYSTEM_IDENTITIES)
    return _system_authors(tuple(str(v) for v in values if v), s.PHONE_REGION)


# Keyed on the values: override_settings in a test is a new key, not a stale entry.
@lru_cache(maxsize=8)
def _system_authors(values: tuple[str, ...], region: str) -> tuple[frozenset[str], frozenset[str]]:
    phones, identities = set(), set()
    for raw in values:
        normalized = normalize_phone(raw, region=region)
        if normalized:
            phones.add(normalized)
        else:
            identities.add(raw.strip())
    return frozenset(phones), frozenset(identities)


def is_system_author(author: str | None) -> bool:
    """True when ``author`` is the Twilio number, the manager, the assistant, ``system``
    or one of SYSTEM_IDENTITIES: its messages are outbound and never start a lookup."""
    if not author:
        return False
    phones, identities = system_authors()
    if author.strip() in identities:
        return True
    normalized = normalize_phone(author)
    return normalized is not None and normalized in phones


def customer_phone_from_author(author: str | None) -> str | None:
    """The customer's E.164 phone when ``author`` is a customer's phone, else None."""
    if is_system_author(author):
        return None
    return normalize_phone(author)


def customer_phone_from_addresses(addresses: str | None) -> str | None:
    """The one non-system phone in a MessagingBinding.Address value.

    A 1:1 SMS conversation names one address; a group MMS lists several, comma
    separated. Only when exactly one of them is not a system phone is it the customer.
    """
    if not addresses:
        return None
    candidates = {
        phone
        for part in addresses.split(",")
        if (phone := customer_phone_from_author(part)) is not None
    }
    return candidates.pop() if len(candidates) == 1 else None
