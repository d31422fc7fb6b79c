"""Each file a message carried, brought into the site's storage once: the rows that
track them (``StoredMedia``), the claim that keeps two runs from fetching one file,
failures and their backoff.

Like the group chat's forward, no lock is held while Twilio is called:

1. ``plan``: one ``StoredMedia`` row per media SID of the message (an INSERT that
   ignores the rows other runs made first);
2. claim: a short transaction marks the row ``downloading`` until a deadline; a
   second run finds the claim and leaves. A run that dies leaves the claim to expire
   (``fetch_twilio_media`` then takes the file up again);
3. fetch (``fetch``), save the temporary file to the storage under a random name;
4. a short transaction records the file on the row, unless another run stored one
   meanwhile (then this run's copy is deleted): one file, one row.

``media_stored`` is sent after the commit that records the file.
"""

from __future__ import annotations

import datetime
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import requests
from django.core.files import File
from django.db import DatabaseError, transaction
from django.db.models import Q, QuerySet
from django.utils import timezone

from .. import get_conversation_model, get_message_model, signals
from ..accounts import MAIN, account_owner
from ..api import get_api_backend
from ..choices import MediaState
from ..conf import convlink_settings
from ..exceptions import ApiError
from ..models import AbstractTwilioConversation, AbstractTwilioMessage, StoredMedia
from .fetch import CHAT_SERVICE_SID, MediaError, MediaRefused, credentials_for, describe, download

logger = logging.getLogger(__name__)

MAX_RETRY_DELAY = datetime.timedelta(hours=1)
# Rows a run may take: new, failed and due, or claimed by a run that seems dead.
UNFINISHED = (MediaState.PENDING, MediaState.DOWNLOADING, MediaState.FAILED)
# A planned row whose task has not run by then is presumed lost.
PENDING_GRACE = datetime.timedelta(minutes=5)


@dataclass
class Outcome:
    """What a run did, by state: the media SIDs stored, failed (to be retried),
    given up (permanent, refused, skipped), and left alone (stored already, or
    another run's)."""

    stored: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    given_up: list[str] = field(default_factory=list)
    left: list[str] = field(default_factory=list)

    def add(self, other: Outcome) -> None:
        for name in ("stored", "failed", "given_up", "left"):
            getattr(self, name).extend(getattr(other, name))


def claim_duration() -> datetime.timedelta:
    # Room for the calls (service SID, media service, the file), each up to API_TIMEOUT,
    # and for a 20 MB body on a slow line.
    return datetime.timedelta(seconds=max(120, 6 * int(convlink_settings.API_TIMEOUT)))


def retry_delay(attempts: int) -> datetime.timedelta:
    """Exponential backoff from MEDIA_RETRY_DELAY seconds, at most an hour."""
    delay = datetime.timedelta(seconds=convlink_settings.MEDIA_RETRY_DELAY * 2 ** (attempts - 1))
    return min(delay, MAX_RETRY_DELAY)


def descriptors(message: AbstractTwilioMessage) -> list[dict[str, Any]]:
    """The message's media descriptors that name a file (webhook spelling)."""
    media = message.media if isinstance(message.media, list) else []
    return [item for item in media if isinstance(item, dict) and isinstance(item.get("Sid"), str)]


def plan(message: AbstractTwilioMessage, conversation: AbstractTwilioConversation) -> list[StoredMedia]:
    """The rows of the message's files, made if need be: one per media SID, whatever
    runs at the same moment (a copy of the file in the group chat shares the SID)."""
    items = descriptors(message)
    if not items:
        return []
    rows = [StoredMedia(media_sid=item["Sid"], message_sid=message.message_sid,
                        conversation_sid=conversation.conversation_sid,
                        chat_service_sid=conversation.chat_service_sid, account_sid=conversation.account_sid,
                        content_type=str(item.get("ContentType") or "")[:255],
                        filename=str(item.get("Filename") or "")[:255],
                        size=_size(item.get("Size")),
                        retry_at=timezone.now() + PENDING_GRACE)
            for item in items]
    StoredMedia.objects.bulk_create(rows, ignore_conflicts=True)
    return list(StoredMedia.objects.filter(media_sid__in=[row.media_sid for row in rows]).order_by("pk"))


