"""Customers' files brought into the site's storage (``media``): driven through the
webhook, signed with the SDK's RequestValidator, against the stand-in media service
on loopback (tests/media_server.py): ``mcs`` checks the credentials, ``cdn`` serves
the temporary links and must never see them."""

import base64
import datetime
import json
import os
import socket
import threading
import time
from pathlib import Path

import pytest
from django.db import connection
from django.utils import timezone

from django_twilio_convlink.media import MEDIA_TASK, download_message_media, download_one, due
from django_twilio_convlink.models import StoredMedia
from django_twilio_convlink.tasks import bound_task
from tests.helpers import TwilioClient, payload, sid
from tests.media_server import MediaService
from tests.testapp.models import ChatConversation, ChatMessage

pytestmark = pytest.mark.django_db(transaction=True)

SERVICE_SID = "IS88888888888888888888888888888888"
JPEG = b"\xff\xd8\xff\xe0" + b"heater" * 1000
PNG = b"\x89PNG\r\n\x1a\n" + b"tap" * 500
PDF = b"%PDF-1.7\n" + b"invoice" * 300


def message_with(twilio_client, files, *, service_sid=SERVICE_SID, **fields):
    """Deliver one customer message carrying ``files`` [(sid, bytes, type, name)]."""
    media = [{"Sid": media_sid, "ContentType": kind, "Filename": name,
              **({"Size": len(content)} if content is not None else {})}
             for media_sid, content, kind, name in files]
    data = payload("onMessageAdded_mms_with_media", ConversationSid=fields.pop("ConversationSid", sid("CH")),
                   MessageSid=sid("IM"), Media=json.dumps(media), **fields)
    if service_sid:
        data["ChatServiceSid"] = service_sid
    response = twilio_client.webhook(data)
    assert response.status_code == 200, response.content
    return data


def files_in(settings) -> list[Path]:
    root = Path(settings.STORAGES["default"]["OPTIONS"]["location"])
    return [Path(d, f) for d, _, names in os.walk(root) for f in names]


def stored(media_sid) -> StoredMedia:
    return StoredMedia.objects.get(media_sid=media_sid)


def stored_signals(received) -> int:
    """How many ``media_stored`` signals the site's receivers got."""
    return [name for name, _, _ in received.calls].count("media_stored")


@pytest.mark.parametrize("content, kind, name, extension", [
    (JPEG, "image/jpeg", "heater.jpg", ".jpg"),
    (PNG, "image/png", "tap.png", ".png"),
    (PDF, "application/pdf", "invoice.pdf", ".pdf"),
    (b"<script>alert(1)</script>", "text/html", "notice.html", ".bin"),
    (b"<svg onload='alert(1)'/>", "image/svg+xml", "drawing.svg", ".bin"),
], ids=["jpeg", "png", "pdf", "html", "svg"])
def test_a_file_is_stored_with_its_bytes_under_a_random_name(twilio_client, media_service, received,
                                                             content, kind, name, extension):
    media_sid = sid("ME")
    media_service.add(media_sid, content, content_type=kind, filename=name)
    data = message_with(twilio_client, [(media_sid, content, kind, name)])

    row = stored(media_sid)
    assert row.state == "stored", row.last_error
    with row.file.open("rb") as f:
        assert f.read() == content
    assert (row.size, row.content_type, row.filename) == (len(content), kind, name)
    assert row.message_sid == data["MessageSid"] and row.conversation_sid == data["ConversationSid"]
    base = os.path.basename(row.file.name)
    assert name.split(".")[0] not in base and base.endswith(extension) and len(base) >= 32
    signals = [kwargs for n, _, kwargs in received.calls if n == "media_stored"]
    assert [kwargs["media"].media_sid for kwargs in signals] == [media_sid]
    signal = signals[0]
    assert signal["message"].message_sid == data["MessageSid"] and signal["committed"]
    # One Basic-auth request to the media service, one plain one to the CDN.
    assert [s.headers.get("Authorization", "")[:6] for s in media_service.requests_to("mcs")] == ["Basic "]
    assert len(media_service.requests_to("cdn")) == 1


def test_two_files_of_one_message_are_both_stored(twilio_client, media_service, settings):
    one, two = sid("ME"), sid("ME")
    media_service.add(one, JPEG)
    media_service.add(two, PDF, content_type="application/pdf", filename="lease.pdf")
    message_with(twilio_client, [(one, JPEG, "image/jpeg", "a.jpg"),
                                 (two, PDF, "application/pdf", "lease.pdf")])
    assert {stored(one).state, stored(two).state} == {"stored"}
    assert len(files_in(settings)) == 2


