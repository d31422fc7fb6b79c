"""Which Twilio account may write a stored conversation.

A delivery's signature proves which token family signed it, and so which account it
speaks for: ``signature.auth_tokens_for`` picks a sub-account's own tokens for its
AccountSid, and the main tokens (AUTH_TOKEN, SECONDARY_AUTH_TOKENS) for every other.
Whoever holds a main token can put any AccountSid in the form, so every account that
is not a listed sub-account is one principal here: the main account. A listed
sub-account writes only the conversations it created; the main account writes the
rest, including rows stored before accounts were recorded and the group chats the
app made (both blank).
"""

from __future__ import annotations

from .conf import convlink_settings
from .events import ForeignAccount
from .models import AbstractTwilioConversation

MAIN = ""


def account_owner(account_sid: str) -> str:
    """``account_sid`` when it is a sub-account listed in SUBACCOUNT_AUTH_TOKENS, else
    MAIN."""
    return account_sid if account_sid in (convlink_settings.SUBACCOUNT_AUTH_TOKENS or {}) else MAIN


def is_subaccount_conversation(conversation: AbstractTwilioConversation) -> bool:
    return account_owner(conversation.account_sid) != MAIN


def check_account(conversation: AbstractTwilioConversation, account_sid: str) -> None:
    """Raise ForeignAccount when a delivery for ``account_sid`` may not write
    ``conversation``."""
    if account_owner(account_sid) != account_owner(conversation.account_sid):
        raise ForeignAccount(
            f"AccountSid {account_sid or '(none)'} may not change conversation "
            f"{conversation.conversation_sid}, which belongs to "
            f"{conversation.account_sid or 'the main account'}.")
