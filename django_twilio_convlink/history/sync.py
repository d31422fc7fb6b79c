"""History brought in from Twilio's REST API and stored exactly as the webhooks store it.

For each conversation: its fields through ``handlers.handle_event`` (an
onConversationUpdated: the account rule, the customer's phone from the binding and
the booking lookup, as for the webhook), the group chat the app made recognised by
its unique name and attached to its customer's conversation, then its messages a
page at a time through ``persistence.save_new_messages_to_db`` (one INSERT a page,
the insert steps, receipts and signals of the webhook path, with origin "sync").

History is not news: nothing is posted to Twilio (the group chat's insert step
ignores origin "sync"), and files are fetched only when asked (``media``). SIDs are
the keys: a message already stored is left as it is, so a run can be interrupted and
run again, and a webhook storing the same message at the same moment leaves one row
(the page is run again after the unique SID refuses it).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from django.db import DatabaseError, IntegrityError, transaction
from django.db.models import Count, Max, Min, Q
from django.utils import timezone

from ..conf import convlink_settings
from ..db import run_with_retries
from ..exceptions import ApiError, InvalidPayload, RefusedEvent
from ..group_chat import UNIQUE_NAME_PREFIX, attach_group_chat
from ..handlers import handle_event
from ..linking import link_on_first_phone
from ..media.downloads import download_message_media
from ..models import AbstractTwilioConversation, AbstractTwilioMessage
from ..persistence import HISTORY, save_new_messages_to_db
from ..phones import customer_phone_from_author, normalize_phone
from ..swappable import get_conversation_model, get_message_model
from .reading import TwilioHistory
from .records import conversation_event, delivery_summary, message_event

logger = logging.getLogger(__name__)

# How many times a page is stored again when webhooks keep storing its messages first.
PAGE_RACES = 10


@dataclass
class SyncReport:
    """What a run did (or, with ``dry_run``, would do)."""

    conversations_new: int = 0
    conversations_updated: int = 0
    conversations_unchanged: int = 0
    messages_new: int = 0
    messages_already: int = 0
    linked: int = 0
    media_fetched: int = 0
    gone: int = 0
    pages: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)

    @property
    def conversations(self) -> int:
        return self.conversations_new + self.conversations_updated + self.conversations_unchanged

    @property
    def rate(self) -> float:
        """Messages read a second, so far."""
        elapsed = time.monotonic() - self.started
        return (self.messages_new + self.messages_already) / elapsed if elapsed > 0 else 0.0


@dataclass(frozen=True)
class ConversationDone:
    """One conversation's outcome, for ``--verbosity 2`` and ``--dry-run``."""

    conversation_sid: str
    created: bool
    changed: bool
    messages_new: int
    messages_already: int
    linked: bool
    error: str = ""
    gone: bool = False