def test_without_chat_service_sid_the_conversations_stored_one_is_used(twilio_client, media_service,
                                                                       api_outbox):
    media_sid, conversation = sid("ME"), sid("CH")
    ChatConversation.objects.create(conversation_sid=conversation, chat_service_sid=SERVICE_SID)
    media_service.add(media_sid, JPEG)
    message_with(twilio_client, [(media_sid, JPEG, "image/jpeg", "a.jpg")], service_sid="",
                 ConversationSid=conversation)
    assert stored(media_sid).state == "stored"
    assert [call for call in api_outbox if call.method == "conversation_service_sid"] == []


def test_without_any_service_sid_twilio_is_asked_once(twilio_client, media_service, api_outbox):
    from django_twilio_convlink.api import LocmemBackend

    conversation, first, second = sid("CH"), sid("ME"), sid("ME")
    LocmemBackend.state.services[conversation] = SERVICE_SID
    for media_sid in (first, second):
        media_service.add(media_sid, JPEG)
    message_with(twilio_client, [(first, JPEG, "image/jpeg", "a.jpg")], service_sid="",
                 ConversationSid=conversation)
    message_with(twilio_client, [(second, JPEG, "image/jpeg", "b.jpg")], service_sid="",
                 ConversationSid=conversation, Index="1")

    assert stored(first).state == stored(second).state == "stored"
    assert [(c.method, c.kwargs) for c in api_outbox if c.method == "conversation_service_sid"] == [
        ("conversation_service_sid", {"conversation_sid": conversation})]
    assert ChatConversation.objects.get(conversation_sid=conversation).chat_service_sid == SERVICE_SID


def test_two_files_of_a_message_without_service_sid_ask_twilio_once(twilio_client, media_service, api_outbox):
    from django_twilio_convlink.api import LocmemBackend

    conversation, first, second = sid("CH"), sid("ME"), sid("ME")
    LocmemBackend.state.services[conversation] = SERVICE_SID
    for media_sid in (first, second):
        media_service.add(media_sid, JPEG)
    # Both rows are planned without the SID; the second file finds it on the conversation.
    message_with(twilio_client, [(first, JPEG, "image/jpeg", "a.jpg"), (second, JPEG, "image/jpeg", "b.jpg")],
                 service_sid="", ConversationSid=conversation)

    assert stored(first).state == stored(second).state == "stored"
    assert stored(first).chat_service_sid == stored(second).chat_service_sid == SERVICE_SID
    assert [c.method for c in api_outbox].count("conversation_service_sid") == 1


def test_a_file_planned_before_its_service_sid_was_known_uses_the_conversations(media_service, api_outbox):
    # The conversation learned its service (onConversationAdded) after the file's row was planned.
    conversation, media_sid = sid("CH"), sid("ME")
    ChatConversation.objects.create(conversation_sid=conversation, chat_service_sid=SERVICE_SID)
    media_service.add(media_sid, JPEG)
    row = StoredMedia.objects.create(media_sid=media_sid, message_sid=sid("IM"),
                                     conversation_sid=conversation, content_type="image/jpeg")

    assert download_one(row.pk).stored == [media_sid]
    assert stored(media_sid).chat_service_sid == SERVICE_SID
    assert api_outbox == []


def test_a_conversation_twilio_names_no_service_for_is_given_up(twilio_client, media_service, api_outbox):
    media_sid = sid("ME")
    message_with(twilio_client, [(media_sid, JPEG, "image/jpeg", "a.jpg")], service_sid="")
    row = stored(media_sid)
    assert row.state == "permanent" and "no conversation service" in row.last_error
    assert media_service.seen == []