def _size(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def download_message_media(message_pk: Any, *, now: bool = False) -> Outcome:
    """Bring every file of one message into storage (the task's work). ``now``:
    failed files are tried at once, not after their backoff. Never raises for a
    failed download: it is recorded on its row."""
    outcome = Outcome()
    if not convlink_settings.MEDIA_DOWNLOAD:
        return outcome
    messages = get_message_model()._default_manager.select_related("conversation")
    message = messages.filter(pk=message_pk).first()
    if message is None:
        return outcome
    for row in plan(message, message.conversation):
        outcome.add(download_one(row.pk, now=now))
    return outcome


def download_one(media_pk: Any, *, now: bool = False, include_permanent: bool = False) -> Outcome:
    """Bring one file into storage, unless it is stored, given up on (but with
    ``include_permanent``), or another run holds it."""
    outcome = Outcome()
    row = _claim(media_pk, now=now, include_permanent=include_permanent)
    if row is None:
        outcome.left.append(str(media_pk))
        return outcome
    try:
        recorded = _fetch(row)
    except MediaError as error:
        failure = error
    except ApiError as error:  # learning the service SID through the SDK
        failure = MediaError(f"Fetching conversation {row.conversation_sid}: {error}",
                             transient=error.transient, status=error.status)
    except Exception as exc:
        # A bug or a storage failure: recorded as transient (a full disk is fixed by a
        # person), and logged with its traceback.
        logger.exception("Downloading media %s failed", row.media_sid)
        failure = MediaError(f"{type(exc).__name__}: {exc}", transient=True)
    else:
        # Not recorded: a run that took over decided first (its file, or its failure).
        (outcome.stored if recorded else outcome.left).append(row.media_sid)
        return outcome
    if not _record_failure(row, failure):
        outcome.left.append(row.media_sid)
    else:
        (outcome.failed if row.state == MediaState.FAILED else outcome.given_up).append(row.media_sid)
    return outcome


def _claim(media_pk: Any, *, now: bool, include_permanent: bool) -> StoredMedia | None:
    moment = timezone.now()
    with transaction.atomic():
        row = StoredMedia.objects.select_for_update().filter(pk=media_pk).first()
        if row is None:
            return None
        takeable = list(UNFINISHED) + ([MediaState.PERMANENT] if include_permanent else [])
        if row.state not in takeable:
            return None
        waiting = row.retry_at is not None and row.retry_at > moment
        if waiting and (row.state == MediaState.DOWNLOADING or (row.state == MediaState.FAILED and not now)):
            return None  # another run's live claim, or a failure's backoff
        row.state, row.retry_at = MediaState.DOWNLOADING, moment + claim_duration()
        row.save(update_fields=["state", "retry_at", "updated_at"])
    return row


def _fetch(row: StoredMedia) -> bool:
    """Download the row's file and record it; False when another run decided first
    (this copy is then deleted). The row says what happened."""
    service_sid = row.chat_service_sid or _service_sid(row)
    credentials = credentials_for(row.account_sid)
    limit = int(convlink_settings.MEDIA_MAX_BYTES)
    deadline = time.monotonic() + claim_duration().total_seconds()
    with requests.Session() as session:
        answer = describe(session, service_sid, row.media_sid, credentials)
        declared = answer.get("size")
        declared = _size(declared) if _size(declared) is not None else row.size
        if declared is not None and declared > limit:
            raise MediaRefused(f"The file is {declared} bytes; MEDIA_MAX_BYTES is {limit}.")
        file, size = download(session, answer["links"]["content_direct_temporary"], limit=limit,
                              declared=declared, deadline=deadline)
    with file:
        row.content_type = row.content_type or str(answer.get("content_type") or "")[:255]
        row.filename = row.filename or str(answer.get("filename") or "")[:255]
        # The name comes from storage.media_file_name, never from the sender.
        row.file.save("media", File(file), save=False)
    try:
        recorded = _record_stored(row, size)
    except BaseException:
        # Not recorded: the next run downloads it again, so this copy would be an orphan.
        row.file.storage.delete(str(row.file.name))
        row.file.name = None
        raise
    return recorded


def _service_sid(row: StoredMedia) -> str:
    """The conversation's ChatServiceSid when the webhook did not carry it: the stored
    conversation's, else asked of Twilio once (and stored on both rows)."""
    Conversation = get_conversation_model()
    stored = Conversation._default_manager.filter(conversation_sid=row.conversation_sid).values_list(
        "chat_service_sid", flat=True).first()
    if not stored:
        if account_owner(row.account_sid) != MAIN:
            raise MediaError("The conversation's service SID is unknown, and the API credentials act in the "
                             "main account, not in this sub-account's.", transient=False)
        stored = get_api_backend().conversation_service_sid(conversation_sid=row.conversation_sid)
        if not CHAT_SERVICE_SID.fullmatch(stored or ""):
            raise MediaError(f"Twilio names no conversation service for {row.conversation_sid}.",
                             transient=False)
        Conversation._default_manager.filter(
            conversation_sid=row.conversation_sid, chat_service_sid="").update(
            chat_service_sid=stored, updated_at=timezone.now())
    StoredMedia.objects.filter(pk=row.pk).update(chat_service_sid=stored)
    row.chat_service_sid = stored
    return str(stored)


def _record_stored(row: StoredMedia, size: int) -> bool:
    name = str(row.file.name)
    with transaction.atomic():
        current = StoredMedia.objects.select_for_update().get(pk=row.pk)
        if current.state != MediaState.DOWNLOADING or current.file:
            # Another run took over (this one outlived its claim) and decided first.
            transaction.on_commit(lambda: row.file.storage.delete(name))
            row.state = current.state
            return False
        now = timezone.now()
        row.state, row.size, row.stored_at, row.retry_at = MediaState.STORED, size, now, None
        row.last_error, row.last_error_status = "", None
        row.save(update_fields=["file", "state", "size", "stored_at", "retry_at", "last_error",
                                "last_error_status", "content_type", "filename", "updated_at"])
        message = get_message_model()._default_manager.filter(message_sid=row.message_sid).first()
        signals.send_after_commit(signals.media_stored, StoredMedia, media=row, message=message)
    logger.info("Stored media %s of message %s (%d bytes) as %s", row.media_sid, row.message_sid, size, name)
    return True


def _record_failure(row: StoredMedia, error: MediaError) -> bool:
    """Record the failure on the row while this run's claim holds it; False when it
    no longer does (this run outlived its claim and another took the file over: that
    run's outcome stands, and its download is not thrown away for this one's failure)."""
    attempts = row.attempts + 1
    if isinstance(error, MediaRefused):
        state = MediaState.REFUSED
    elif not error.transient or attempts >= convlink_settings.MEDIA_MAX_ATTEMPTS:
        state = MediaState.PERMANENT
    else:
        state = MediaState.FAILED
    retry_at = timezone.now() + retry_delay(attempts) if state == MediaState.FAILED else None
    try:
        # The claim's deadline (set by _claim) tells this run's claim from another's.
        claim = StoredMedia.objects.filter(pk=row.pk, state=MediaState.DOWNLOADING, retry_at=row.retry_at)
        held = claim.update(
            state=state, attempts=attempts, retry_at=retry_at, last_error=str(error)[:2000],
            last_error_status=error.status, updated_at=timezone.now())
    except DatabaseError:
        # The claim expires on its own and makes the file due again.
        logger.exception("Could not record the failed download of media %s", row.media_sid)
    else:
        if not held:
            logger.warning("Download of media %s (message %s) failed after another run took it over "
                           "(or its row was deleted); not recorded: %s",
                           row.media_sid, row.message_sid, error)
            return False
    row.state, row.attempts, row.retry_at, row.last_error = state, attempts, retry_at, str(error)
    log = logger.warning if state == MediaState.FAILED else logger.error
    log("Download of media %s (message %s) failed (attempt %d%s): %s", row.media_sid, row.message_sid,
        attempts, f", retry after {retry_at:%H:%M:%S}" if retry_at else ", giving up", error)
    return True


def due(now: datetime.datetime | None = None, *, include_permanent: bool = False,
        ignore_backoff: bool = False) -> QuerySet[StoredMedia]:
    """Files a run should take up: planned ones whose task seems lost, failed ones
    after their backoff (at once with ``ignore_backoff``), claims of runs that seem
    dead; with ``include_permanent``, those given up on too (after the credentials
    were fixed)."""
    now = now or timezone.now()
    cond = Q(state__in=UNFINISHED, retry_at__lte=now)
    if ignore_backoff:
        cond |= Q(state=MediaState.FAILED)
    if include_permanent:
        cond |= Q(state=MediaState.PERMANENT)
    return StoredMedia.objects.filter(cond).order_by("pk")


def messages_without_rows(messages: Iterable[AbstractTwilioMessage]) -> list[AbstractTwilioMessage]:
    """Of ``messages``, those with a file that has no row yet: their task was lost
    before it planned anything."""
    candidates = [m for m in messages if descriptors(m)]
    sids = {item["Sid"] for m in candidates for item in descriptors(m)}
    known = set(StoredMedia.objects.filter(media_sid__in=sids).values_list("media_sid", flat=True))
    return [m for m in candidates if any(item["Sid"] not in known for item in descriptors(m))]
