"""Link unlinked conversations to bookings by their customer's phone.

Usage examples::

    manage.py update_conversation_links                      # every unlinked conversation
    manage.py update_conversation_links --phone "(561) 555-0123"
    manage.py update_conversation_links --conversation-sid CH0123...
    manage.py update_conversation_links --dry-run            # print, change nothing

Manual links, and conversations a manager unlinked by hand, are never touched.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from ... import get_conversation_model
from ...events import canonical_sid
from ...linking import update_conversation_links
from ...phones import normalize_phone


class Command(BaseCommand):
    help = "Link unlinked Twilio conversations to bookings by the customer's phone."

    def add_arguments(self, parser: CommandParser) -> None:
        selector = parser.add_mutually_exclusive_group()
        selector.add_argument("--phone", help="Only conversations of this customer phone (any format).")
        selector.add_argument("--conversation-sid", help="Only this conversation (CH...).")
        parser.add_argument("--dry-run", action="store_true",
                            help="Print what would be linked, and to which booking; change nothing.")

    def handle(self, *args: Any, phone: str | None, conversation_sid: str | None,
               dry_run: bool, verbosity: int, **options: Any) -> None:
        if phone is not None and normalize_phone(phone) is None:
            raise CommandError(f"{phone!r} is not a phone number (try E.164, e.g. +15551234567).")
        if conversation_sid is not None:
            conversation_sid = canonical_sid(conversation_sid.strip())  # as the webhook stored it
            Conversation = get_conversation_model()
            conversation = Conversation._default_manager.filter(conversation_sid=conversation_sid).first()
            if conversation is None:
                raise CommandError(f"No conversation with SID {conversation_sid!r}.")
            if conversation.booking_id is not None:
                self.stdout.write(f"{conversation_sid} is already linked to booking "
                                  f"{conversation.booking_id} ({conversation.link_method}).")
            elif not conversation.customer_phone:
                self.stdout.write(f"{conversation_sid} has no customer phone yet; nothing to look up.")

        # The SIDs are collected only when they are printed: a plain run over 100,000
        # conversations keeps counts, not a list of them.
        listing = dry_run or verbosity >= 2
        report = update_conversation_links(phone=phone, conversation_sid=conversation_sid, dry_run=dry_run,
                                           list_conversations=listing)
        verb = "Would link" if dry_run else "Linked"
        if listing:
            for link in report.links:
                for sid in link.conversation_sids:
                    self.stdout.write(f"{verb} {sid} ({link.phone}) -> booking {link.booking_pk}, "
                                      f"apartment {link.apartment_pk}")
        prefix = "[dry run] " if dry_run else ""
        self.stdout.write(self.style.SUCCESS(
            f"{prefix}{verb.lower()} {report.linked} of {report.examined} unlinked conversation(s) "
            f"to bookings; {report.unmatched} without a matching booking."
        ))
