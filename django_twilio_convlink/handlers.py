"""What a webhook event does to the database: one transaction per event, and the one
place where the account rule is applied. Plain functions over models, callable
without HTTP (replays, tests).

A message event reads its conversation first, outside any transaction, so that a
redelivery costs one SELECT and a later message a transaction of one INSERT
(bench/README.rst has what each scenario costs).

Which account may write what (``accounts.check_account``) is checked here and only
here, on every row an event would change, before anything of it is written: the
conversation it finds, the one the upsert returns (a concurrent delivery may have
created it), and the conversation an event the app does not store names.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from django.db import IntegrityError, transaction

from . import get_conversation_model
from .accounts import check_account, may_skip_account_checks
from .db import run_with_retries
from .events import ConversationEvent, Event, MessageEvent, OtherEvent, ReceiptEvent
from .linking import link_on_first_phone
from .persistence import (
    complete_conversation,
    conversation_fields,
    find_conversation,
    lock_conversation,
    not_part_of,
    refuse_if_stored_elsewhere,
    save_message_to_db,
)
from .phones import customer_phone_from_addresses, customer_phone_from_author
from .receipts import apply, entry, lock_message, park

logger = logging.getLogger(__name__)


def _nothing() -> None:
    pass


def handle_event(event: Event, *, mark_processed: Callable[[], None] = _nothing,
                 origin: str = "webhook") -> None:
    """Apply ``event`` atomically: on any error nothing of it is written.

    ``mark_processed`` (the delivery log's mark, ``deliveries``) is the last statement
    of the event's transaction, so it commits with the event's rows or not at all;
    it runs alone when there is nothing to write (a redelivery, an event the app
    does not store). ``origin`` ("webhook", "replay") goes to the message signals.

    A deadlock victim is run again, and so is a message INSERT refused as a
    duplicate: a concurrent delivery of the same message committed first, and the
    next attempt finds its row (``db.run_with_retries``).
    """
    if isinstance(event, OtherEvent):
        _refuse_if_foreign(event)
        logger.debug("Acknowledged %s without storing it", event.event_type)
        mark_processed()
        return

    def work() -> None:
        if isinstance(event, MessageEvent):
            _apply_message_event(event, mark_processed, origin)
        elif isinstance(event, ReceiptEvent):
            _apply_receipt_event(event, mark_processed, origin)
        else:
            _apply_conversation_event(event, mark_processed)

    def refuse_if_elsewhere(error: IntegrityError) -> None:
        # The unique message SID refused the INSERT. A concurrent copy of the same
        # event committed first (the next attempt finds it), or the SID is stored
        # under another conversation than the event names, which no attempt can ever
        # change: refuse it (400), don't loop on 500s.
        if isinstance(event, MessageEvent):
            refuse_if_stored_elsewhere(event)

    run_with_retries(work, what=event.event_type, duplicates=True, on_duplicate=refuse_if_elsewhere)


def _apply_message_event(event: MessageEvent, mark_processed: Callable[[], None], origin: str) -> None:
    conversation, stored_in, waiting = find_conversation(event.conversation_sid, event.message_sid)
    if conversation is not None:
        check_account(conversation, event.account_sid)
        if stored_in is not None and stored_in != conversation.pk:
            refuse_if_stored_elsewhere(event)
    stored = stored_in is not None
    if stored and event.event_type == "onMessageAdded":
        # A redelivery (or a duplicate that lost the race): the stored row is the
        # message, nothing to write.
        mark_processed()
        return
    with transaction.atomic():
        if conversation is None:
            # The service SID costs nothing here and saves the media download a
            # call to Twilio to learn it.
            conversation, _ = lock_conversation(event.conversation_sid, absent=True,
                                                account_sid=event.account_sid,
                                                chat_service_sid=event.chat_service_sid)
            check_account(conversation, event.account_sid)
        # A conversation created just now has no message a receipt could have waited
        # for: receipts create the conversation of the message they wait for.
        _, created = save_message_to_db(conversation, event, stored=stored, origin=origin,
                                        receipts_waiting=waiting)
        if created:
            # Only a customer's message can teach the app the customer's phone; a
            # system author (Twilio number, manager, assistant) must not cost a
            # booking query.
            if conversation.booking_lookup_at is None:
                phone = customer_phone_from_author(event.author)
                if phone is not None:
                    link_on_first_phone(conversation, phone)
        mark_processed()


def _apply_conversation_event(event: ConversationEvent, mark_processed: Callable[[], None]) -> None:
    fields = conversation_fields(event)
    with transaction.atomic():
        conversation, created = lock_conversation(event.conversation_sid, account_sid=event.account_sid,
                                                  **fields)
        check_account(conversation, event.account_sid)
        if not created:
            complete_conversation(conversation, fields, overwrite=event.event_type != "onConversationAdded")
        if conversation.booking_lookup_at is None:
            phone = customer_phone_from_addresses(event.binding_address)
            if phone is not None:
                link_on_first_phone(conversation, phone)
        mark_processed()


def _apply_receipt_event(event: ReceiptEvent, mark_processed: Callable[[], None], origin: str) -> None:
    """A delivery receipt: the message's row locked and updated, or the receipt kept
    until its message is stored (``receipts``)."""
    with transaction.atomic():
        message = lock_message(event.message_sid)
        if message is None:
            if event.conversation_sid:
                # Created here if need be, as a message event would: the message that
                # arrives later then finds its conversation, and with it this receipt.
                conversation, _ = lock_conversation(event.conversation_sid, account_sid=event.account_sid)
                check_account(conversation, event.account_sid)
            if event.status:
                park(event, origin=origin)
        else:
            conversation = message.conversation
            check_account(conversation, event.account_sid)
            if event.conversation_sid and event.conversation_sid != conversation.conversation_sid:
                raise not_part_of(event.message_sid, event.conversation_sid, conversation.conversation_sid)
            if event.status:  # else a status Twilio added since: logged by events
                apply(message, event.participant_sid, entry(event), origin=origin)
        mark_processed()


def _refuse_if_foreign(event: OtherEvent) -> None:
    """Raise ForeignAccount when an event the app does not store names a conversation
    its signer does not own. Acknowledging it would still send ``event_received`` to
    the site's receivers, and put a processed delivery in the log that
    ``record_conversation_accounts`` once read as the conversation's owner. One
    SELECT, and none on a site without sub-accounts."""
    if not event.conversation_sid or may_skip_account_checks():
        return
    conversation = get_conversation_model()._default_manager.filter(
        conversation_sid=event.conversation_sid).only("conversation_sid", "account_sid").first()
    if conversation is not None:
        check_account(conversation, event.account_sid)