def test_a_fresh_file_answering_404_is_stored_on_a_later_run(twilio_client, media_service, received):
    media_sid = sid("ME")
    media_service.add(media_sid, JPEG)
    media_service.mcs_script[media_sid] = [("status", 404)]
    data = message_with(twilio_client, [(media_sid, JPEG, "image/jpeg", "a.jpg")])

    row = stored(media_sid)
    assert (row.state, row.attempts, row.last_error_status) == ("failed", 1, 404)
    # MEDIA_RETRY_DELAY is 30 seconds (the fixture).
    after = row.retry_at - timezone.now()
    assert datetime.timedelta(seconds=20) < after <= datetime.timedelta(seconds=30)
    assert stored_signals(received) == 0
    message = ChatMessage.objects.get(message_sid=data["MessageSid"])
    # Before its backoff a run leaves it alone, without asking Twilio; --now does not wait.
    asked = len(media_service.seen)
    assert download_message_media(message.pk).left == [str(row.pk)]
    assert download_one(row.pk).left == [str(row.pk)]
    assert len(media_service.seen) == asked
    assert (stored(media_sid).state, stored(media_sid).attempts) == ("failed", 1)
    assert download_message_media(message.pk, now=True).stored == [media_sid]
    row = stored(media_sid)
    assert (row.state, row.last_error, row.last_error_status, row.retry_at) == ("stored", "", None, None)
    with row.file.open("rb") as f:
        assert f.read() == JPEG
    assert stored_signals(received) == 1
    assert download_message_media(message.pk, now=True).stored == []  # stored once, for good


@pytest.mark.parametrize("script, server", [
    ([("status", 500)], "mcs"), ([("status", 503)], "cdn"), ([("status", 429)], "mcs"),
    ([("sleep", 1.5)], "mcs"), ([("sleep", 1.5)], "cdn"),
], ids=["mcs-500", "cdn-503", "429", "mcs-timeout", "cdn-timeout"])
def test_passing_failures_are_retried(twilio_client, media_service, settings, received, script, server):
    settings.TWILIO_CONVLINK = {**settings.TWILIO_CONVLINK, "API_TIMEOUT": 1}
    media_sid = sid("ME")
    media_service.add(media_sid, JPEG)
    getattr(media_service, f"{server}_script")[media_sid] = list(script)
    message_with(twilio_client, [(media_sid, JPEG, "image/jpeg", "a.jpg")])

    row = stored(media_sid)
    assert (row.state, row.attempts) == ("failed", 1), row.last_error
    assert row.retry_at > timezone.now() and not row.file and files_in(settings) == []
    assert stored_signals(received) == 0
    assert download_one(row.pk, now=True).stored == [media_sid]
    with stored(media_sid).file.open("rb") as f:
        assert f.read() == JPEG
    assert stored_signals(received) == 1 and len(files_in(settings)) == 1


def test_a_transfer_ending_short_of_the_declared_size_is_retried(twilio_client, media_service, settings):
    media_sid = sid("ME")
    media_service.add(media_sid, JPEG)
    media_service.cdn_script[media_sid] = [("body", JPEG[:1000])]  # a cut connection, or a stale copy
    message_with(twilio_client, [(media_sid, JPEG, "image/jpeg", "a.jpg")])

    row = stored(media_sid)
    assert (row.state, row.attempts) == ("failed", 1) and f"after 1000 of {len(JPEG)} bytes" in row.last_error
    assert files_in(settings) == []
    assert download_one(row.pk, now=True).stored == [media_sid]
    with stored(media_sid).file.open("rb") as f:
        assert f.read() == JPEG


def test_failures_give_up_after_max_attempts(twilio_client, media_service, settings):
    settings.TWILIO_CONVLINK = {**settings.TWILIO_CONVLINK, "MEDIA_MAX_ATTEMPTS": 2}
    media_sid = sid("ME")
    media_service.add(media_sid, JPEG)
    media_service.mcs_script[media_sid] = [("status", 500), ("status", 500)]
    message_with(twilio_client, [(media_sid, JPEG, "image/jpeg", "a.jpg")])
    assert download_one(stored(media_sid).pk, now=True).given_up == [media_sid]
    assert (stored(media_sid).state, stored(media_sid).attempts) == ("permanent", 2)


def test_refused_credentials_are_permanent_until_they_change(twilio_client, media_service, settings):
    good = settings.TWILIO_CONVLINK["AUTH_TOKEN"]
    media_sid = sid("ME")
    media_service.add(media_sid, JPEG)
    # The webhook is signed with the good token; the download uses the wrong one.
    media_service.password = "another-token"
    message_with(twilio_client, [(media_sid, JPEG, "image/jpeg", "a.jpg")])

    row = stored(media_sid)
    assert (row.state, row.last_error_status, row.retry_at) == ("permanent", 401, None)
    assert "refuses the credentials of account" in row.last_error and good not in row.last_error
    assert download_one(row.pk, now=True).left == [str(row.pk)]  # not retried by itself
    media_service.password = good
    assert download_one(row.pk, include_permanent=True).stored == [media_sid]


