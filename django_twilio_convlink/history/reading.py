"""What the history sync reads from Twilio's REST API, through the SDK: conversations,
their participants and messages, page by page, with Twilio's rate limit waited out.

Nothing here writes to Twilio or to the database. Pages are read one at a time
(``Page.next_page``), never whole lists, so memory stays flat however big the
account; each page is asked again after a 429 (Twilio's errors 20429 and 50074) with
exponential backoff. The SDK raises a plain ``TwilioException("Unable to fetch page",
response)`` for a page that failed, a 429 included, and a ``TwilioRestException`` for
a fetch: both are read for their HTTP status here.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

from twilio.base.exceptions import TwilioException, TwilioRestException

from ..api import build_client, to_api_error
from ..exceptions import ApiError

logger = logging.getLogger(__name__)

PAGE_SIZE = 100  # Twilio's largest page for conversations and messages
PHONE_PAGE_SIZE = 50  # ... and for a phone's conversations

T = TypeVar("T")


@dataclass(frozen=True)
class Backoff:
    """How a 429 is waited out: ``first`` seconds, doubled each time, at most
    ``longest``, ``tries`` times before the sync gives up on what it was reading."""

    first: float = 1.0
    longest: float = 60.0
    tries: int = 8
    sleep: Callable[[float], None] = time.sleep

    def delays(self) -> Iterator[float]:
        for attempt in range(self.tries - 1):
            yield min(self.first * 2 ** attempt, self.longest)


def status_of(error: Exception) -> int | None:
    """The HTTP status of a failed SDK call: a ``TwilioRestException``'s own, or that of
    the response a page's plain ``TwilioException`` carries."""
    if isinstance(error, TwilioRestException):
        return error.status
    if isinstance(error, TwilioException) and len(error.args) > 1:
        return getattr(error.args[1], "status_code", None)
    return getattr(error, "status", None)


def _failed_page(error: Exception) -> bool:
    """A page's plain ``TwilioException("Unable to fetch page", response)``; not the
    SDK's ``TwilioRestException`` nor its RFC 9457 ``TwilioServiceException`` (a
    ``TwilioException`` without that response), which ``api.to_api_error`` reads."""
    return (isinstance(error, TwilioException) and not isinstance(error, TwilioRestException)
            and len(error.args) > 1 and hasattr(error.args[1], "status_code"))


def api_error(error: Exception) -> ApiError:
    """``error`` as the app's ApiError, a failed page's included (its body names
    Twilio's code and message)."""
    status = status_of(error)
    if _failed_page(error) and status:
        try:
            body = json.loads(getattr(error.args[1], "text", "") or "{}")
        except ValueError:
            body = {}
        body = body if isinstance(body, dict) else {}
        code = body.get("code")
        return ApiError(str(body.get("message") or f"Unable to fetch page (HTTP {status})"),
                        code=code if isinstance(code, int) else None, status=status,
                        transient=status == 429 or status >= 500)
    return to_api_error(error)


class TwilioHistory:
    """The reads of one sync run, on one SDK client (``API_BASE_URL`` and the
    credentials come from settings, as for every other Twilio call)."""

    def __init__(self, *, backoff: Backoff | None = None, client: Any = None) -> None:
        self.backoff = backoff or Backoff()
        self.client = client if client is not None else build_client()
        self.requests = 0
        self.waited = 0.0

    @property
    def conversations_api(self) -> Any:
        return self.client.conversations.v1

    def call(self, read: Callable[[], T], what: str) -> T:
        """``read()``, asked again after each 429 (and after a 5xx or a timeout, which
        are as passing) until ``Backoff.tries``; any other failure raises ApiError."""
        delays = self.backoff.delays()
        while True:
            self.requests += 1
            try:
                return read()
            except Exception as exc:
                error = api_error(exc)
                delay = next(delays, None) if error.transient else None
                if delay is None:
                    raise error from exc
                logger.warning("Twilio answered %s to %s; trying again in %.1f s", error.status or error,
                               what, delay)
                self.backoff.sleep(delay)
                self.waited += delay

    def pages(self, first: Callable[[], Any], what: str) -> Iterator[Any]:
        """The pages of a list, the first from ``first()``, the others by following
        ``next_page_url``; each page is a list of SDK instances."""
        page = self.call(first, what)
        number = 1
        while page is not None:
            yield list(page)
            number += 1
            current = page
            page = self.call(current.next_page, f"{what}, page {number}")

    def conversation_pages(self, *, since: str = "", until: str = "", state: str = "") -> Iterator[list[Any]]:
        """Every conversation of the account (created on or after ``since`` and before
        ``until``, both ``YYYY-MM-DD``, in ``state``), 100 a page. Twilio takes the
        dates as the start of the day in UTC (StartDate, EndDate)."""
        options: dict[str, Any] = {"page_size": PAGE_SIZE}
        if since:
            options["start_date"] = f"{since}T00:00:00Z"
        if until:
            options["end_date"] = f"{until}T00:00:00Z"
        if state:
            options["state"] = state
        return self.pages(lambda: self.conversations_api.conversations.page(**options),
                          "listing conversations")

    def conversation(self, conversation_sid: str) -> Any:
        return self.call(lambda: self.conversations_api.conversations(conversation_sid).fetch(),
                         f"fetching conversation {conversation_sid}")

    def conversations_of(self, address: str) -> Iterator[list[str]]:
        """The SIDs of the conversations ``address`` (a phone, or whatsapp:+...) takes
        part in, a page at a time."""
        pages = self.pages(lambda: self.conversations_api.participant_conversations.page(
            address=address, page_size=PHONE_PAGE_SIZE), f"listing the conversations of {address}")
        for page in pages:
            yield [item.conversation_sid for item in page if item.conversation_sid]

    def addresses(self, conversation_sid: str) -> list[str]:
        """The messaging addresses (phones, whatsapp:+...) of the conversation's
        participants: who the customer is, as the conversation's binding says."""
        found: list[str] = []
        pages = self.pages(lambda: self.conversations_api.conversations(conversation_sid).participants.page(
            page_size=PAGE_SIZE), f"listing the participants of {conversation_sid}")
        for page in pages:
            for participant in page:
                address = (participant.messaging_binding or {}).get("address")
                if address:
                    found.append(address)
        return found

    def message_pages(self, conversation_sid: str, *, order: str = "asc",
                      page_size: int = PAGE_SIZE) -> Iterator[list[Any]]:
        """The conversation's messages, ``order`` by index, ``page_size`` a page."""
        return self.pages(lambda: self.conversations_api.conversations(conversation_sid).messages.page(
            order=order, page_size=page_size), f"listing the messages of {conversation_sid}")
