"""Bring an existing Twilio account's conversations in, and repair what webhooks missed.

    manage.py sync_twilio_conversations                         # the whole account
    manage.py sync_twilio_conversations --since 2026-06-01      # conversations created since
    manage.py sync_twilio_conversations --since 2025-01-01 --until 2025-07-01   # one period
    manage.py sync_twilio_conversations --conversation-sid CH...
    manage.py sync_twilio_conversations --phone "(415) 555-0111"  # a customer's conversations
    manage.py sync_twilio_conversations --state active
    manage.py sync_twilio_conversations --dry-run               # read, write nothing, say what
    manage.py sync_twilio_conversations --media                 # also fetch the files
    manage.py sync_twilio_conversations --missing               # only the gaps of stored ones (cron)

Rows are stored exactly as the webhooks store them (``history``), with signals of
origin "sync"; nothing is posted to Twilio. SIDs are the keys: an interrupted run is
simply run again. Exit status 1 when any conversation could not be brought in.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils.dateparse import parse_date

from ...conf import convlink_settings
from ...events import CONVERSATION_SID, canonical_sid
from ...exceptions import ApiError
from ...history import ConversationDone, Sync, SyncReport, TwilioHistory
from ...history.sync import addresses_of
from ..options import from_keyword

STATES = ("active", "inactive", "closed")
# Without a terminal, a progress line at most this often (seconds).
LOG_EVERY = 10.0


def day(value: str) -> str:
    """A YYYY-MM-DD date, as Twilio's StartDate filter takes it."""
    try:
        parsed = parse_date(value)
    except ValueError:
        parsed = None
    if parsed is None:
        raise argparse.ArgumentTypeError(f"{value!r} is not a date; expected YYYY-MM-DD.")
    return parsed.isoformat()


def a_conversation_sid(value: str) -> str:
    value = value.strip()
    if not CONVERSATION_SID.fullmatch(value):
        raise argparse.ArgumentTypeError(f"{value!r} is not a conversation SID (CH + 32 hex digits).")
    return canonical_sid(value)


def a_phone(value: str) -> str:
    try:
        addresses_of(value)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return value


