"""Showing a stored file to a person: which conversation it belongs to, and the one
way it leaves the site (``file_response``). The admin's views use these; nothing here
checks permissions (the view does, on the conversation).

A customer's file is untrusted content served from the site's own origin: a raster
image is shown inline with its stored type; anything else (PDF, HTML, SVG, a type the
sender made up) is a download, ``application/octet-stream``. Every answer says
``nosniff`` and carries a sandboxing Content-Security-Policy, so that not even a
browser that guesses would run what a customer sent.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

from django.core.exceptions import SuspiciousFileOperation
from django.db.models import Q
from django.http import FileResponse
from django.utils.text import get_valid_filename

from .. import get_conversation_model
from ..models import AbstractTwilioConversation, AbstractTwilioMessage, StoredMedia
from .downloads import descriptors


def files_of(messages: Iterable[AbstractTwilioMessage]) -> dict[str, StoredMedia]:
    """The rows of the files these messages carry, by media SID: one query, however
    many messages (a group chat's copy shares its original's row)."""
    sids = {item["Sid"] for message in messages for item in descriptors(message)}
    if not sids:
        return {}
    return {row.media_sid: row for row in StoredMedia.objects.filter(media_sid__in=sids)}


def belongs_to(row: StoredMedia, conversation: AbstractTwilioConversation) -> bool:
    """Whether ``row`` is a file of ``conversation``: sent in it, or (a group chat)
    sent in the customer conversation whose messages it copies."""
    if row.conversation_sid == conversation.conversation_sid:
        return True
    if not conversation.is_group_chat:
        return False
    # The lookup is in a Q: django-stubs' plugin crashes on a keyword lookup of a
    # ForeignKey("self") of an abstract model (see group_chat.forward).
    return get_conversation_model()._default_manager.filter(
        Q(group_chat_id=conversation.pk), conversation_sid=row.conversation_sid).exists()


def download_name(row: StoredMedia) -> str:
    """The sender's file name, made safe for a Content-Disposition header, else the SID."""
    try:
        return get_valid_filename(os.path.basename(row.filename.replace("\\", "/")))
    except SuspiciousFileOperation:  # nothing left of it ("..", "")
        return row.media_sid


def file_response(row: StoredMedia) -> FileResponse:
    """The stored file, inline for a raster image, as a download otherwise."""
    inline = row.is_image
    response = FileResponse(row.file.open("rb"), as_attachment=not inline, filename=download_name(row),
                            content_type=row.content_type if inline else "application/octet-stream")
    response["X-Content-Type-Options"] = "nosniff"
    response["Content-Security-Policy"] = "default-src 'none'; img-src 'self'; sandbox"
    response["Cache-Control"] = "private, max-age=3600"
    return response


def describe_state(row: StoredMedia | None, kind: str) -> str:
    """What a manager reads in place of a file that is not stored (``kind``: "Photo" or "File")."""
    from django.utils.translation import gettext as _

    if row is None:
        return _("%(kind)s kept at Twilio (not downloaded)") % {"kind": kind}
    reasons: dict[str, Any] = {
        "pending": _("%(kind)s not downloaded yet"), "downloading": _("%(kind)s downloading"),
        "failed": _("%(kind)s not downloaded yet (will be tried again): %(error)s"),
        "permanent": _("%(kind)s could not be downloaded: %(error)s"),
        "refused": _("%(kind)s not kept: %(error)s"),
        "pruned": _("%(kind)s deleted after the retention period"),
    }
    text = reasons.get(row.state, _("%(kind)s not stored"))
    return str(text) % {"kind": kind, "error": row.last_error or _("no reason recorded")}
