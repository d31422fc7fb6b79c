"""Record the Twilio account of conversations stored before accounts were recorded.

Usage examples::

    manage.py record_conversation_accounts            # from the delivery log
    manage.py record_conversation_accounts --dry-run

A conversation whose ``account_sid`` is blank belongs to the main account, so a
sub-account (SUBACCOUNT_AUTH_TOKENS) may not write it. Run this once after upgrading,
before a sub-account's events for its older conversations arrive: each blank
conversation takes the AccountSid of the first processed delivery about it in the
delivery log. One UPDATE. Conversations older than the log (DELIVERY_RETENTION_DAYS)
stay blank: set their ``account_sid`` yourself if they are a sub-account's.

Which deliveries it trusts: processed message and conversation events
(``onMessage*``, ``onConversation*``) signed with an auth token. Those are the
events whose account is checked against the conversation they write. Events the app
does not store (participants, receipts) were acknowledged unchecked by older
versions, and a shared-key delivery speaks for the main account whatever AccountSid
it names: once trusted, either would let one account hand itself another's
conversation.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser
from django.db.models import OuterRef, Subquery

from ... import get_conversation_model
from ...events import CONVERSATION_EVENTS, MESSAGE_EVENTS
from ...models import DeliveryStatus, WebhookDelivery
from ...signature import SIGNATURE_SETTINGS_HEADER


class Command(BaseCommand):
    help = ("Fill the account of conversations stored before accounts were recorded, from the delivery "
            "log: the first processed message or conversation event signed with an auth token (events "
            "the app does not store and shared-key deliveries are not trusted).")

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--dry-run", action="store_true", help="Count, change nothing.")

    def handle(self, *args: Any, dry_run: bool, **options: Any) -> None:
        first_account = Subquery(
            WebhookDelivery.objects.filter(conversation_sid=OuterRef("conversation_sid"),
                                           status=DeliveryStatus.PROCESSED,
                                           event_type__in=MESSAGE_EVENTS | CONVERSATION_EVENTS)
            .exclude(account_sid="").exclude(headers__has_key=SIGNATURE_SETTINGS_HEADER)
            .order_by("received_at", "pk").values("account_sid")[:1])
        blank = get_conversation_model()._default_manager.filter(account_sid="")
        known = blank.annotate(_convlink_account=first_account).filter(_convlink_account__isnull=False)
        if dry_run:
            count = known.count()
        else:
            count = blank.filter(pk__in=known.values("pk")).update(account_sid=first_account)
        verb = "Would record" if dry_run else "Recorded"
        left = blank.count() - (count if dry_run else 0)
        self.stdout.write(f"{verb} the account of {count} conversation(s); {left} still blank "
                          "(counted as the main account's).")
