"""The app's exceptions, in one place, each with what it means for a webhook delivery.

A delivery that fails with one of these is answered with its ``http_status`` and
recorded in the delivery log with its ``delivery_status`` (``deliveries`` does both);
any other exception while processing is a 500 and ``DeliveryStatus.FAILED``, which
Twilio retries. ``ApiError`` is the Twilio REST API's answer to the app's own calls
(the group chat's), never a webhook's: its ``status`` is Twilio's HTTP status.

The classes are also importable from where they were first defined and documented
(``events.InvalidPayload``, ``events.RefusedEvent``, ``events.ForeignAccount``,
``api.ApiError``).
"""

from __future__ import annotations

from .choices import DeliveryStatus


class InvalidPayload(ValueError):
    """The delivery is signed but its fields are not what Twilio sends. Nothing of it
    is written; 400, which Twilio does not retry."""

    http_status = 400
    delivery_status = DeliveryStatus.REJECTED


class RefusedEvent(ValueError):
    """A signed, well-formed event that contradicts what is stored, so that applying it
    would change data it has no claim to (a message SID filed under another
    conversation). Nothing of it is written; the delivery is logged with the reason
    and the answer is 400, which Twilio does not retry: the same input would be
    refused again, forever.

    ``str()`` is the answer, which names only what the delivery itself named;
    ``detail`` (the log, the delivery row) may name what is stored, such as another
    account's conversation."""

    http_status = 400
    delivery_status = DeliveryStatus.REJECTED

    def __init__(self, message: str, *, detail: str = "") -> None:
        super().__init__(message)
        self.detail = detail or message


class ForeignAccount(RefusedEvent):
    """The event is signed for another Twilio account than the stored conversation's
    (a sub-account's token writing into the main account's conversations): 403."""

    http_status = 403
    delivery_status = DeliveryStatus.REFUSED


class ApiError(Exception):
    """A Twilio REST call that did not succeed.

    ``transient`` says whether the same call may succeed later (Twilio down, 5xx, 429,
    timeouts) or never will as it stands (opted out, too many participants, a request
    Twilio calls invalid). ``code`` is Twilio's error code, ``status`` its HTTP status.
    """

    def __init__(self, message: str, *, code: int | None = None, status: int | None = None,
                 transient: bool) -> None:
        super().__init__(message)
        self.message, self.code, self.status, self.transient = message, code, status, transient

    def __str__(self) -> str:
        if self.code:
            return f"Twilio error {self.code}: {self.message}"
        return f"HTTP {self.status}: {self.message}" if self.status else self.message


class InvalidMessage(ValueError):
    """``send_message`` was asked to send what Twilio would refuse (no text and no
    media, a body over 1,600 characters, a media value that is no ME... SID). Nothing
    was sent."""


class CustomerOptedOut(ApiError):
    """Nothing was sent: the customer's phone has opted out of texts (it texted STOP,
    Twilio refused a send with error 21610, or a person opted it out). Raised before
    any Twilio call; permanent until the phone opts back in (``optouts.opt_in``)."""

    def __init__(self, phone: str, *, detail: str = "") -> None:
        reason = f" ({detail})" if detail else ""
        super().__init__(f"{phone} has opted out of texts{reason}; nothing was sent.",
                         code=21610, transient=False)
        self.phone = phone

    def __str__(self) -> str:
        # Not "Twilio error 21610: ...": Twilio was not asked.
        return self.message