def test_a_file_declared_too_large_is_refused_without_fetching_it(twilio_client, media_service, settings):
    settings.TWILIO_CONVLINK = {**settings.TWILIO_CONVLINK, "MEDIA_MAX_BYTES": 1000}
    media_sid = sid("ME")
    media_service.add(media_sid, JPEG)
    message_with(twilio_client, [(media_sid, JPEG, "image/jpeg", "a.jpg")])

    row = stored(media_sid)
    assert row.state == "refused" and "MEDIA_MAX_BYTES is 1000" in row.last_error and not row.file
    assert media_service.requests_to("cdn") == [] and files_in(settings) == []


def test_a_file_larger_than_declared_is_refused_and_not_kept(twilio_client, media_service, settings):
    media_sid = sid("ME")
    media_service.add(media_sid, JPEG)
    media_service.mcs_script[media_sid] = [("declare", 100)]
    media_service.cdn_script[media_sid] = [("chunked", JPEG)]  # no Content-Length to go by
    message_with(twilio_client, [(media_sid, JPEG[:100], "image/jpeg", "a.jpg")])

    row = stored(media_sid)
    assert row.state == "refused" and "Twilio declared 100 bytes" in row.last_error
    assert files_in(settings) == []


def test_an_undeclared_file_over_the_limit_is_refused(twilio_client, media_service, settings):
    settings.TWILIO_CONVLINK = {**settings.TWILIO_CONVLINK, "MEDIA_MAX_BYTES": 2000}
    media_sid = sid("ME")
    media_service.add(media_sid, JPEG)
    media_service.mcs_script[media_sid] = [("declare", None)]
    media_service.cdn_script[media_sid] = [("chunked", JPEG)]
    message_with(twilio_client, [(media_sid, None, "image/jpeg", "a.jpg")])

    row = stored(media_sid)
    assert row.state == "refused" and "more than 2000 bytes; MEDIA_MAX_BYTES is 2000" in row.last_error
    assert files_in(settings) == []


def test_a_redirect_from_the_media_service_is_not_followed(twilio_client, media_service):
    media_sid = sid("ME")
    media_service.add(media_sid, JPEG)
    media_service.mcs_script[media_sid] = [("redirect", f"{media_service.cdn_url}/steal")]
    message_with(twilio_client, [(media_sid, JPEG, "image/jpeg", "a.jpg")])

    row = stored(media_sid)
    assert row.state == "permanent" and "not followed" in row.last_error
    assert media_service.requests_to("cdn") == []


def test_a_redirect_of_the_temporary_link_is_followed_without_credentials(twilio_client, media_service):
    elsewhere = MediaService("nobody", "nothing").start()
    try:
        media_sid = sid("ME")
        media_service.add(media_sid, JPEG)
        elsewhere.add(media_sid, JPEG)
        media_service.cdn_script[media_sid] = [("redirect", f"{elsewhere.cdn_url}/{media_sid}")]
        message_with(twilio_client, [(media_sid, JPEG, "image/jpeg", "a.jpg")])

        assert stored(media_sid).state == "stored"
        followed = elsewhere.requests_to("cdn")
        assert len(followed) == 1 and "Authorization" not in followed[0].headers
    finally:
        elsewhere.stop()


def test_a_sub_accounts_file_is_read_with_the_sub_accounts_credentials(media_service, settings):
    subaccount, token = "AC" + "5" * 32, "subaccount-token"
    settings.TWILIO_CONVLINK = {**settings.TWILIO_CONVLINK, "SUBACCOUNT_AUTH_TOKENS": {subaccount: token}}
    media_service.username, media_service.password = subaccount, token
    media_sid = sid("ME")
    media_service.add(media_sid, JPEG)
    message_with(TwilioClient(token=token), [(media_sid, JPEG, "image/jpeg", "a.jpg")], AccountSid=subaccount)

    row = stored(media_sid)
    assert row.state == "stored" and row.account_sid == subaccount


def test_media_download_off_fetches_nothing(twilio_client, media_service, settings):
    settings.TWILIO_CONVLINK = {**settings.TWILIO_CONVLINK, "MEDIA_DOWNLOAD": False}
    media_sid = sid("ME")
    media_service.add(media_sid, JPEG)
    data = message_with(twilio_client, [(media_sid, JPEG, "image/jpeg", "a.jpg")])

    assert media_service.seen == [] and not StoredMedia.objects.exists()
    message = ChatMessage.objects.get(message_sid=data["MessageSid"])
    assert message.media[0]["Sid"] == media_sid  # the descriptor is kept as before
    assert download_message_media(message.pk, now=True).stored == []


