"""Customers' files brought into the site's storage (``media``): driven through the
webhook, signed with the SDK's RequestValidator, against the stand-in media service
on loopback (tests/media_server.py): ``mcs`` checks the credentials, ``cdn`` serves
the temporary links and must never see them."""

import json
import os
from pathlib import Path

import pytest

from django_twilio_convlink.media import download_message_media, download_one
from django_twilio_convlink.models import StoredMedia
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


def test_a_conversation_twilio_names_no_service_for_is_given_up(twilio_client, media_service, api_outbox):
    media_sid = sid("ME")
    message_with(twilio_client, [(media_sid, JPEG, "image/jpeg", "a.jpg")], service_sid="")
    row = stored(media_sid)
    assert row.state == "permanent" and "no conversation service" in row.last_error
    assert media_service.seen == []


def test_a_fresh_file_answering_404_is_stored_on_a_later_run(twilio_client, media_service):
    media_sid = sid("ME")
    media_service.add(media_sid, JPEG)
    media_service.mcs_script[media_sid] = [("status", 404)]
    data = message_with(twilio_client, [(media_sid, JPEG, "image/jpeg", "a.jpg")])

    row = stored(media_sid)
    assert (row.state, row.attempts, row.last_error_status) == ("failed", 1, 404)
    assert row.retry_at is not None and row.retry_at > row.updated_at
    message = ChatMessage.objects.get(message_sid=data["MessageSid"])
    # Before its backoff a run leaves it alone; --now does not wait.
    assert download_message_media(message.pk).left == [str(row.pk)]
    assert stored(media_sid).state == "failed"
    assert download_message_media(message.pk, now=True).stored == [media_sid]
    assert stored(media_sid).state == "stored" and stored(media_sid).last_error == ""


@pytest.mark.parametrize("script, server", [
    ([("status", 500)], "mcs"), ([("status", 503)], "cdn"), ([("status", 429)], "mcs"),
    ([("sleep", 1.5)], "mcs"), ([("sleep", 1.5)], "cdn"),
], ids=["mcs-500", "cdn-503", "429", "mcs-timeout", "cdn-timeout"])
def test_passing_failures_are_retried(twilio_client, media_service, settings, script, server):
    settings.TWILIO_CONVLINK = {**settings.TWILIO_CONVLINK, "API_TIMEOUT": 1}
    media_sid = sid("ME")
    media_service.add(media_sid, JPEG)
    getattr(media_service, f"{server}_script")[media_sid] = list(script)
    message_with(twilio_client, [(media_sid, JPEG, "image/jpeg", "a.jpg")])

    row = stored(media_sid)
    assert (row.state, row.attempts) == ("failed", 1), row.last_error
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