class Sync:
    """One run. ``progress(report, where)`` is called after each page; ``done`` after
    each conversation."""

    def __init__(self, reader: TwilioHistory, *, dry_run: bool = False, media: bool = False,
                 progress: Callable[[SyncReport, str], None] | None = None,
                 done: Callable[[ConversationDone], None] | None = None) -> None:
        self.reader = reader
        self.dry_run = dry_run
        self.media = media
        self.report = SyncReport()
        self.progress = progress or (lambda report, where: None)
        self.done = done or (lambda outcome: None)

    # Which conversations

    def run(self, *, since: str = "", until: str = "", state: str = "", conversation_sid: str = "",
            phone: str = "", missing: bool = False) -> SyncReport:
        if missing:
            for conversation in self._stored(conversation_sid, phone):
                self._guarded(conversation.conversation_sid, partial(self.repair, conversation))
            return self.report
        if conversation_sid or phone:
            # Fetched one by one inside the guard: one conversation gone (404) or refused
            # fails alone, as in a listing.
            for sid in [conversation_sid] if conversation_sid else self._sids_of(phone):
                self._guarded(sid, partial(self._fetch_and_sync, sid))
            return self.report
        for page in self.reader.conversation_pages(since=since, until=until, state=state):
            for record in page:
                self._guarded(record.sid, partial(self.sync_conversation, record))
        return self.report

    def _sids_of(self, phone: str) -> Iterator[str]:
        seen: set[str] = set()
        for address in addresses_of(phone):
            for sids in self.reader.conversations_of(address):
                for sid in sids:
                    if sid not in seen:
                        seen.add(sid)
                        yield sid

    def _fetch_and_sync(self, conversation_sid: str) -> ConversationDone:
        return self.sync_conversation(self.reader.conversation(conversation_sid))

    def _stored(self, conversation_sid: str, phone: str) -> Iterator[AbstractTwilioConversation]:
        # The main account's: a sub-account's conversations cannot be read with its
        # credentials (they come from their own webhooks).
        rows = get_conversation_model()._default_manager.filter(
            Q(account_sid="") | Q(account_sid=convlink_settings.ACCOUNT_SID)).order_by("pk")
        if conversation_sid:
            rows = rows.filter(conversation_sid=conversation_sid)
        if phone:
            rows = rows.filter(customer_phone=normalize_phone(phone) or phone)
        return rows.iterator(chunk_size=500)

    def _guarded(self, conversation_sid: str, work: Callable[[], ConversationDone]) -> None:
        """One conversation: its failure is recorded, and the run goes on."""
        try:
            outcome = work()
        except (ApiError, InvalidPayload, RefusedEvent, DatabaseError) as error:
            # A database error too (a deadlock or a race that outlasted the retries):
            # the page's transaction rolled back, the next run takes it up.
            logger.warning("History of conversation %s not brought in: %s", conversation_sid, error)
            self.report.failed.append((conversation_sid, str(error)))
            outcome = ConversationDone(conversation_sid, False, False, 0, 0, False, error=str(error))
        self.done(outcome)

    # One conversation

    def sync_conversation(self, record: Any) -> ConversationDone:
        """The conversation ``record`` (an SDK instance) and all its messages."""
        sid = record.sid
        # A group chat the app made is not a customer's conversation: its binding
        # (customer and manager) must not run a booking lookup of its own. It takes its
        # customer's link when attached (_adopt_group_chat), as when the app made it.
        is_ours = (record.unique_name or "").startswith(UNIQUE_NAME_PREFIX)
        event = conversation_event(record, [] if is_ours else self.reader.addresses(sid))
        Conversation = get_conversation_model()
        before = Conversation._default_manager.filter(conversation_sid=event.conversation_sid) \
            .values_list("updated_at", "booking_id").first()
        if self.dry_run:
            new, already = self._store_messages(None, sid, record.chat_service_sid or "",
                                                self.reader.message_pages(sid))
            self._count_conversation(created=before is None, changed=before is None)
            return ConversationDone(sid, before is None, before is None, new, already, False)
        handle_event(event, origin=HISTORY)
        conversation = Conversation._default_manager.get(conversation_sid=event.conversation_sid)
        self._adopt_group_chat(conversation)
        changed = before is None or before[0] != conversation.updated_at
        self._count_conversation(created=before is None, changed=changed)
        new, already = self._store_messages(conversation, sid, conversation.chat_service_sid,
                                            self.reader.message_pages(sid))
        # Linked by this run: a customer's conversation that had no booking and has one
        # now (a group chat only copies its customer's).
        after = Conversation._default_manager.filter(pk=conversation.pk).values_list(
            "booking_id", "is_group_chat").first()
        linked_now = (before is None or before[1] is None) and after is not None and \
            after[0] is not None and not after[1]
        self.report.linked += linked_now
        return ConversationDone(sid, before is None, changed, new, already, linked_now)

    def _count_conversation(self, *, created: bool, changed: bool) -> None:
        if created:
            self.report.conversations_new += 1
        elif changed:
            self.report.conversations_updated += 1
        else:
            self.report.conversations_unchanged += 1

    def _adopt_group_chat(self, conversation: AbstractTwilioConversation) -> None:
        """A group chat the app made (unique name ``convlink-group-<customer's SID>``)
        attached to its customer's conversation, whichever of the two came first."""
        manager = type(conversation)._default_manager
        customer: AbstractTwilioConversation | None
        group: AbstractTwilioConversation | None
        if conversation.unique_name.startswith(UNIQUE_NAME_PREFIX):
            group = conversation
            customer = manager.filter(
                conversation_sid=conversation.unique_name.removeprefix(UNIQUE_NAME_PREFIX)).first()
        else:
            customer = conversation
            group = manager.filter(unique_name=UNIQUE_NAME_PREFIX + conversation.conversation_sid).first()
        if group is None or (customer is not None and customer.group_chat_id == group.pk):
            return
        if customer is None:
            # Its customer's conversation is not here (yet): marked a group chat, so that
            # it is neither listed as a customer nor linked as one meanwhile.
            if not group.is_group_chat:
                manager.filter(pk=group.pk).update(is_group_chat=True, booking_lookup_at=timezone.now(),
                                                   updated_at=timezone.now())
            return
        with transaction.atomic():
            attach_group_chat(customer, group)

    def _store_messages(self, conversation: AbstractTwilioConversation | None, sid: str,
                        chat_service_sid: str, pages: Iterable[list[Any]]) -> tuple[int, int]:
        """Each page of the conversation ``sid``'s messages stored, or in a dry run
        (``conversation`` None there when it is not stored yet) only counted; how many
        were new and how many already there."""
        manager = get_message_model()._default_manager
        new = already = 0
        for page in pages:
            events = [message_event(message, chat_service_sid) for message in page]
            if self.dry_run or conversation is None:
                added = len(events) - manager.filter(message_sid__in=[e.message_sid for e in events]).count()
            else:
                statuses = {event.message_sid: delivery_summary(message.delivery, event.author)
                            for event, message in zip(events, page, strict=True)}
                rows = self.store_page(conversation, events, statuses)
                added = len(rows)
                if self.media:
                    self._fetch_media(rows)
            new, already = new + added, already + len(events) - added
            self.report.messages_new += added
            self.report.messages_already += len(events) - added
            self.report.pages += 1
            self.progress(self.report, sid)
        return new, already

    def store_page(self, conversation: AbstractTwilioConversation, events: list[Any],
                   statuses: dict[str, str]) -> list[AbstractTwilioMessage]:
        """One page of messages, in one transaction; run again when a webhook stored one
        of them meanwhile (the next attempt leaves that one alone)."""
        def prepare(row: AbstractTwilioMessage, event: Any) -> None:
            row.delivery_status = statuses.get(event.message_sid, "")

        def work() -> list[AbstractTwilioMessage]:
            with transaction.atomic():
                rows = save_new_messages_to_db(conversation, events, origin=HISTORY, prepare=prepare)
                self._link_on_first_phone(conversation, events)
                return rows

        # Each refused INSERT means a webhook stored one of these messages meanwhile;
        # the next attempt reads the stored SIDs again and leaves it alone. Several
        # live webhooks may win in turn on the newest page, so more than one retry.
        for _ in range(PAGE_RACES - 1):
            try:
                return run_with_retries(work, what=f"storing history of {conversation.conversation_sid}")
            except IntegrityError:
                continue
        return run_with_retries(work, what=f"storing history of {conversation.conversation_sid}")

    @staticmethod
    def _link_on_first_phone(conversation: AbstractTwilioConversation, events: list[Any]) -> None:
        # As a webhook does on a customer's first message: the conversation's binding
        # (handled with the conversation) usually said it already.
        if conversation.booking_lookup_at is not None:
            return
        for event in events:
            phone = customer_phone_from_author(event.author)
            if phone is not None:
                link_on_first_phone(conversation, phone)
                return

    def _fetch_media(self, rows: list[AbstractTwilioMessage]) -> None:
        for row in rows:
            if row.media:
                outcome = download_message_media(row.pk, now=True)
                self.report.media_fetched += len(outcome.stored)

    # Repair

    def repair(self, conversation: AbstractTwilioConversation) -> ConversationDone:
        """Fetch only what a stored conversation misses: its messages newer than the
        newest stored, and those in a hole between stored indexes (Twilio's indexes may
        skip numbers, so a hole is only a suspicion: it is read, and whatever is not
        there is not stored). Newest first, a page at a time, stored as read, down to
        the oldest suspected gap; one request for a conversation without a gap. A
        conversation Twilio no longer has (404) is counted as gone, not failed."""
        sid = conversation.conversation_sid
        messages = get_message_model()._default_manager.filter(conversation_id=conversation.pk)
        try:
            newest = next(iter(self.reader.message_pages(sid, order="desc", page_size=1)), [])
        except ApiError as error:
            if error.status != 404:
                raise
            self.report.gone += 1
            return ConversationDone(sid, False, False, 0, 0, False, gone=True)
        floor = None
        if newest and newest[0].index is not None and not messages.filter(message_sid=newest[0].sid).exists():
            floor = first_gap(messages, newest[0].index)
        elif newest:
            floor = first_hole(messages)
        if floor is None:
            self.report.conversations_unchanged += 1
            return ConversationDone(sid, False, False, 0, 0, False)
        new = already = 0
        for page in self.reader.message_pages(sid, order="desc"):
            wanted = sorted((message for message in page
                             if message.index is not None and message.index >= floor),
                            key=lambda message: message.index)
            if wanted:
                added, seen = self._store_messages(conversation, sid, conversation.chat_service_sid, [wanted])
                new, already = new + added, already + seen
            indexes = [message.index for message in page if message.index is not None]
            if not indexes or min(indexes) <= floor:
                break
        self._count_conversation(created=False, changed=new > 0)
        return ConversationDone(sid, False, new > 0, new, already, False)


