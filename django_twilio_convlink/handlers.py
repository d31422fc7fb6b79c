"""One function per event type, run in one transaction: what a webhook does to the
database. Plain functions over models, callable without HTTP (replays, tests)."""

from __future__ import annotations

import logging

from django.db import transaction

from .events import ConversationEvent, Event, MessageEvent, OtherEvent
from .linking import link_on_first_phone
from .persistence import conversation_fields, save_conversation_to_db, save_message_to_db
from .phones import customer_phone_from_addresses, customer_phone_from_author

logger = logging.getLogger(__name__)


def handle_message_event(event: MessageEvent) -> None:
    conversation, _ = save_conversation_to_db(event.conversation_sid)
    message, created = save_message_to_db(conversation, event)
    if not created:
        return
    # Only a customer's message can teach the app the customer's phone; a system
    # author (Twilio number, manager, assistant) must not cost a booking query.
    if conversation.booking_lookup_at is None:
        phone = customer_phone_from_author(event.author)
        if phone is not None:
            link_on_first_phone(conversation, phone)


def handle_conversation_event(event: ConversationEvent) -> None:
    conversation, _ = save_conversation_to_db(event.conversation_sid, **conversation_fields(event))
    if conversation.booking_lookup_at is None:
        phone = customer_phone_from_addresses(event.binding_address)
        if phone is not None:
            link_on_first_phone(conversation, phone)


def handle_event(event: Event) -> None:
    """Apply ``event`` atomically: on any error nothing of it is written."""
    if isinstance(event, OtherEvent):
        logger.debug("Acknowledged %s without storing it", event.event_type)
        return
    with transaction.atomic():
        if isinstance(event, MessageEvent):
            handle_message_event(event)
        else:
            handle_conversation_event(event)
