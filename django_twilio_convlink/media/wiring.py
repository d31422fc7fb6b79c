"""How a message's files get to the download: the second consumer of the write path,
plugged in the way the group chat is (``connect``, from AppConfig.ready).

* ``mark_for_download``, an insert step, enqueues the download's task after the
  INSERT of a new message that carries media. It writes nothing: the webhook's
  statements stay what they were. A task lost between the commit and the enqueue
  (a process killed) is found by ``fetch_twilio_media``, which looks for messages
  whose files have no row;
* ``download_task`` is that task, registered with ``tasks`` as
  ``django_twilio_convlink.tasks.download_message_media_task``. A failed file waits
  for its backoff: rescheduled where the task backend can defer, else
  ``fetch_twilio_media`` from cron.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .. import tasks
from ..conf import convlink_settings
from ..models import AbstractTwilioConversation, AbstractTwilioMessage, StoredMedia
from ..persistence import HISTORY, register_insert_step
from .downloads import descriptors, download_message_media

MEDIA_TASK = "download_message_media_task"


def mark_for_download(message: AbstractTwilioMessage, conversation: AbstractTwilioConversation,
                      origin: str) -> Callable[[], None] | None:
    """The download's insert step: a new message with media gets its task once the
    row is inserted. With MEDIA_DOWNLOAD off, or no media, it does nothing; nor for
    history (origin "sync"), whose files ``sync_twilio_conversations --media`` fetches."""
    if origin == HISTORY or not message.media or not convlink_settings.MEDIA_DOWNLOAD \
            or not descriptors(message):
        return None
    return lambda: tasks.enqueue(MEDIA_TASK, message.pk)


def download_task(message_pk: Any) -> str:
    """Bring one message's files into the site's storage: the task's function.
    Returns a one-line summary; failures are recorded on their rows, not raised."""
    outcome = download_message_media(message_pk)
    if outcome.failed and tasks.TASKS_AVAILABLE:
        retry_at = (StoredMedia.objects.filter(media_sid__in=outcome.failed, retry_at__isnull=False)
                    .order_by("retry_at").values_list("retry_at", flat=True).first())
        if retry_at is not None:
            tasks.enqueue_at(MEDIA_TASK, retry_at, message_pk)
    return (f"stored {len(outcome.stored)}, failed {len(outcome.failed)}, given up {len(outcome.given_up)}, "
            f"left {len(outcome.left)}")


def connect() -> None:
    """Plug the download into the write path (called from AppConfig.ready; running it
    again changes nothing)."""
    register_insert_step(mark_for_download)
    tasks.register(MEDIA_TASK, download_task, recovery="fetch_twilio_media will pick it up")