def test_one_file_in_two_messages_is_stored_once(twilio_client, media_service, received, settings):
    media_sid = sid("ME")
    media_service.add(media_sid, JPEG)
    message_with(twilio_client, [(media_sid, JPEG, "image/jpeg", "a.jpg")])
    message_with(twilio_client, [(media_sid, JPEG, "image/jpeg", "a.jpg")])
    assert StoredMedia.objects.filter(media_sid=media_sid).count() == 1
    assert len(files_in(settings)) == 1
    assert [n for n, _, _ in received.calls].count("media_stored") == 1
    assert len(media_service.requests_to("cdn")) == 1


def test_media_storage_names_the_storages_alias_when_used(twilio_client, media_service, settings, tmp_path):
    settings.STORAGES = {**settings.STORAGES, "evidence": {
        "BACKEND": "django.core.files.storage.FileSystemStorage",
        "OPTIONS": {"location": str(tmp_path / "ev")}}}
    settings.TWILIO_CONVLINK = {**settings.TWILIO_CONVLINK, "MEDIA_STORAGE": "evidence"}
    media_sid = sid("ME")
    media_service.add(media_sid, JPEG)
    message_with(twilio_client, [(media_sid, JPEG, "image/jpeg", "a.jpg")])

    row = stored(media_sid)
    assert (tmp_path / "ev" / row.file.name).read_bytes() == JPEG
    assert files_in(settings) == []


def test_a_netrc_entry_for_the_cdn_host_adds_no_credentials(twilio_client, media_service, tmp_path,
                                                            monkeypatch):
    # requests reads ~/.netrc for a request without auth; the temporary link must not get its entry.
    netrc = tmp_path / "netrc"
    netrc.write_text("machine 127.0.0.1 login leaked password from-netrc\n")
    monkeypatch.setenv("NETRC", str(netrc))
    media_sid = sid("ME")
    media_service.add(media_sid, JPEG)
    message_with(twilio_client, [(media_sid, JPEG, "image/jpeg", "a.jpg")])

    assert stored(media_sid).state == "stored"
    assert len(media_service.requests_to("cdn")) == 1 and media_service.credentials_at_cdn() == []


@pytest.mark.parametrize("target, error", [
    ("loop", "redirects more than 3 times"),
    ("file:///etc/passwd", "not http(s)"),
], ids=["loop", "file-scheme"])
def test_a_temporary_link_redirecting_badly_is_given_up(twilio_client, media_service, target, error):
    media_sid = sid("ME")
    media_service.add(media_sid, JPEG)
    loop = f"{media_service.cdn_url}/{media_sid}?again=1"
    media_service.cdn_script[media_sid] = [("redirect", loop if target == "loop" else target)] * 5
    message_with(twilio_client, [(media_sid, JPEG, "image/jpeg", "a.jpg")])

    row = stored(media_sid)
    assert row.state == "permanent" and error in row.last_error and not row.file


def planned_row(media_sid, **fields) -> StoredMedia:
    """A file's row as ``plan`` makes it, for tests that call ``download_one`` directly."""
    return StoredMedia.objects.create(media_sid=media_sid, message_sid=sid("IM"), conversation_sid=sid("CH"),
                                      chat_service_sid=SERVICE_SID, content_type="image/jpeg", **fields)


def test_a_run_that_outlived_its_claim_keeps_no_second_copy(media_service, received, settings):
    settings.TWILIO_CONVLINK = {**settings.TWILIO_CONVLINK, "API_TIMEOUT": 10}
    media_sid = sid("ME")
    media_service.add(media_sid, JPEG)
    row = planned_row(media_sid)
    others = []

    def another_run():
        # While the first run fetches, its claim expires (it seems dead) and
        # fetch_twilio_media takes the file up and stores it.
        try:
            expired = timezone.now() - datetime.timedelta(seconds=1)
            StoredMedia.objects.filter(pk=row.pk).update(retry_at=expired)
            others.append(download_one(row.pk))
        finally:
            connection.close()

    media_service.cdn_script[media_sid] = [("call", another_run)]
    first = download_one(row.pk)

    assert [o.stored for o in others] == [[media_sid]]
    assert (first.stored, first.left) == ([], [media_sid])
    assert len(files_in(settings)) == 1 and stored_signals(received) == 1
    with stored(media_sid).file.open("rb") as f:
        assert f.read() == JPEG


