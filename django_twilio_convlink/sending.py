"""Sending a message from the site: ``send_message``, the package root's public API.

The message is posted through the configured API backend, then stored the way a
webhook stores one (``persistence.save_message_to_db``, keyed by Twilio's SID): one
row whichever comes first, this call's save or the echo webhook a site may have
enabled for messages made through the REST API. Its ``message_received`` carries
``origin="api"``.

What Twilio would refuse, or what must not reach a customer, is refused before any
call: an opted-out customer (``CustomerOptedOut``), an empty message or a body over
Twilio's 1,600 characters (``InvalidMessage``), and a WhatsApp customer who has not
written in 24 hours (an ``ApiError`` with Twilio's code 63016).
"""

from __future__ import annotations

import datetime
import logging
import re
from typing import Any

from django.db import transaction
from django.utils import timezone

from .api import get_api_backend
from .conf import convlink_settings
from .db import run_with_retries
from .events import MessageEvent
from .exceptions import ApiError, InvalidMessage
from .models import AbstractTwilioConversation, AbstractTwilioMessage
from .optouts import refuse_if_opted_out
from .persistence import save_message_to_db
from .phones import customer_phone_from_author
from .swappable import get_message_model

logger = logging.getLogger(__name__)

# Twilio's limit for a message body sent through the Conversations API.
MAX_BODY = 1600
# WhatsApp's customer service window: free-form messages only within 24 hours of the
# customer's last message (Twilio error 63016 outside it).
WHATSAPP_WINDOW = datetime.timedelta(hours=24)
WHATSAPP_WINDOW_ERROR = 63016
MEDIA_SID = re.compile(r"^ME[0-9a-fA-F]{32}$")


def send_message(conversation: AbstractTwilioConversation, body: str, *, media: str | None = None,
                 author: str | None = None) -> AbstractTwilioMessage:
    """Post ``body`` (and/or the uploaded media ``media``, an ME... SID) into
    ``conversation`` as ``author`` (default ASSISTANT_IDENTITY); store and return the
    message. Raises InvalidMessage, CustomerOptedOut or ApiError (63016 for WhatsApp
    outside its 24-hour window) before any call; ApiError with Twilio's code and
    message when Twilio refuses or fails."""
    body = body or ""
    author = author or convlink_settings.ASSISTANT_IDENTITY
    if not body.strip() and not media:
        raise InvalidMessage("Nothing to send: the message has no text and no media.")
    if len(body) > MAX_BODY:
        raise InvalidMessage(f"The message is {len(body)} characters; Twilio takes at most {MAX_BODY}. "
                             "Shorten it, or send it as several messages.")
    if media is not None and not MEDIA_SID.fullmatch(media):
        raise InvalidMessage(f"{media!r} is not a Twilio media SID (ME...): upload the file to Twilio first.")
    refuse_if_opted_out(conversation.customer_phone)
    _refuse_outside_whatsapp_window(conversation)
    attributes: dict[str, Any] = {}
    sid = get_api_backend().send_message(conversation_sid=conversation.conversation_sid, author=author,
                                         body=body, media_sid=media or "", attributes=attributes)
    now = timezone.now()
    event = MessageEvent(
        event_type="onMessageAdded", conversation_sid=conversation.conversation_sid,
        account_sid=conversation.account_sid, message_sid=sid, author=author, body=body, index=None,
        date_created=now, date_updated=now, date_removed=None, source="API", participant_sid="",
        attributes=attributes, media=[{"Sid": media}] if media else [],
        chat_service_sid=conversation.chat_service_sid)

    def store() -> AbstractTwilioMessage:
        with transaction.atomic():
            message, _ = save_message_to_db(conversation, event, origin="api")
        return message

    # Twilio has the message now: whatever the database does, it must be stored.
    message = run_with_retries(store, what=f"storing sent message {sid}", duplicates=True)
    logger.info("Sent %s into conversation %s as %s", sid, conversation.conversation_sid, author)
    return message


def _refuse_outside_whatsapp_window(conversation: AbstractTwilioConversation) -> None:
    """A WhatsApp conversation takes free-form messages only within 24 hours of the
    customer's last message; Twilio would refuse it with 63016."""
    last = (get_message_model()._default_manager.filter(conversation_id=conversation.pk, direction="inbound")
            .order_by("-date_created", "-pk").values_list("author", "date_created", "created_at").first())
    if last is None or not str(last[0]).startswith("whatsapp:"):
        return
    if customer_phone_from_author(last[0]) is None:
        return
    when = last[1] or last[2]
    if when is not None and timezone.now() - when > WHATSAPP_WINDOW:
        raise ApiError(
            f"The customer last wrote on WhatsApp at {when:%Y-%m-%d %H:%M} UTC, more than 24 hours ago: "
            "WhatsApp takes only an approved template outside its 24-hour window (Twilio error 63016). "
            "Nothing was sent.", code=WHATSAPP_WINDOW_ERROR, transient=False)
