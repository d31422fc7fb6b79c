"""``fetch_twilio_media`` and ``prune_twilio_media``, as cron runs them, against the
stand-in media service on loopback (tests/media_server.py)."""

import datetime
import json
import os
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from django_twilio_convlink.models import StoredMedia
from tests.helpers import TwilioClient, payload, sid

pytestmark = pytest.mark.django_db(transaction=True)

SERVICE_SID = "IS88888888888888888888888888888888"
JPEG = b"\xff\xd8\xff\xe0" + b"heater" * 500


def deliver(media_sid: str, conversation_sid: str | None = None) -> dict[str, str]:
    data = payload("onMessageAdded_mms_with_media", ConversationSid=conversation_sid or sid("CH"),
                   MessageSid=sid("IM"), ChatServiceSid=SERVICE_SID,
                   Media=json.dumps([{"Sid": media_sid, "ContentType": "image/jpeg", "Filename": "a.jpg",
                                      "Size": len(JPEG)}]))
    assert TwilioClient().webhook(data).status_code == 200
    return data


def run(name: str, *args: str) -> tuple[str, str, CommandError | None]:
    from io import StringIO

    out, err = StringIO(), StringIO()
    try:
        call_command(name, *args, stdout=out, stderr=err)
    except CommandError as error:
        return out.getvalue(), err.getvalue(), error
    return out.getvalue(), err.getvalue(), None


def files_in(settings) -> list[Path]:
    root = Path(settings.STORAGES["default"]["OPTIONS"]["location"])
    return [Path(d, f) for d, _, names in os.walk(root) for f in names]


@pytest.fixture
def no_worker(settings):
    """Tasks enqueued and never run: a lost task, as after a killed process."""
    settings.TWILIO_CONVLINK = {**settings.TWILIO_CONVLINK, "TASK_BACKEND": "dummy"}


def test_a_message_whose_task_was_lost_is_found_and_stored(media_service, no_worker):
    media_sid = sid("ME")
    media_service.add(media_sid, JPEG)
    deliver(media_sid)
    assert not StoredMedia.objects.exists() and media_service.seen == []

    out, _, error = run("fetch_twilio_media")
    assert error is None, out
    assert StoredMedia.objects.get(media_sid=media_sid).state == "stored"
    assert ("0 file(s) due, 1 message(s) never planned: 1 stored, 0 failed (will be retried), "
            "0 given up.") in out
    # Nothing left to do the second time.
    out, _, error = run("fetch_twilio_media")
    assert error is None and "0 file(s) due, 0 message(s) never planned: 0 stored" in out


def test_older_messages_are_looked_for_only_with_since(media_service, no_worker):
    from tests.testapp.models import ChatMessage

    media_sid = sid("ME")
    media_service.add(media_sid, JPEG)
    data = deliver(media_sid)
    ChatMessage.objects.filter(message_sid=data["MessageSid"]).update(
        created_at=timezone.now() - datetime.timedelta(days=30))
    out, _, _ = run("fetch_twilio_media")
    assert "0 message(s) never planned" in out and not StoredMedia.objects.exists()
    since = (timezone.now() - datetime.timedelta(days=31)).date().isoformat()
    out, _, error = run("fetch_twilio_media", "--since", since)
    assert error is None and StoredMedia.objects.get().state == "stored"


def test_dry_run_lists_and_fetches_nothing(media_service, no_worker):
    media_sid = sid("ME")
    media_service.add(media_sid, JPEG)
    data = deliver(media_sid)
    out, _, error = run("fetch_twilio_media", "--dry-run")
    assert error is None
    assert f"Would fetch the files of {data['MessageSid']}, never planned" in out
    assert "[dry run] 0 file(s) due, 1 message(s) never planned." in out
    assert media_service.seen == [] and not StoredMedia.objects.exists()


def test_failed_files_wait_for_their_backoff_unless_now(media_service):
    media_sid = sid("ME")
    media_service.add(media_sid, JPEG)
    media_service.mcs_script[media_sid] = [("status", 500)]
    deliver(media_sid)
    assert StoredMedia.objects.get().state == "failed"

    out, _, error = run("fetch_twilio_media")
    assert error is None and "0 file(s) due" in out and StoredMedia.objects.get().state == "failed"
    out, _, error = run("fetch_twilio_media", "--now")
    assert error is None and "1 file(s) due, 0 message(s) never planned: 1 stored" in out
    assert StoredMedia.objects.get().state == "stored"


def test_a_failure_is_reported_and_exits_non_zero(media_service):
    media_sid = sid("ME")
    media_service.add(media_sid, JPEG)
    media_service.mcs_script[media_sid] = [("status", 500), ("status", 503)]
    deliver(media_sid)
    out, err, error = run("fetch_twilio_media", "--now")
    assert error is not None and "1 file(s) could not be downloaded" in str(error)
    assert f"{media_sid}: not stored" in err and "0 stored, 1 failed (will be retried)" in out


