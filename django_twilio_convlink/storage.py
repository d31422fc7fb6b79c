"""Where customers' files go: the storage named by MEDIA_STORAGE, and the names they
are saved under.

``StoredMedia.file`` is a FileField whose storage is ``media_storage()``: a storage
that asks Django's ``storages`` for the MEDIA_STORAGE alias on every call. A
FileField resolves its storage once, when the model class is made; this one resolves
when it is used, so ``override_settings(STORAGES=...)`` or a changed alias in a
site's tests takes effect at once, and migrations name this function instead of a
storage of one machine.

Names are made by ``media_file_name``: random, never the sender's filename (which
the sender controls: ``../``, a name that collides, ``invoice.pdf.html``), with an
extension only for content types that are safe to name.
"""

from __future__ import annotations

import datetime
import os
import secrets
from typing import Any

from django.core.files.storage import Storage, storages

from .conf import convlink_settings

# Extensions given to a stored file by its content type; anything else is ".bin", so
# a storage that serves files publicly (an S3 bucket, MEDIA_URL) never serves a
# customer's HTML or SVG as a page of the site.
SAFE_EXTENSIONS = {
    "image/jpeg": ".jpg", "image/png": ".png", "image/gif": ".gif", "image/webp": ".webp",
    "image/heic": ".heic", "image/heif": ".heif", "image/bmp": ".bmp", "image/tiff": ".tiff",
    "application/pdf": ".pdf", "text/plain": ".txt", "text/vcard": ".vcf", "text/x-vcard": ".vcf",
    "audio/mpeg": ".mp3", "audio/mp4": ".m4a", "audio/ogg": ".ogg", "audio/amr": ".amr",
    "video/mp4": ".mp4", "video/3gpp": ".3gp", "video/quicktime": ".mov",
}
FOLDER = "twilio-media"
# Served inline, with their own content type, by the admin; everything else is an
# attachment. SVG is no raster image: it can carry script.
INLINE_TYPES = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp", "image/bmp"})


def current_storage() -> Storage:
    """The storage MEDIA_STORAGE names, now (InvalidStorageError for an alias that
    STORAGES lacks; system check E021 reports it at startup)."""
    return storages[convlink_settings.MEDIA_STORAGE]


class MediaStorage(Storage):
    """Each call goes to ``current_storage()``: the alias is read when the file is used."""

    def open(self, name: str, mode: str = "rb") -> Any:
        return current_storage().open(name, mode)

    def save(self, name: str | None, content: Any, max_length: int | None = None) -> str:
        return current_storage().save(name, content, max_length=max_length)

    def get_valid_name(self, name: str) -> str:
        return current_storage().get_valid_name(name)

    def get_available_name(self, name: str, max_length: int | None = None) -> str:
        return current_storage().get_available_name(name, max_length=max_length)

    def generate_filename(self, filename: str | os.PathLike[str]) -> str:
        return current_storage().generate_filename(filename)

    def path(self, name: str) -> str:
        return current_storage().path(name)

    def delete(self, name: str) -> None:
        current_storage().delete(name)

    def exists(self, name: str) -> bool:
        return current_storage().exists(name)

    def listdir(self, path: str) -> tuple[list[str], list[str]]:
        return current_storage().listdir(path)

    def size(self, name: str) -> int:
        return current_storage().size(name)

    def url(self, name: str | None) -> str:
        return current_storage().url(name)

    def get_accessed_time(self, name: str) -> datetime.datetime:
        return current_storage().get_accessed_time(name)

    def get_created_time(self, name: str) -> datetime.datetime:
        return current_storage().get_created_time(name)

    def get_modified_time(self, name: str) -> datetime.datetime:
        return current_storage().get_modified_time(name)


_media_storage = MediaStorage()


def media_storage() -> Storage:
    """``StoredMedia.file``'s storage (a callable, so migrations name this function)."""
    return _media_storage


def media_file_name(instance: Any, filename: str) -> str:
    """``twilio-media/2026/12/<random>.jpg``: 192 random bits, the month it was
    stored, an extension from the content type when it is a safe one. ``filename``
    (the sender's) is ignored on purpose; ``StoredMedia.filename`` keeps it for display."""
    extension = SAFE_EXTENSIONS.get((getattr(instance, "content_type", "") or "").lower(), ".bin")
    return f"{FOLDER}/{datetime.date.today():%Y/%m}/{secrets.token_urlsafe(24)}{extension}"
