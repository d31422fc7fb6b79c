"""The filters of the admin's message thread (``attachments``, ``delivery_status``), and
the functions behind them that ``admin.py`` uses for the message list.

They live in Python, not in the template, because the template language cannot be
lenient here: a filter's argument is resolved strictly, so ``{{ item.Filename|default:item.Sid }}``
raised VariableDoesNotExist (a 500 for the whole conversation page) for any media item
without a Sid. And the thread and the message list must word a delivery alike. This
module imports nothing of ``django.contrib.admin``: Django loads every installed app's
template libraries, also on sites without the admin.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from django import template
from django.template.defaultfilters import filesizeformat
from django.utils import formats, timezone
from django.utils.html import format_html
from django.utils.safestring import SafeString
from django.utils.translation import gettext_lazy as _

from ..choices import Direction, ReceiptStatus
from ..conf import convlink_settings
from ..media.serve import describe_state
from ..receipts import FAILURES, error_meaning

if TYPE_CHECKING:
    from django_stubs_ext import StrOrPromise

register = template.Library()

# Twilio's page for every error code, for the codes ERROR_MEANINGS does not explain.
TWILIO_ERROR_URL = "https://www.twilio.com/docs/api/errors/{code}"


@dataclass(frozen=True)
class Attachment:
    """One file of a message as a manager reads it: a name and, when known, its type."""

    name: StrOrPromise
    content_type: str


@dataclass(frozen=True)
class ShownFile:
    """One file of a message in the thread: a photo to show, a file to link (``url``),
    or, not stored, what became of it (``note``)."""

    name: StrOrPromise
    url: str
    is_image: bool
    size: str
    note: str


@register.simple_tag
def message_files(message: Any, files: Any) -> list[ShownFile]:
    """The files of ``message`` as the thread shows them. ``files`` maps media SIDs to
    (StoredMedia row, URL of the admin view that serves it), as ConversationAdmin puts
    it in the page's context; without it every file reads as kept at Twilio."""
    found = files if isinstance(files, dict) else {}
    shown = []
    for item, attachment in zip(_items(message.media), attachments(message.media), strict=True):
        sid = item.get("Sid") if isinstance(item, dict) else None
        row, url = found.get(sid, (None, "")) if isinstance(sid, str) else (None, "")
        image = (attachment.content_type or "").lower().startswith("image/")
        if row is not None and row.is_stored and url:
            shown.append(ShownFile(attachment.name, url, row.is_image, filesizeformat(row.size or 0), ""))
        else:
            kind = str(_("Photo")) if image else str(_("File"))
            # No row while downloads are on: its task has not run yet (or was lost, and
            # fetch_twilio_media will plan it). "Kept at Twilio" is for MEDIA_DOWNLOAD off.
            note = (_("%(kind)s not downloaded yet") % {"kind": kind}
                    if row is None and isinstance(sid, str) and convlink_settings.MEDIA_DOWNLOAD
                    else describe_state(row, kind))
            shown.append(ShownFile(attachment.name, "", False, "", str(note)))
    return shown


def _items(media: Any) -> list[Any]:
    if media is None:
        return []
    return media if isinstance(media, list) else [media]


@register.filter
def attachments(media: Any) -> list[Attachment]:
    """The files a message's stored ``media`` describes, one per item, whatever it holds.

    The webhook stores only Twilio's shape (objects with Sid, ContentType, Filename,
    Size), but rows stored before it validated Media may hold any JSON: a bare SID,
    an object without a Sid, a number, null, a nested list, or no list at all. Each
    item still counts, named by its filename, else its SID, else "unknown", so the
    page shows that something was attached instead of failing.
    """
    if media is None:
        return []
    return [_attachment(item) for item in (media if isinstance(media, list) else [media])]


def _attachment(item: Any) -> Attachment:
    if isinstance(item, str) and item:
        return Attachment(name=item, content_type="")
    if not isinstance(item, dict):
        return Attachment(name=_("unknown"), content_type="")
    named = (value for value in (item.get("Filename"), item.get("Sid")) if isinstance(value, str) and value)
    content_type = item.get("ContentType")
    return Attachment(name=next(named, _("unknown")),
                      content_type=content_type if isinstance(content_type, str) else "")


