"""``fetch_twilio_media`` and ``prune_twilio_media``, as cron runs them, against the
stand-in media service on loopback (tests/media_server.py)."""

import datetime
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.files.storage import FileSystemStorage
from django.core.management import CommandError, call_command
from django.utils import timezone

from django_twilio_convlink.media.downloads import plan
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


def test_conversation_sid_is_read_as_the_webhook_stored_it(media_service, no_worker):
    media_service.add(media_sid := sid("ME"), JPEG)
    data = deliver(media_sid)
    spelled = " CH" + data["ConversationSid"][2:].upper() + " "
    out, _, error = run("fetch_twilio_media", "--conversation-sid", spelled)
    assert error is None and "1 message(s) never planned: 1 stored" in out


def test_a_file_planned_by_a_task_that_then_died_is_fetched_after_the_grace(media_service, no_worker):
    from tests.testapp.models import ChatMessage

    media_service.add(media_sid := sid("ME"), JPEG)
    data = deliver(media_sid)
    message = ChatMessage.objects.select_related("conversation").get(message_sid=data["MessageSid"])
    [row] = plan(message, message.conversation)
    assert row.state == "pending"

    # Its task may still be on its way: neither due nor "never planned" yet.
    out, _, error = run("fetch_twilio_media", "--now")
    assert error is None and "0 file(s) due, 0 message(s) never planned: 0 stored" in out
    StoredMedia.objects.update(retry_at=timezone.now() - datetime.timedelta(seconds=1))
    out, _, error = run("fetch_twilio_media")
    assert error is None and "1 file(s) due, 0 message(s) never planned: 1 stored" in out
    assert StoredMedia.objects.get().state == "stored"


def test_a_dead_workers_claim_is_taken_over_and_a_live_one_left_alone(media_service, no_worker):
    from tests.testapp.models import ChatMessage

    dead, live = sid("ME"), sid("ME")
    for media_sid in (dead, live):
        media_service.add(media_sid, JPEG)
        data = deliver(media_sid)
        message = ChatMessage.objects.select_related("conversation").get(message_sid=data["MessageSid"])
        plan(message, message.conversation)
    StoredMedia.objects.filter(media_sid=dead).update(
        state="downloading", retry_at=timezone.now() - datetime.timedelta(seconds=1))
    StoredMedia.objects.filter(media_sid=live).update(
        state="downloading", retry_at=timezone.now() + datetime.timedelta(minutes=2))

    out, _, error = run("fetch_twilio_media", "--now", "--include-permanent")
    assert error is None and "1 file(s) due, 0 message(s) never planned: 1 stored" in out
    states = dict(StoredMedia.objects.values_list("media_sid", "state"))
    assert states == {dead: "stored", live: "downloading"}
    assert [seen for seen in media_service.seen if live in seen.path] == []


def test_limit_caps_the_files_and_the_messages(media_service, no_worker):
    for _ in range(3):
        media_service.add(media_sid := sid("ME"), JPEG)
        deliver(media_sid)
    out, _, error = run("fetch_twilio_media", "--limit", "2")
    assert error is None and "0 file(s) due, 2 message(s) never planned: 2 stored" in out
    out, _, error = run("fetch_twilio_media", "--limit", "2")
    assert error is None and "1 message(s) never planned: 1 stored" in out
    assert StoredMedia.objects.filter(state="stored").count() == 3


def test_dry_run_lists_due_files_and_leaves_them_due(media_service):
    media_sid = sid("ME")
    media_service.add(media_sid, JPEG)
    media_service.mcs_script[media_sid] = [("status", 500)]
    data = deliver(media_sid)
    seen = list(media_service.seen)
    out, _, error = run("fetch_twilio_media", "--now", "--dry-run")
    assert error is None
    assert f"Would fetch {media_sid} in {data['ConversationSid']}" in out
    assert "[dry run] 1 file(s) due, 0 message(s) never planned." in out
    assert media_service.seen == seen
    row = StoredMedia.objects.get()
    assert (row.state, row.attempts) == ("failed", 1)


