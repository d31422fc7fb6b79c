"""The ``attachments`` filter of the admin's message thread, and the function behind it
that ``admin.py`` uses for the message list.

It lives in Python, not in the template, because the template language cannot be
lenient here: a filter's argument is resolved strictly, so ``{{ item.Filename|default:item.Sid }}``
raised VariableDoesNotExist (a 500 for the whole conversation page) for any media item
without a Sid. It imports nothing of ``django.contrib.admin``: Django loads every
installed app's template libraries, also on sites without the admin.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from django import template
from django.utils.translation import gettext_lazy as _

if TYPE_CHECKING:
    from django_stubs_ext import StrOrPromise

register = template.Library()


@dataclass(frozen=True)
class Attachment:
    """One file of a message as a manager reads it: a name and, when known, its type."""

    name: StrOrPromise
    content_type: str


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