def first_hole(messages: Any) -> int | None:
    """The lowest index missing between the stored messages' indexes, or None."""
    stats = messages.exclude(index=None).aggregate(count=Count("index"), low=Min("index"), high=Max("index"))
    if not stats["count"] or stats["high"] - stats["low"] + 1 <= stats["count"]:
        return None
    indexes = messages.exclude(index=None).order_by("index").values_list("index", flat=True).distinct()
    for expected, index in enumerate(indexes.iterator(), start=stats["low"]):
        if index != expected:
            return expected
    return None


def first_gap(messages: Any, newest_index: int) -> int:
    """Where to read from, down to, for a stored conversation whose newest message at
    Twilio (index ``newest_index``) is not stored: the lowest hole between stored
    indexes, else just above the highest stored one. Rows without an index (stored by
    ``send_message``) count by their SIDs only."""
    hole = first_hole(messages)
    if hole is not None:
        return hole
    high = messages.exclude(index=None).aggregate(high=Max("index"))["high"]
    return 0 if high is None else min(high + 1, newest_index)


def addresses_of(phone: str) -> list[str]:
    """The participant addresses a customer's phone may have at Twilio: the number,
    and the same on WhatsApp."""
    normalized = normalize_phone(phone.removeprefix("whatsapp:"))
    if normalized is None:
        raise ValueError(f"{phone!r} is not a phone number.")
    return [normalized, f"whatsapp:{normalized}"]