def test_a_bad_since_from_the_command_line_is_a_usage_error():
    # Refused by argparse before any database access, so the subprocess needs none.
    result = subprocess.run(
        [sys.executable, "-m", "django", "fetch_twilio_media", "--since", "2026-02-30"],
        capture_output=True, text=True, cwd=Path(__file__).resolve().parents[2],
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings"})
    assert result.returncode == 2, result.stderr
    assert "error: argument --since: " in result.stderr and "Traceback" not in result.stderr


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


class UndeletableStorage(FileSystemStorage):
    """A storage that refuses deletion, as an S3 bucket whose policy lacks DeleteObject."""

    def delete(self, name: str) -> None:
        raise PermissionError(f"Access denied deleting {name}")


def test_a_file_the_storage_refuses_to_delete_stays_stored_for_the_next_run(media_service, settings):
    media_sids = [sid("ME"), sid("ME")]
    for media_sid in media_sids:
        media_service.add(media_sid, JPEG)
        deliver(media_sid)
    StoredMedia.objects.update(stored_at=timezone.now() - datetime.timedelta(days=40))
    working = settings.STORAGES["default"]
    settings.STORAGES = {**settings.STORAGES, "default": {
        **working, "BACKEND": f"{__name__}.UndeletableStorage"}}

    out, err, error = run("prune_twilio_media", "--days", "30")
    assert error is not None and "2 file(s) could not be deleted from the storage" in str(error)
    assert "Deleted 0 file(s) stored more than 30 days ago; 2 could not be deleted." in out
    assert all(f"{media_sid}: twilio-media/" in err for media_sid in media_sids)
    assert "Access denied" in err
    # Nothing points at nothing, and nothing is left behind unnamed.
    assert set(StoredMedia.objects.values_list("state", flat=True)) == {"stored"}
    assert len(files_in(settings)) == 2

    settings.STORAGES = {**settings.STORAGES, "default": working}
    out, _, error = run("prune_twilio_media", "--days", "30")
    assert error is None and "Deleted 2 file(s) stored more than 30 days ago." in out
    assert files_in(settings) == [] and set(StoredMedia.objects.values_list("state", flat=True)) == {"pruned"}


def test_prune_leaves_files_not_stored_and_prune_twilio_webhooks_leaves_media(media_service, settings):
    stored, failed = sid("ME"), sid("ME")
    for media_sid in (stored, failed):
        media_service.add(media_sid, JPEG)
    media_service.mcs_script[failed] = [("status", 500)]
    deliver(stored)
    deliver(failed)
    StoredMedia.objects.update(stored_at=timezone.now() - datetime.timedelta(days=400),
                               created_at=timezone.now() - datetime.timedelta(days=400))
    run("prune_twilio_webhooks", "--days", "0")
    assert dict(StoredMedia.objects.values_list("media_sid", "state")) == {stored: "stored", failed: "failed"}
    assert len(files_in(settings)) == 1
    out, _, error = run("prune_twilio_media", "--days", "30")
    assert error is None and "Deleted 1 file(s)" in out
    assert dict(StoredMedia.objects.values_list("media_sid", "state")) == {stored: "pruned", failed: "failed"}


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



def test_status_names_the_oldest_file_not_stored_and_downloads_off(media_service, settings):
    media_service.add(media_sid := sid("ME"), JPEG)
    media_service.mcs_script[media_sid] = [("status", 500)]
    deliver(media_sid)
    StoredMedia.objects.update(created_at=timezone.now() - datetime.timedelta(hours=3))
    out, _, _ = run("check_twilio_status", "--detailed")
    section = out.split("=== Customer Files ===")[1].split("===")[0]
    assert "failed (will be retried) 1" in section
    assert "The oldest file not stored yet has waited 3 hours" in section
    assert "refused the credentials" not in section

    settings.TWILIO_CONVLINK = {**settings.TWILIO_CONVLINK, "MEDIA_DOWNLOAD": False}
    out, _, _ = run("check_twilio_status", "--detailed")
    assert "Downloading is off (MEDIA_DOWNLOAD); files waiting 0" in out
