"""Two runs of the download for one file at the same moment (a task retried while
its first run is still fetching, the cron command beside a worker): one row, one
file in the storage, one ``media_stored``. Needs a database server with row locks
(PostgreSQL, MariaDB in .ci/run); skipped on SQLite."""

import os
import threading
from pathlib import Path

import pytest
from django.db import connection

from django_twilio_convlink.media import download_one
from django_twilio_convlink.models import StoredMedia
from tests.helpers import sid

pytestmark = [pytest.mark.concurrency, pytest.mark.django_db(transaction=True)]

ROUNDS = 5
JPEG = b"\xff\xd8\xff\xe0" + b"leak" * 4000


def test_two_runs_for_one_file_store_it_once(media_service, received, settings):
    root = Path(settings.STORAGES["default"]["OPTIONS"]["location"])
    for _ in range(ROUNDS):
        media_sid = sid("ME")
        media_service.add(media_sid, JPEG)
        # The first CDN answer is slow, so that the second run starts while the first fetches.
        media_service.cdn_script[media_sid] = [("sleep", 0.5)]
        row = StoredMedia.objects.create(media_sid=media_sid, message_sid=sid("IM"),
                                         conversation_sid=sid("CH"), chat_service_sid="IS" + "8" * 32,
                                         content_type="image/jpeg", size=len(JPEG))
        barrier = threading.Barrier(2)
        outcomes: list = []

        def run(pk: int, barrier: threading.Barrier, outcomes: list) -> None:
            try:
                barrier.wait()
                outcomes.append(download_one(pk, now=True))
            finally:
                connection.close()

        threads = [threading.Thread(target=run, args=(row.pk, barrier, outcomes)) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

        assert sorted(len(o.stored) for o in outcomes) == [0, 1]
        assert StoredMedia.objects.filter(media_sid=media_sid).count() == 1
        assert StoredMedia.objects.get(media_sid=media_sid).state == "stored"
    files = [name for _, _, names in os.walk(root) for name in names]
    assert len(files) == ROUNDS
    assert [name for name, _, _ in received.calls].count("media_stored") == ROUNDS
    assert len(media_service.requests_to("cdn")) == ROUNDS