def test_a_file_whose_row_is_deleted_while_it_downloads_is_not_kept(media_service, received, settings):
    media_sid = sid("ME")
    media_service.add(media_sid, JPEG)
    row = planned_row(media_sid)

    def delete_the_row():
        try:
            StoredMedia.objects.filter(pk=row.pk).delete()
        finally:
            connection.close()

    media_service.cdn_script[media_sid] = [("call", delete_the_row)]
    assert download_one(row.pk).left == [media_sid]  # nothing to record its failure on
    assert not StoredMedia.objects.exists() and files_in(settings) == [] and stored_signals(received) == 0


def basic_auth(seen) -> tuple[str, str]:
    """The (username, password) a request to the stand-in carried as Basic auth."""
    scheme, _, token = seen.headers.get("Authorization", "").partition(" ")
    assert scheme == "Basic", seen.headers
    username, _, password = base64.b64decode(token).decode().partition(":")
    return username, password


def closed_port() -> int:
    """A loopback port nothing listens on: a connection to it is refused."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_the_group_chats_copy_of_a_photo_and_a_replay_store_nothing_more(twilio_client, media_service,
                                                                        received, settings, api_outbox):
    media_sid = sid("ME")
    media_service.add(media_sid, JPEG)
    data = message_with(twilio_client, [(media_sid, JPEG, "image/jpeg", "a.jpg")])
    # The group chat got its copy of the photo (the same media SID, posted by SID).
    assert [c.kwargs["media_sid"] for c in api_outbox if c.method == "send_message"] == [media_sid]
    copy = ChatMessage.objects.get(conversation__is_group_chat=True)
    assert [m["Sid"] for m in copy.media] == [media_sid]
    asked = len(media_service.seen)

    assert download_message_media(copy.pk, now=True).stored == []
    assert twilio_client.webhook({**data, "RetryCount": "1"}).status_code == 200  # Twilio's replay

    row = stored(media_sid)
    assert StoredMedia.objects.count() == 1 and row.message_sid == data["MessageSid"]
    assert len(media_service.seen) == asked and len(files_in(settings)) == 1
    assert [kwargs["message"].message_sid for n, _, kwargs in received.calls if n == "media_stored"] == [
        data["MessageSid"]]


def test_a_photo_costs_the_webhook_no_statement(twilio_client, media_service, settings, captured_sql):
    # The download is the task's, after the commit: the webhook only enqueues it.
    # Counted on a task backend that runs nothing, so that the task's statements
    # (and the group chat's) are not the webhook's.
    settings.TWILIO_CONVLINK = {**settings.TWILIO_CONVLINK, "TASK_BACKEND": "dummy"}
    first = message_with(twilio_client, [])
    counts = {}
    for index, download in enumerate((False, True), start=1):
        settings.TWILIO_CONVLINK = {**settings.TWILIO_CONVLINK, "MEDIA_DOWNLOAD": download}
        media_sid = sid("ME")
        media_service.add(media_sid, JPEG)
        with captured_sql() as captured:
            data = message_with(twilio_client, [(media_sid, JPEG, "image/jpeg", "a.jpg")],
                                ConversationSid=first["ConversationSid"], Index=str(index))
        counts[download] = len(captured)
        assert not any("stored_media" in sql.lower() for sql in captured.sql)
    assert counts[True] == counts[False], counts

    assert media_service.seen == [] and not StoredMedia.objects.exists()
    message = ChatMessage.objects.get(message_sid=data["MessageSid"])
    queued = [r.args for r in bound_task(MEDIA_TASK).get_backend().results if r.task.name == MEDIA_TASK]
    assert queued == [[message.pk]]  # the photo sent with MEDIA_DOWNLOAD on, once
    assert download_message_media(message.pk).stored == [media_sid]


def test_a_stale_runs_failure_leaves_the_file_to_the_run_that_took_over(media_service, received, settings):
    # The first run is slow enough for its claim to expire; another run takes the
    # file over, and is still fetching when the first fails. The first run's failure
    # must not overwrite the second's claim, nor its download be thrown away.
    media_sid = sid("ME")
    media_service.add(media_sid, JPEG)
    row = planned_row(media_sid)
    second_at_cdn, outcomes, threads = threading.Event(), [], []

    def second_run():
        try:
            outcomes.append(download_one(row.pk))
        finally:
            connection.close()

    def first_claim_expires_and_a_second_run_starts():
        try:
            expired = timezone.now() - datetime.timedelta(seconds=1)
            StoredMedia.objects.filter(pk=row.pk).update(retry_at=expired)
        finally:
            connection.close()
        threads.append(threading.Thread(target=second_run))
        threads[0].start()
        assert second_at_cdn.wait(5)

    def second_run_fetches_slowly():
        second_at_cdn.set()
        time.sleep(0.5)

    # Per request, in order: the first run asks the media service (and the second run
    # starts, gets its link, reaches the CDN); the second run's CDN answer is slow; the
    # first run's is a 503.
    media_service.mcs_script[media_sid] = [("call", first_claim_expires_and_a_second_run_starts)]
    media_service.cdn_script[media_sid] = [("call", second_run_fetches_slowly), ("status", 503)]
    first = download_one(row.pk)
    threads[0].join()

    assert (first.failed, first.left) == ([], [media_sid])
    assert [o.stored for o in outcomes] == [[media_sid]]
    row = stored(media_sid)
    assert (row.state, row.attempts, row.last_error, row.retry_at) == ("stored", 0, "", None)
    with row.file.open("rb") as f:
        assert f.read() == JPEG
    assert len(files_in(settings)) == 1 and stored_signals(received) == 1


def test_an_expired_temporary_link_is_retried_with_a_new_one(twilio_client, media_service, settings):
    media_sid = sid("ME")
    media_service.add(media_sid, JPEG)
    media_service.cdn_script[media_sid] = [("status", 403)]  # a signed link past its expiry
    message_with(twilio_client, [(media_sid, JPEG, "image/jpeg", "a.jpg")])

    row = stored(media_sid)
    assert (row.state, row.attempts, row.last_error_status) == ("failed", 1, 403)
    assert "credentials" not in row.last_error and row.retry_at > timezone.now()
    assert download_one(row.pk, now=True).stored == [media_sid]
    # Each attempt asked the media service for a link of its own.
    assert len(media_service.requests_to("mcs")) == 2 and len(media_service.requests_to("cdn")) == 2


def test_an_unreachable_temporary_link_is_retried_and_its_signature_not_kept(twilio_client, media_service,
                                                                            settings, caplog):
    media_sid = sid("ME")
    media_service.add(media_sid, JPEG)
    unreachable = f"http://127.0.0.1:{closed_port()}/{media_sid}?Expires=1&Signature=sig-of-the-link"
    media_service.cdn_script[media_sid] = [("redirect", unreachable)]
    message_with(twilio_client, [(media_sid, JPEG, "image/jpeg", "a.jpg")])

    row = stored(media_sid)
    assert (row.state, row.attempts) == ("failed", 1) and "ConnectionError" in row.last_error
    # The signed link reads the customer's file until it expires: not in the row, not in the log.
    assert "sig-of-the-link" not in row.last_error and "sig-of-the-link" not in caplog.text
    assert download_one(row.pk, now=True).stored == [media_sid]


def test_wrong_api_key_in_settings_is_permanent_until_the_settings_are_fixed(twilio_client, media_service,
                                                                            settings, received):
    good = settings.TWILIO_CONVLINK
    settings.TWILIO_CONVLINK = {**good, "API_KEY_SID": "SK" + "7" * 32, "API_KEY_SECRET": "revoked-secret"}
    media_sid = sid("ME")
    media_service.add(media_sid, JPEG)
    data = message_with(twilio_client, [(media_sid, JPEG, "image/jpeg", "a.jpg")])

    row = stored(media_sid)
    assert (row.state, row.attempts, row.last_error_status, row.retry_at) == ("permanent", 1, 401, None)
    assert f"API key SK{'7' * 32}" in row.last_error and "revoked-secret" not in row.last_error
    assert [basic_auth(s) for s in media_service.requests_to("mcs")] == [("SK" + "7" * 32, "revoked-secret")]
    # Not retried by the runs that retry failures, however soon.
    message = ChatMessage.objects.get(message_sid=data["MessageSid"])
    assert download_message_media(message.pk, now=True).stored == []
    assert download_one(row.pk, now=True).left == [str(row.pk)]
    assert list(due(ignore_backoff=True)) == [] and list(due(include_permanent=True)) == [row]
    assert len(media_service.seen) == 1 and media_service.requests_to("cdn") == []

    settings.TWILIO_CONVLINK = {**good}  # the key removed: ACCOUNT_SID and AUTH_TOKEN
    assert download_one(row.pk, include_permanent=True).stored == [media_sid]
    assert basic_auth(media_service.requests_to("mcs")[-1]) == (good["ACCOUNT_SID"], good["AUTH_TOKEN"])
    with stored(media_sid).file.open("rb") as f:
        assert f.read() == JPEG
    assert stored_signals(received) == 1


def test_each_accounts_file_is_asked_for_with_that_accounts_credentials(media_service, settings):
    main = settings.TWILIO_CONVLINK
    subaccount, token = "AC" + "5" * 32, "subaccount-token"
    settings.TWILIO_CONVLINK = {**main, "SUBACCOUNT_AUTH_TOKENS": {subaccount: [token, "older-token"]}}
    media_service.username, media_service.password = subaccount, token
    ours, theirs = sid("ME"), sid("ME")
    media_service.add(ours, JPEG)
    media_service.add(theirs, PNG, content_type="image/png")
    message_with(TwilioClient(), [(ours, JPEG, "image/jpeg", "a.jpg")])
    message_with(TwilioClient(token=token), [(theirs, PNG, "image/png", "b.png")], AccountSid=subaccount)

    # The stand-in knows only the sub-account: the main account's file is refused,
    # the sub-account's read with its SID and first token.
    assert (stored(ours).state, stored(ours).last_error_status) == ("permanent", 401)
    assert stored(theirs).state == "stored"
    assert [basic_auth(s) for s in media_service.requests_to("mcs")] == [
        (main["ACCOUNT_SID"], main["AUTH_TOKEN"]), (subaccount, token)]


def test_a_temporary_link_redirected_on_its_own_host_is_followed_without_credentials(twilio_client,
                                                                                     media_service):
    media_sid = sid("ME")
    media_service.add(media_sid, JPEG)
    media_service.cdn_script[media_sid] = [("redirect", f"/{media_sid}/moved?Signature=y")]  # relative
    message_with(twilio_client, [(media_sid, JPEG, "image/jpeg", "a.jpg")])

    with stored(media_sid).file.open("rb") as f:
        assert f.read() == JPEG
    paths = [s.path.split("?")[0] for s in media_service.requests_to("cdn")]
    assert paths == [f"/{media_sid}", f"/{media_sid}/moved"]
    assert media_service.credentials_at_cdn() == []


@pytest.mark.parametrize("sent", ["body", "chunked"], ids=["content-length", "chunked"])
def test_a_file_larger_than_the_media_service_declared_is_refused(twilio_client, media_service, settings,
                                                                  received, sent):
    # The webhook's Size says nothing either way: the media service's declaration counts.
    media_sid = sid("ME")
    media_service.add(media_sid, JPEG)
    media_service.mcs_script[media_sid] = [("declare", 100)]
    media_service.cdn_script[media_sid] = [(sent, JPEG)]
    message_with(twilio_client, [(media_sid, None, "image/jpeg", "a.jpg")])

    row = stored(media_sid)
    assert (row.state, row.retry_at, row.file.name) == ("refused", None, "")
    assert "Twilio declared 100 bytes" in row.last_error
    assert files_in(settings) == [] and stored_signals(received) == 0
    assert download_one(row.pk, now=True, include_permanent=True).left == [str(row.pk)]
    assert len(media_service.requests_to("cdn")) == 1


def test_a_file_another_run_is_downloading_is_left_to_it(media_service, received, settings):
    media_sid = sid("ME")
    media_service.add(media_sid, JPEG)
    # Claimed a moment ago by a run still fetching (a worker beside the cron command).
    row = planned_row(media_sid, state="downloading", retry_at=timezone.now() + datetime.timedelta(minutes=2))

    assert download_one(row.pk, now=True, include_permanent=True).left == [str(row.pk)]
    assert media_service.seen == [] and stored(media_sid).state == "downloading"
    # Once its claim has expired, the run is presumed dead and the file taken up.
    StoredMedia.objects.filter(pk=row.pk).update(retry_at=timezone.now() - datetime.timedelta(seconds=1))
    assert download_one(row.pk).stored == [media_sid]
    assert len(files_in(settings)) == 1 and stored_signals(received) == 1
