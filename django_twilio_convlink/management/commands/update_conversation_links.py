"""Link unlinked conversations to bookings by their customer's phone.

Usage examples::

    manage.py update_conversation_links                      # every unlinked conversation
    manage.py update_conversation_links --phone "(561) 555-0123"
    manage.py update_conversation_links --conversation-sid CH0123...
    manage.py update_conversation_links --dry-run            # print, change nothing
    manage.py update_conversation_links --reindex            # rebuild the phone index first

Bookings missing from the phone index (saved without post_save: ``bulk_create``,
``loaddata``, raw SQL) are indexed first; ``--reindex`` rebuilds the whole index
instead, for phones changed behind the app's back (``QuerySet.update()``). Manual
links, and conversations a manager unlinked by hand, are never touched.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from ... import get_conversation_model
from ...events import canonical_sid
from ...linking import PhoneIndexRepair, update_conversation_links
from ...phones import normalize_phone


class Command(BaseCommand):
    help = "Link unlinked Twilio conversations to bookings by the customer's phone."

    def add_arguments(self, parser: CommandParser) -> None:
        selector = parser.add_mutually_exclusive_group()
        selector.add_argument("--phone", help="Only conversations of this customer phone (any format).")
        selector.add_argument("--conversation-sid", help="Only this conversation (CH...).")
        parser.add_argument("--dry-run", action="store_true",
                            help="Print what would be linked, and to which booking; change nothing.")
        parser.add_argument("--reindex", action="store_true",
                            help="Rebuild the whole phone index first, as rebuild_booking_phones does: "
                                 "for phones changed behind the app's back (QuerySet.update()). "
                                 "Without it only the bookings missing from the index are added.")

    def handle(self, *args: Any, phone: str | None, conversation_sid: str | None,
               dry_run: bool, reindex: bool, verbosity: int, **options: Any) -> None:
        normalized = None
        if phone is not None:
            normalized = normalize_phone(phone)
            if normalized is None:
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
        # The lookup trusts the phone index, and bookings imported without post_save
        # are missing from it: without this the booking right there is not found.
        report = update_conversation_links(phone=normalized, conversation_sid=conversation_sid,
                                           dry_run=dry_run, list_conversations=listing, index_missing=True,
                                           reindex=reindex)
        if report.index is not None:
            self.write_index(report.index, dry_run)
        verb = "Would link" if dry_run else "Linked"
        if listing:
            for link in report.links:
                for sid in link.conversation_sids:
                    self.stdout.write(f"{verb} {sid} ({link.phone}) -> booking {link.booking_pk}, "
                                      f"apartment {link.apartment_pk}")
        if phone is not None and not report.examined:
            self.write_no_conversation(phone, normalized)
            return
        prefix = "[dry run] " if dry_run else ""
        self.stdout.write(self.style.SUCCESS(
            f"{prefix}{verb.lower()} {report.linked} of {report.examined} unlinked conversation(s) "
            f"to bookings; {report.unmatched} without a matching booking."
        ))

    def write_index(self, repair: PhoneIndexRepair, dry_run: bool) -> None:
        if repair.rebuilt:
            action = "would rebuild" if dry_run else "Rebuilt"
            line = f"{action} the phone index: {repair.indexed} booking phone(s)."
        else:
            action = "would index" if dry_run else "Indexed"
            line = f"{action} {repair.indexed} booking(s) missing from the phone index"
            if repair.not_numbers:
                line += (f"; {repair.not_numbers} more have a customer phone that is not a phone number "
                         "and cannot be indexed")
            line += "."
        self.stdout.write(("[dry run] " if dry_run else "") + line)

    def write_no_conversation(self, typed: str, normalized: str | None) -> None:
        # "linked 0 of 0" would not say which number was looked for, nor why nothing is
        # there: a typo, or conversations that are all decided already.
        self.stdout.write(self.style.WARNING(
            f'No unlinked conversation has the phone {normalized} (typed "{typed}"); nothing to link.'))
        decided = get_conversation_model()._default_manager.filter(customer_phone=normalized).count()
        if decided:
            self.stdout.write(f"{decided} conversation(s) with this phone are linked already or were "
                              "decided by hand.")
