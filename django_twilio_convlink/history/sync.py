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

from django.db import transaction
from django.db.models import Count, Max, Min

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
from .reading import PAGE_SIZE, TwilioHistory
from .records import conversation_event, delivery_summary, message_event

logger = logging.getLogger(__name__)


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

    def run(self, *, since: str = "", state: str = "", conversation_sid: str = "", phone: str = "",
            missing: bool = False) -> SyncReport:
        if missing:
            for conversation in self._stored(conversation_sid, phone):
                self._guarded(conversation.conversation_sid, partial(self.repair, conversation))
            return self.report
        for record in self._records(since=since, state=state, conversation_sid=conversation_sid, phone=phone):
            self._guarded(record.sid, partial(self.sync_conversation, record))
        return self.report

    def _records(self, *, since: str, state: str, conversation_sid: str, phone: str) -> Iterator[Any]:
        if conversation_sid:
            yield self.reader.conversation(conversation_sid)
            return
        if phone:
            seen: set[str] = set()
            for address in addresses_of(phone):
                for sids in self.reader.conversations_of(address):
                    for sid in sids:
                        if sid not in seen:
                            seen.add(sid)
                            yield self.reader.conversation(sid)
            return
        for page in self.reader.conversation_pages(since=since, state=state):
            yield from page

    def _stored(self, conversation_sid: str, phone: str) -> Iterator[AbstractTwilioConversation]:
        rows = get_conversation_model()._default_manager.order_by("pk")
        if conversation_sid:
            rows = rows.filter(conversation_sid=conversation_sid)
        if phone:
            rows = rows.filter(customer_phone=normalize_phone(phone) or phone)
        return rows.iterator(chunk_size=500)

    def _guarded(self, conversation_sid: str, work: Callable[[], ConversationDone]) -> None:
        """One conversation: its failure is recorded, and the run goes on."""
        try:
            outcome = work()
        except (ApiError, InvalidPayload, RefusedEvent) as error:
            logger.warning("History of conversation %s not brought in: %s", conversation_sid, error)
            self.report.failed.append((conversation_sid, str(error)))
            outcome = ConversationDone(conversation_sid, False, False, 0, 0, False, error=str(error))
        self.done(outcome)

    # One conversation

    def sync_conversation(self, record: Any) -> ConversationDone:
        """The conversation ``record`` (an SDK instance) and all its messages."""
        sid = record.sid
        event = conversation_event(record, self.reader.addresses(sid))
        Conversation = get_conversation_model()
        before = Conversation._default_manager.filter(conversation_sid=event.conversation_sid) \
            .values_list("updated_at", "booking_id").first()
        if self.dry_run:
            new, already = self._count_messages(sid, record.chat_service_sid or "")
            self._count_conversation(created=before is None, changed=before is None)
            return ConversationDone(sid, before is None, before is None, new, already, False)
        handle_event(event, origin=HISTORY)
        conversation = Conversation._default_manager.get(conversation_sid=event.conversation_sid)
        self._adopt_group_chat(conversation)
        changed = before is None or before[0] != conversation.updated_at
        self._count_conversation(created=before is None, changed=changed)
        new, already = self._store_messages(conversation, self.reader.message_pages(sid))
        booking = Conversation._default_manager.filter(pk=conversation.pk).values_list("booking_id",
                                                                                   flat=True)
        linked_now = (before is None or before[1] is None) and booking.first() is not None
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
        if customer is None or group is None or customer.group_chat_id == group.pk:
            return
        with transaction.atomic():
            attach_group_chat(customer, group)

    def _store_messages(self, conversation: AbstractTwilioConversation,
                        pages: Iterable[list[Any]]) -> tuple[int, int]:
        new = already = 0
        for page in pages:
            events = [message_event(message, conversation.chat_service_sid) for message in page]
            statuses = {event.message_sid: delivery_summary(message.delivery, event.author)
                        for event, message in zip(events, page, strict=True)}
            rows = self.store_page(conversation, events, statuses)
            new += len(rows)
            already += len(events) - len(rows)
            self.report.messages_new += len(rows)
            self.report.messages_already += len(events) - len(rows)
            self.report.pages += 1
            if self.media:
                self._fetch_media(rows)
            self.progress(self.report, conversation.conversation_sid)
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

        return run_with_retries(work, what=f"storing history of {conversation.conversation_sid}",
                                duplicates=True)

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

    def _count_messages(self, sid: str, chat_service_sid: str) -> tuple[int, int]:
        """Dry run: how many of the conversation's messages are not stored yet."""
        manager = get_message_model()._default_manager
        new = already = 0
        for page in self.reader.message_pages(sid):
            sids = [message_event(message, chat_service_sid).message_sid for message in page]
            stored = manager.filter(message_sid__in=sids).count()
            new += len(sids) - stored
            already += stored
            self.report.messages_new += len(sids) - stored
            self.report.messages_already += stored
            self.report.pages += 1
            self.progress(self.report, sid)
        return new, already

    # Repair

    def repair(self, conversation: AbstractTwilioConversation) -> ConversationDone:
        """Fetch only what a stored conversation misses: its messages newer than the
        newest stored, and those in a hole between stored indexes (Twilio's indexes may
        skip numbers, so a hole is only a suspicion: it is read, and whatever is not
        there is not stored). Newest first, down to the oldest suspected gap; one
        request for a conversation without a gap."""
        sid = conversation.conversation_sid
        messages = get_message_model()._default_manager.filter(conversation_id=conversation.pk)
        stats = messages.aggregate(count=Count("pk"), low=Min("index"), high=Max("index"))
        newest = next(iter(self.reader.message_pages(sid, order="desc", page_size=1)), [])
        if not newest or newest[0].index is None:
            self.report.conversations_unchanged += 1
            return ConversationDone(sid, False, False, 0, 0, False)
        floor = first_gap(stats, messages, newest[0].index)
        if floor is None:
            self.report.conversations_unchanged += 1
            return ConversationDone(sid, False, False, 0, 0, False)
        wanted: list[Any] = []
        for page in self.reader.message_pages(sid, order="desc"):
            wanted += [message for message in page if message.index is not None and message.index >= floor]
            if not page or min(message.index for message in page if message.index is not None) <= floor:
                break
        wanted.sort(key=lambda message: message.index)
        if self.dry_run:
            stored = messages.filter(message_sid__in=[m.sid for m in wanted]).count()
            self.report.messages_new += len(wanted) - stored
            self.report.messages_already += stored
            self.report.conversations_updated += 1
            return ConversationDone(sid, False, True, len(wanted) - stored, stored, False)
        pages = [wanted[start:start + PAGE_SIZE] for start in range(0, len(wanted), PAGE_SIZE)]
        new, already = self._store_messages(conversation, pages)
        self.report.conversations_updated += 1
        return ConversationDone(sid, False, True, new, already, False)


def first_gap(stats: dict[str, Any], messages: Any, newest_index: int) -> int | None:
    """The lowest index that may be missing from a stored conversation whose newest
    message at Twilio has ``newest_index``; None when nothing is."""
    count, low, high = stats["count"], stats["low"], stats["high"]
    if not count or high is None:
        return 0
    if high - low + 1 > count:
        indexes = list(messages.exclude(index=None).order_by("index").values_list("index", flat=True))
        for expected, index in enumerate(indexes, start=indexes[0]):
            if index != expected:
                return expected
    return high + 1 if newest_index > high else None


def addresses_of(phone: str) -> list[str]:
    """The participant addresses a customer's phone may have at Twilio: the number,
    and the same on WhatsApp."""
    normalized = normalize_phone(phone.removeprefix("whatsapp:"))
    if normalized is None:
        raise ValueError(f"{phone!r} is not a phone number.")
    return [normalized, f"whatsapp:{normalized}"]
