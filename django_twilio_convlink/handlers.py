"""One function per event type, run in one transaction: what a webhook does to the
database. Plain functions over models, callable without HTTP (replays, tests)."""

from __future__ import annotations

import logging
import random
import time

from django.db import OperationalError, transaction

from .events import ConversationEvent, Event, MessageEvent, OtherEvent
from .group_chat import wants_forward
from .linking import link_on_first_phone
from .persistence import conversation_fields, is_transient, save_conversation_to_db, save_message_to_db
from .phones import customer_phone_from_addresses, customer_phone_from_author

logger = logging.getLogger(__name__)
# How often a deadlock victim runs again.
ATTEMPTS = 3


def handle_message_event(event: MessageEvent) -> None:
    conversation, _ = save_conversation_to_db(event.conversation_sid)
    forward = wants_forward(conversation, event.author)
    message, created = save_message_to_db(conversation, event, forward=forward)
    if not created:
        return
    if forward:
        from .tasks import enqueue_forward  # the tasks framework loads on first use

        enqueue_forward(message.pk)
    # Only a customer's message can teach the app the customer's phone; a system
    # author (Twilio number, manager, assistant) must not cost a booking query.
    if conversation.booking_lookup_at is None:
        phone = customer_phone_from_author(event.author)
        if phone is not None:
            link_on_first_phone(conversation, phone)


def handle_conversation_event(event: ConversationEvent) -> None:
    conversation, _ = save_conversation_to_db(
        event.conversation_sid,
        overwrite=event.event_type != "onConversationAdded",
        **conversation_fields(event),
    )
    if conversation.booking_lookup_at is None:
        phone = customer_phone_from_addresses(event.binding_address)
        if phone is not None:
            link_on_first_phone(conversation, phone)


def handle_event(event: Event) -> None:
    """Apply ``event`` atomically: on any error nothing of it is written.

    When the database picks this transaction as a deadlock victim, it is run again
    (up to three times). InnoDB does this to concurrent INSERT IGNOREs of one new
    conversation SID: each holds a shared lock on the duplicate key and waits for the
    other's exclusive one. Inside a caller's transaction there is nothing to retry:
    the victim's whole transaction is gone, so the error goes up.
    """
    if isinstance(event, OtherEvent):
        logger.debug("Acknowledged %s without storing it", event.event_type)
        return
    handler = handle_message_event if isinstance(event, MessageEvent) else handle_conversation_event
    retry = not transaction.get_connection().in_atomic_block
    for attempt in range(1, ATTEMPTS + 1):
        try:
            with transaction.atomic():
                handler(event)
            return
        except OperationalError as error:
            if not (retry and attempt < ATTEMPTS and is_transient(error)):
                raise
            logger.info("Retrying %s after %s (attempt %d)", event.event_type, error, attempt)
            time.sleep(random.uniform(0.01, 0.05) * attempt)
