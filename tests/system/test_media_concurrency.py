"""Runs of the download for one file at the same moment (a task retried while its
first run is still fetching, the cron command beside a worker, a group chat's copy of
a photo planned beside its original): one row, one file in the storage, one
``media_stored``. Needs a database server with row locks (PostgreSQL, MariaDB in
.ci/run); skipped on SQLite, whose single writer lock would serialize the threads."""

from pathlib import Path

import pytest

from django_twilio_convlink.media import download_message_media, download_one
from django_twilio_convlink.models import StoredMedia
from tests.factories import ConversationFactory, MessageFactory
from tests.helpers import THREADS, at_once, sid

pytestmark = [pytest.mark.concurrency, pytest.mark.django_db(transaction=True)]

ROUNDS = 5
SERVICE_SID = "IS" + "8" * 32
JPEG = b"\xff\xd8\xff\xe0" + b"leak" * 4000


def files_in(settings) -> list[Path]:
    root = Path(settings.STORAGES["default"]["OPTIONS"]["location"])
    return [path for path in root.rglob("*") if path.is_file()]


def stored_signals(received) -> int:
    return [name for name, _, _ in received.calls].count("media_stored")


def test_runs_for_one_file_at_once_store_it_once(media_service, received, settings):
    for round_ in range(1, ROUNDS + 1):
        media_sid = sid("ME")
        media_service.add(media_sid, JPEG)
        # The first CDN answer is slow, so that the other runs start while the first fetches.
        media_service.cdn_script[media_sid] = [("sleep", 0.5)]
        row = StoredMedia.objects.create(media_sid=media_sid, message_sid=sid("IM"),
                                         conversation_sid=sid("CH"), chat_service_sid=SERVICE_SID,
                                         content_type="image/jpeg", size=len(JPEG))

        outcomes = at_once([lambda pk=row.pk: download_one(pk, now=True)] * THREADS)

        assert sorted(len(o.stored) for o in outcomes) == [0] * (THREADS - 1) + [1]
        assert sum(len(o.left) for o in outcomes) == THREADS - 1
        assert StoredMedia.objects.filter(media_sid=media_sid).count() == 1
        row = StoredMedia.objects.get(media_sid=media_sid)
        assert row.state == "stored"
        with row.file.open("rb") as f:
            assert f.read() == JPEG
        assert len(files_in(settings)) == round_
        assert stored_signals(received) == round_
    assert len(media_service.requests_to("cdn")) == ROUNDS


def test_messages_sharing_a_file_planned_at_once_store_it_once(media_service, received, settings):
    # A group chat's copy of a photo carries its original's media SID: the tasks of
    # both messages plan the same row and race for it.
    for round_ in range(1, ROUNDS + 1):
        media_sid = sid("ME")
        media_service.add(media_sid, JPEG)
        media_service.cdn_script[media_sid] = [("sleep", 0.5)]
        media = [{"Sid": media_sid, "ContentType": "image/jpeg", "Filename": "leak.jpg", "Size": len(JPEG)}]
        conversations = ConversationFactory.create_batch(THREADS, chat_service_sid=SERVICE_SID)
        messages = [MessageFactory(conversation=conversation, media=media) for conversation in conversations]

        outcomes = at_once([lambda pk=m.pk: download_message_media(pk, now=True) for m in messages])

        assert sum(len(o.stored) for o in outcomes) == 1
        assert StoredMedia.objects.filter(media_sid=media_sid).count() == 1
        assert StoredMedia.objects.get(media_sid=media_sid).state == "stored"
        assert len(files_in(settings)) == round_
        assert stored_signals(received) == round_
    assert len(media_service.requests_to("cdn")) == ROUNDS


def test_a_failed_file_retried_by_the_task_and_the_command_at_once_is_stored_once(media_service, received,
                                                                                  settings):
    # The task rescheduled after a fresh file's 404 runs while fetch_twilio_media --now
    # takes the same file up: whichever claims it fetches it; the others leave it.
    for round_ in range(1, ROUNDS + 1):
        media_sid = sid("ME")
        media_service.add(media_sid, JPEG)
        media_service.mcs_script[media_sid] = [("status", 404)]
        media = [{"Sid": media_sid, "ContentType": "image/jpeg", "Filename": "leak.jpg", "Size": len(JPEG)}]
        message = MessageFactory(conversation=ConversationFactory(chat_service_sid=SERVICE_SID), media=media)
        assert download_message_media(message.pk).failed == [media_sid]
        row = StoredMedia.objects.get(media_sid=media_sid)
        media_service.cdn_script[media_sid] = [("sleep", 0.5)]

        outcomes = at_once([lambda pk=message.pk: download_message_media(pk, now=True),
                            lambda pk=row.pk: download_one(pk, now=True)] * (THREADS // 2))

        assert sum(len(o.stored) for o in outcomes) == 1 and sum(len(o.failed) for o in outcomes) == 0
        row = StoredMedia.objects.get(media_sid=media_sid)
        assert (row.state, row.attempts) == ("stored", 1)
        with row.file.open("rb") as f:
            assert f.read() == JPEG
        assert len(files_in(settings)) == round_
        assert stored_signals(received) == round_
    assert len(media_service.requests_to("cdn")) == ROUNDS