def test_include_permanent_fetches_again_after_credentials_are_fixed(media_service, settings):
    good = settings.TWILIO_CONVLINK["AUTH_TOKEN"]
    media_sid = sid("ME")
    media_service.add(media_sid, JPEG)
    media_service.password = "rotated"
    deliver(media_sid)
    assert StoredMedia.objects.get().state == "permanent"

    out, _, error = run("fetch_twilio_media", "--now")
    assert error is None and "0 file(s) due" in out
    out, _, error = run("fetch_twilio_media", "--include-permanent")
    assert error is not None and "given up" in out  # still refused
    media_service.password = good
    out, _, error = run("fetch_twilio_media", "--include-permanent")
    assert error is None and "1 stored" in out and StoredMedia.objects.get().state == "stored"


def test_conversation_sid_narrows_the_run(media_service, no_worker):
    mine, other = sid("ME"), sid("ME")
    for media_sid in (mine, other):
        media_service.add(media_sid, JPEG)
    data = deliver(mine)
    deliver(other)
    out, _, error = run("fetch_twilio_media", "--conversation-sid", data["ConversationSid"])
    assert error is None and "1 message(s) never planned: 1 stored" in out
    assert list(StoredMedia.objects.values_list("media_sid", flat=True)) == [mine]


def test_media_download_off_fetches_nothing(media_service, settings, no_worker):
    media_service.add(media_sid := sid("ME"), JPEG)
    deliver(media_sid)
    settings.TWILIO_CONVLINK = {**settings.TWILIO_CONVLINK, "MEDIA_DOWNLOAD": False}
    out, _, error = run("fetch_twilio_media", "--now")
    assert error is None and "MEDIA_DOWNLOAD is off" in out and media_service.seen == []


def test_bad_since_is_a_usage_error(media_service):
    with pytest.raises(CommandError, match="--since"):
        call_command("fetch_twilio_media", since="2026-02-30")


def test_prune_deletes_old_files_and_keeps_their_rows(media_service, settings):
    old, new = sid("ME"), sid("ME")
    for media_sid in (old, new):
        media_service.add(media_sid, JPEG)
        deliver(media_sid)
    StoredMedia.objects.filter(media_sid=old).update(stored_at=timezone.now() - datetime.timedelta(days=40))
    assert len(files_in(settings)) == 2

    out, _, _ = run("prune_twilio_media", "--days", "30", "--dry-run")
    assert "Would delete 1 file(s) stored more than 30 days ago." in out and len(files_in(settings)) == 2
    out, _, _ = run("prune_twilio_media", "--days", "30")
    assert "Deleted 1 file(s) stored more than 30 days ago." in out
    pruned = StoredMedia.objects.get(media_sid=old)
    assert (pruned.state, pruned.file.name) == ("pruned", "")
    assert [p.read_bytes() for p in files_in(settings)] == [JPEG]
    # A pruned file is not downloaded again.
    _, _, error = run("fetch_twilio_media", "--now", "--include-permanent")
    assert error is None and StoredMedia.objects.get(media_sid=old).state == "pruned"


def test_prune_follows_media_retention_days(media_service, settings):
    media_service.add(media_sid := sid("ME"), JPEG)
    deliver(media_sid)
    StoredMedia.objects.update(stored_at=timezone.now() - datetime.timedelta(days=10))
    out, _, _ = run("prune_twilio_media")
    assert "kept as long as the site keeps them" in out and StoredMedia.objects.get().state == "stored"
    settings.TWILIO_CONVLINK = {**settings.TWILIO_CONVLINK, "MEDIA_RETENTION_DAYS": 7}
    out, _, _ = run("prune_twilio_media")
    assert "Deleted 1 file(s)" in out and files_in(settings) == []


def test_prune_refuses_a_retention_out_of_range(media_service):
    with pytest.raises(CommandError, match="--days must be between 0 and 36500"):
        call_command("prune_twilio_media", days=-1)


def test_status_counts_files_and_names_refused_credentials(media_service):
    stored, refused = sid("ME"), sid("ME")
    media_service.add(stored, JPEG)
    deliver(stored)
    media_service.add(refused, JPEG)
    media_service.password = "rotated"
    deliver(refused)
    out, _, _ = run("check_twilio_status", "--detailed")
    section = out.split("=== Customer Files ===")[1].split("===")[0]
    assert "Downloading is on; files waiting 0, downloading 0, stored 1" in section
    assert "given up 1" in section
    assert "1 file(s) given up because the media service refused the credentials (HTTP 401/403)" in section
    assert "fetch_twilio_media --include-permanent" in section
