"""Customers' photos and files, brought from Twilio into the site's storage: the
second consumer of the write path, after the group chat.

Its modules import one way, ``wiring`` -> ``downloads`` -> ``fetch``:

* ``wiring``: how a message gets here (an insert step that enqueues the task), the
  task, ``connect()`` for AppConfig.ready;
* ``downloads``: the ``StoredMedia`` rows, one file per media SID under retries and
  concurrent runs, failures and backoff (``fetch_twilio_media`` uses it);
* ``fetch``: the Media Content Service over HTTP, credentials to its host only.

Files are stored on the storage MEDIA_STORAGE names (``storage``) and served only
through the admin, to users who may view the conversation (``admin``).
"""

from .downloads import (
    UNFINISHED,
    Outcome,
    descriptors,
    download_message_media,
    download_one,
    due,
    messages_without_rows,
    retry_delay,
)
from .fetch import MediaError, MediaRefused
from .wiring import MEDIA_TASK, connect, download_task, mark_for_download

__all__ = [
    "MEDIA_TASK", "UNFINISHED", "MediaError", "MediaRefused", "Outcome", "connect", "descriptors",
    "download_message_media", "download_one", "download_task", "due", "mark_for_download",
    "messages_without_rows", "retry_delay",
]
