"""Which Twilio account a delivery speaks for, and which conversations it may write.

A delivery's signature proves which secret signed it, and so which account it speaks
for. ``signature.auth_tokens_for`` picks a listed sub-account's own tokens for its
AccountSid and the main tokens (AUTH_TOKEN, SECONDARY_AUTH_TOKENS) for every other;
a webhook shared key (WEBHOOK_SHARED_KEYS) is the site's own secret, like the main
tokens. Whoever holds a main token or a shared key can put any AccountSid in the
form, so every delivery that is not signed with a listed sub-account's token speaks
for one principal here: the main account. A listed sub-account writes only the
conversations it created; the main account writes the rest, including rows stored
before accounts were recorded and the group chats the app made (both blank).

Account SIDs are compared in one spelling, ``canonical_sid`` (hex digits lowercase),
in the settings as in the form: Twilio's API description allows either case, and a
comparison in two spellings once let a delivery signed with the main token write a
sub-account's conversation by naming its SID in upper case.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from .conf import convlink_settings
from .events import ACCOUNT_SID, Event, canonical_sid
from .exceptions import ForeignAccount

if TYPE_CHECKING:
    from .models import AbstractTwilioConversation

MAIN = ""

# The last SUBACCOUNT_AUTH_TOKENS read and its canonical form: rebuilt when the
# setting is another object (override_settings), read on every signed delivery.
_subaccounts: tuple[Any, dict[str, list[str]]] = (None, {})


def subaccount_tokens() -> dict[str, list[str]]:
    """SUBACCOUNT_AUTH_TOKENS keyed by canonical account SID, each with its list of
    tokens. Keys that are no account SID are left out (system check E019 names them)."""
    global _subaccounts
    setting = convlink_settings.SUBACCOUNT_AUTH_TOKENS or {}
    if _subaccounts[0] is not setting:
        tokens: dict[str, list[str]] = {}
        for key, value in (setting.items() if isinstance(setting, dict) else ()):
            if isinstance(key, str) and ACCOUNT_SID.fullmatch(key):
                values = [value] if isinstance(value, str) else list(value or ())
                tokens.setdefault(canonical_sid(key), []).extend(v for v in values if v)
        _subaccounts = (setting, tokens)
    return _subaccounts[1]


def account_owner(account_sid: str) -> str:
    """The canonical ``account_sid`` when it is a sub-account listed in
    SUBACCOUNT_AUTH_TOKENS, else MAIN."""
    if not account_sid or not ACCOUNT_SID.fullmatch(account_sid):
        return MAIN
    canonical = canonical_sid(account_sid)
    return canonical if canonical in subaccount_tokens() else MAIN


def is_subaccount_conversation(conversation: AbstractTwilioConversation) -> bool:
    return account_owner(conversation.account_sid) != MAIN


def as_signed(event: Event, *, shared_key: bool) -> Event:
    """``event`` as its signer may send it: a delivery signed with a webhook shared
    key speaks for the main account whatever AccountSid it names, so a listed
    sub-account's SID in it is dropped (blank: the main account)."""
    if shared_key and account_owner(event.account_sid) != MAIN:
        return dataclasses.replace(event, account_sid=MAIN)
    return event


def check_account(conversation: AbstractTwilioConversation, account_sid: str) -> None:
    """Raise ForeignAccount when a delivery for ``account_sid`` may not write
    ``conversation``. The answer names only what the delivery itself named; the
    owner goes to the log."""
    if account_owner(account_sid) != account_owner(conversation.account_sid):
        public = (f"AccountSid {account_sid or '(none)'} may not change conversation "
                  f"{conversation.conversation_sid}.")
        raise ForeignAccount(public, detail=f"{public[:-1]}, which belongs to "
                                            f"{conversation.account_sid or 'the main account'}.")


def may_skip_account_checks() -> bool:
    """True when no sub-account is listed: every delivery and every conversation is
    the main account's, and no check can refuse anything (so none costs a query)."""
    return not subaccount_tokens()