# A manager asks one question of a text: did it arrive? Failed and undelivered both
# answer "no", so both wear the same label; the explanation keeps Twilio's word.
DELIVERY_WORDS: dict[str, tuple[StrOrPromise, StrOrPromise]] = {
    "": (_("No receipt yet"), _("Twilio has not reported whether this text arrived.")),
    ReceiptStatus.SENT: (_("Sent"), _("Handed to the phone company; not confirmed delivered yet.")),
    ReceiptStatus.DELIVERED: (_("Delivered"), _("Delivered to the phone.")),
    ReceiptStatus.READ: (_("Read"), _("Delivered and opened.")),
    ReceiptStatus.FAILED: (_("Not delivered"), _("Failed: Twilio could not send it.")),
    ReceiptStatus.UNDELIVERED: (_("Not delivered"),
                                _("Undelivered: the phone company could not deliver it.")),
}


@dataclass(frozen=True)
class Delivery:
    """What became of one message, as a manager reads it (``delivery``)."""

    status: str  # a ReceiptStatus, "" before the first receipt
    label: StrOrPromise
    explanation: StrOrPromise
    error_code: int | None
    error_meaning: str
    updated_at: datetime.datetime | None

    @property
    def arrived(self) -> bool | None:
        """False for a failed or undelivered text, None while it is not known."""
        if self.status in FAILURES:
            return False
        return True if self.status in (ReceiptStatus.DELIVERED, ReceiptStatus.READ) else None


def delivery(message: Any) -> Delivery | None:
    """The delivery of ``message``, or None when there is none to tell: a customer's
    text in their own conversation gets no receipt (it reaches no other phone), so
    "no receipt yet" is only said of our texts."""
    status = message.delivery_status or ""
    if not status and message.direction != Direction.OUTBOUND:
        return None
    return delivery_of(status, message.delivery_error_code, message.delivery_updated_at)


def delivery_of(status: str, code: int | None = None,
                updated_at: datetime.datetime | None = None) -> Delivery:
    """The delivery a summary ``status`` stands for (a list's annotation has no more)."""
    label, explanation = DELIVERY_WORDS.get(status, (status, ""))
    return Delivery(status=status, label=label, explanation=explanation, error_code=code,
                    error_meaning=error_meaning(code) if code else "", updated_at=updated_at)


@register.filter
def delivery_status(message: Any) -> SafeString | str:
    """``message``'s delivery as a label, and for a text that did not arrive, why:
    the error code (linked to Twilio's page for it) and its meaning in words."""
    found = delivery(message)
    if found is None:
        return ""
    return format_html("{}{}", delivery_label(found), delivery_reason(found))


def delivery_label(found: Delivery) -> SafeString:
    """The label alone (the message list has no room beside it for the reason)."""
    title: StrOrPromise = found.explanation
    if found.updated_at is not None:
        title = _("%(explanation)s Reported %(when)s.") % {
            "explanation": found.explanation,
            "when": formats.date_format(timezone.localtime(found.updated_at), "DATETIME_FORMAT")}
    kind = {False: "failed", True: "arrived", None: "pending" if found.status else "none"}[found.arrived]
    return format_html('<span class="convlink-delivery convlink-delivery-{}" title="{}">{}</span>',
                       kind, title, found.label)


def delivery_reason(found: Delivery | None) -> SafeString | str:
    """Why a text did not arrive, "" for any other."""
    if found is None or found.arrived is not False:
        return ""
    if found.error_code is None:
        reason = format_html("{}", found.explanation)
    else:
        code = format_html('<a href="{}" target="_blank" rel="noopener">{}</a>',
                           TWILIO_ERROR_URL.format(code=found.error_code), found.error_code)
        words = (_("Error {code} — {meaning}") if found.error_meaning
                 else _("Error {code}: Twilio's page for the code explains it."))
        reason = format_html("{} {}", found.explanation,
                             format_html(str(words), code=code, meaning=found.error_meaning))
    return format_html('<span class="convlink-delivery-reason">{}</span>', reason)