class Command(BaseCommand):
    help = "Bring conversations and messages in from Twilio's API, stored as the webhooks store them."

    def add_arguments(self, parser: CommandParser) -> None:
        which = parser.add_mutually_exclusive_group()
        which.add_argument("--conversation-sid", type=a_conversation_sid,
                           help="Only this conversation (CH...).")
        which.add_argument("--phone", type=a_phone,
                           help="Only this customer's conversations (a phone in any format).")
        parser.add_argument("--since", type=day,
                            help="Only conversations created on or after this date, YYYY-MM-DD (UTC).")
        parser.add_argument("--until", type=day,
                            help="Only conversations created before this date, YYYY-MM-DD (UTC).")
        parser.add_argument("--state", choices=STATES, help="Only conversations in this state.")
        parser.add_argument("--missing", action="store_true",
                            help="Check the stored conversations for gaps and fetch only what is missing.")
        parser.add_argument("--media", action="store_true",
                            help="Also download the files of the messages brought in.")
        parser.add_argument("--dry-run", action="store_true",
                            help="Read from Twilio, write nothing, say what would be stored.")

    def handle(self, *args: Any, conversation_sid: str | None, phone: str | None, since: str | None,
               until: str | None, state: str | None, missing: bool, media: bool, dry_run: bool,
               verbosity: int, **options: Any) -> None:
        if conversation_sid is not None:
            conversation_sid = from_keyword(a_conversation_sid, conversation_sid, "--conversation-sid")
        since = from_keyword(day, since, "--since") if since else ""
        if phone is not None:
            phone = from_keyword(a_phone, phone, "--phone")
        until = from_keyword(day, until, "--until") if until else ""
        if since and until and until <= since:
            raise CommandError(f"--until {until} is not after --since {since}.")
        filters = [name for name, value in (("--since", since), ("--until", until), ("--state", state))
                   if value]
        if missing and filters:
            raise CommandError(f"--missing checks the stored conversations: {', '.join(filters)} "
                               f"do not apply.")
        if (conversation_sid or phone) and filters:
            raise CommandError(f"{'--conversation-sid' if conversation_sid else '--phone'} names the "
                               f"conversations: {', '.join(filters)} do not apply.")
        if media and not convlink_settings.MEDIA_DOWNLOAD:
            raise CommandError("--media: MEDIA_DOWNLOAD is off in settings.TWILIO_CONVLINK, so no file "
                               "would be fetched.")
        self.verbosity, self.dry_run = verbosity, dry_run
        self.terminal = verbosity >= 1 and self.stdout.isatty()
        self.last_line = 0.0
        try:
            reader = TwilioHistory()
        except ApiError as error:
            raise CommandError(f"Cannot read from Twilio: {error}") from error
        sync = Sync(reader, dry_run=dry_run, media=media and not dry_run, progress=self.progress,
                    done=self.done)
        try:
            report = sync.run(since=since, until=until, state=state or "",
                              conversation_sid=conversation_sid or "", phone=phone or "", missing=missing)
        except ApiError as error:
            # Listing itself failed (not one conversation): nothing more can be read.
            self.end_progress()
            raise CommandError(f"Twilio refused the listing: {error}") from error
        self.end_progress()
        if verbosity >= 1:
            self.stdout.write(self.summary(report, reader))
        for sid, reason in report.failed:
            self.stderr.write(f"{sid}: not brought in: {reason}")
        if report.failed:
            raise CommandError(f"{len(report.failed)} conversation(s) could not be brought in; run the "
                               f"command again to retry them.")

    def summary(self, report: SyncReport, reader: TwilioHistory) -> str:
        would = "[dry run] would store: " if self.dry_run else ""
        waited = f", waited {reader.waited:.0f} s for Twilio's rate limit" if reader.waited else ""
        return (f"{would}conversations: {report.conversations_new} new, {report.conversations_updated} "
                f"updated, {report.conversations_unchanged} unchanged; messages: {report.messages_new} new, "
                f"{report.messages_already} already there; {report.linked} linked to a booking; "
                f"{f'{report.gone} gone at Twilio; ' if report.gone else ''}"
                f"{len(report.failed)} failed ({reader.requests} requests, "
                f"{time.monotonic() - report.started:.1f} s{waited}).")

    def progress(self, report: SyncReport, where: str) -> None:
        if self.verbosity < 1:
            return
        now = time.monotonic()
        if not self.terminal and now - self.last_line < LOG_EVERY:
            return
        self.last_line = now
        line = (f"{report.conversations} conversations, {report.messages_new + report.messages_already} "
                f"messages ({report.rate:.0f}/s), {report.pages} pages read, at {where}")
        if self.terminal:
            self.stdout.write(f"\r\033[K{line}", ending="")
            self.stdout.flush()
        else:
            self.stdout.write(line)

    def end_progress(self) -> None:
        if self.terminal:
            self.stdout.write("\r\033[K", ending="")

    def done(self, outcome: ConversationDone) -> None:
        if self.verbosity < 2 and not (self.dry_run and self.verbosity >= 1 and
                                       (outcome.created or outcome.messages_new)):
            return
        self.end_progress()
        if outcome.error:
            text = f"failed: {outcome.error}"
        else:
            kind = "new" if outcome.created else ("updated" if outcome.changed else (
                "gone at Twilio" if outcome.gone else "unchanged"))
            text = (f"{kind}, {outcome.messages_new} new message(s), {outcome.messages_already} "
                    f"already there{', linked' if outcome.linked else ''}")
        self.stdout.write(f"{'Would store ' if self.dry_run else ''}{outcome.conversation_sid}: {text}")

