"""Contract tests: the requests SdkBackend makes, checked against Twilio's own OpenAPI
description of the Conversations API by a Prism mock server generated from it.

Prism answers a request that fits the spec with the spec's example (SIDs like CHaaaa…) and
refuses one that breaks it with HTTP 422, so a field the app sends wrong fails here. The
backend comes from settings (API_BASE_URL pointing at Prism), so build_client and
RedirectingHttpClient are exercised as a site would use them.

Needs Node with ``@stoplight/prism-cli`` installed in the repository root (``npm install
--no-audit --no-fund @stoplight/prism-cli@5.14.2``) or its ``prism`` executable named by
the PRISM_BIN environment variable, and the spec vendored in ``tests/twilio-oai/``.
"""

import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from twilio.http import HttpClient
from twilio.http.response import Response

from django_twilio_convlink.api import ApiError, RedirectingHttpClient, get_api_backend, to_api_error
from django_twilio_convlink.group_chat.remote import UNIQUE_NAME_PREFIX
from django_twilio_convlink.group_chat.remote import participants as _participants

pytestmark = pytest.mark.contract

REPO = Path(__file__).resolve().parents[2]
SPEC = Path(__file__).resolve().parents[1] / "twilio-oai" / "twilio_conversations_v1.json"
STARTUP_TIMEOUT = 30

ACCOUNT_SID = "AC5e8b2f4d6a1c3e5f7b9d0a2c4e6f8b1d"
CUSTOMER = "+14155550142"
CUSTOMER_CONVERSATION = "CH5f0c3e1a9b7d4e2f8a6c1b3d5e7f9a0b"
SERVICE_SID = "MG33333333333333333333333333333333"
MEDIA_SID = "ME4a6c8e0b2d4f6a8c0e2b4d6f8a0c2e4b"
FORWARDED_MESSAGE_SID = "IM7b9d1f3a5c7e9b1d3f5a7c9e1b3d5f7a"


@dataclass
class Prism:
    url: str
    log: Path

    def log_tail(self, lines: int = 15) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def log_size(self) -> int:
        return self.log.stat().st_size

    def log_since(self, offset: int) -> str:
        with self.log.open("rb") as log:
            log.seek(offset)
            return log.read().decode(errors="replace")


def _prism_executable() -> str:
    configured = os.environ.get("PRISM_BIN") or str(REPO / "node_modules" / ".bin" / "prism")
    found = shutil.which(configured)
    problems = []
    if not SPEC.is_file():
        problems.append(f"Twilio's OpenAPI spec is missing: {SPEC} (see tests/twilio-oai/PROVENANCE.md).")
    if not found:
        problems.append(f"Prism is not installed: no executable {configured}. In the repository root run "
                        "`npm install --no-audit --no-fund @stoplight/prism-cli@5.14.2`, or set PRISM_BIN.")
    if problems:
        pytest.fail("The contract tests need the Prism mock of Twilio's API.\n" + "\n".join(problems),
                    pytrace=False)
    return found


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


@pytest.fixture(scope="module")
def prism(tmp_path_factory):
    """A Prism mock of Twilio Conversations v1 on a free local port, for this module."""
    executable = _prism_executable()
    port = _free_port()
    log = tmp_path_factory.mktemp("prism") / "prism.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [executable, "mock", "-h", "127.0.0.1", "-p", str(port), str(SPEC)],
            cwd=REPO, stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, ended as one below
        )
    server = Prism(f"http://127.0.0.1:{port}", log)
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while not _answers(port):
            if process.poll() is not None:
                pytest.fail(f"Prism exited with status {process.returncode}:\n{server.log_tail()}",
                            pytrace=False)
            if time.monotonic() > deadline:
                pytest.fail(f"Prism did not answer on port {port} within {STARTUP_TIMEOUT} s:\n"
                            f"{server.log_tail()}", pytrace=False)
            time.sleep(0.1)
        yield server
    finally:
        _stop(process)


def _stop(process: subprocess.Popen) -> None:
    for sig, grace in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=grace)
            return
        except subprocess.TimeoutExpired:
            continue


class BracketedFormArrays(HttpClient):
    """Twilio reads a form array as repeated keys (``Participant=..&Participant=..``), which
    is what the SDK sends; Prism 5 reads only ``Participant[]=..`` as an array and refuses
    the rest (stoplightio/prism#2473). This renames list fields on the way to Prism, and
    leaves every other field, and a field the app sends as one string, as the SDK made them."""

    def __init__(self, prism_client: HttpClient) -> None:
        super().__init__(logging.getLogger("tests.twilio"), is_async=False)
        self.prism_client = prism_client

    def request(self, method, uri, params=None, data=None, **kwargs):
        if data:
            data = {f"{key}[]" if isinstance(value, list) else key: value for key, value in data.items()}
        return self.prism_client.request(method, uri, params=params, data=data, **kwargs)


@pytest.fixture
def backend(settings, prism):
    """The backend a site configured with real-looking credentials and API_BASE_URL gets."""
    settings.TWILIO_CONVLINK = {
        **settings.TWILIO_CONVLINK,
        "API_BACKEND": "django_twilio_convlink.api.SdkBackend",
        "ACCOUNT_SID": ACCOUNT_SID,
        "AUTH_TOKEN": "5d1c7a3e9b2f4d6a8c0e1b3d5f7a9c2e",
        "API_KEY_SID": "",
        "API_BASE_URL": prism.url,
        "MESSAGING_SERVICE_SID": SERVICE_SID,
    }
    backend = get_api_backend()
    client = backend.client
    assert isinstance(client.http_client, RedirectingHttpClient)
    client.http_client = BracketedFormArrays(client.http_client)
    return backend


def accepted(prism: Prism, call):
    """The result of ``call``, or a failure showing Prism's reasons for refusing it."""
    start = prism.log_size()
    try:
        return call()
    except ApiError as error:
        pytest.fail(f"Twilio's spec refused a request the app makes: {error}\n"
                    f"Prism's log:\n{prism.log_since(start)}", pytrace=False)


def create_group_chat(backend, *, messaging_service_sid: str = SERVICE_SID) -> str:
    """The call ensure_group_chat makes, with the participants the app builds."""
    return backend.create_group_chat(
        unique_name=UNIQUE_NAME_PREFIX + CUSTOMER_CONVERSATION,
        friendly_name=f"{CUSTOMER} with the manager and assistant",
        attributes={"customer_conversation_sid": CUSTOMER_CONVERSATION, "customer_phone": CUSTOMER},
        messaging_service_sid=messaging_service_sid,
        participants=_participants(CUSTOMER),
    )


def send_message(backend, *, body: str = "Hi! Is early check-in possible on Friday?",
                 media_sid: str = "") -> str:
    """The call _post_copy makes to forward a customer's message into the group chat."""
    return backend.send_message(conversation_sid="CHaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", author="ASSISTANT",
                                body=body, media_sid=media_sid,
                                attributes={"forwarded_from": FORWARDED_MESSAGE_SID})


def test_group_chat_creation_fits_the_spec(backend, prism):
    sid = accepted(prism, lambda: create_group_chat(backend))

    assert sid.startswith("CH") and len(sid) == 34


def test_group_chat_without_a_messaging_service_fits_the_spec(backend, prism):
    sid = accepted(prism, lambda: create_group_chat(backend, messaging_service_sid=""))

    assert sid.startswith("CH")


@pytest.mark.parametrize("body, media_sid", [
    ("Hi! Is early check-in possible on Friday?", ""),
    ("Here is the broken lock", MEDIA_SID),
    ("", MEDIA_SID),
    ("x" * 1599 + "…", ""),
], ids=["text", "text-and-photo", "photo-only", "longest-forward"])
def test_forwarded_message_fits_the_spec(backend, prism, body, media_sid):
    sid = accepted(prism, lambda: send_message(backend, body=body, media_sid=media_sid))

    assert sid.startswith("IM") and len(sid) == 34


def test_looking_for_earlier_copies_fits_the_spec(backend, prism):
    """The list a resumed forward reads to avoid posting a copy twice."""
    found = accepted(prism, lambda: backend.find_forwards(
        conversation_sid="CHaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", source_sid=FORWARDED_MESSAGE_SID))

    assert found == {}  # Prism's example messages copy nothing of ours


def test_learning_a_conversations_service_fits_the_spec(backend, prism):
    """The one call the media download may make: a conversation fetched to learn its
    ChatServiceSid when its webhooks did not carry it."""
    service = accepted(prism, lambda: backend.conversation_service_sid(
        conversation_sid="CHaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"))

    assert service.startswith("IS") and len(service) == 34


@pytest.mark.django_db
@pytest.mark.parametrize("body, media", [("The technician comes at 3pm.", None), ("", MEDIA_SID)],
                         ids=["text", "photo"])
def test_send_message_fits_the_spec(backend, prism, body, media):
    """The public send_message, end to end: its one call fits the spec, and the
    message is stored under the SID Twilio answered."""
    from django_twilio_convlink import send_message
    from tests.factories import ConversationFactory

    conversation = ConversationFactory(conversation_sid=CUSTOMER_CONVERSATION, customer_phone=CUSTOMER)
    message = accepted(prism, lambda: send_message(conversation, body, media=media))

    assert message.message_sid.startswith("IM") and message.direction == "outbound"
    assert message.pk is not None and message.source == "API"


class ConflictOnCreate(HttpClient):
    """Prism cannot answer 409: this answers the group chat creation with Twilio's
    unique-name conflict and passes every other request on to Prism."""

    def __init__(self, prism_client: HttpClient) -> None:
        super().__init__(logging.getLogger("tests.twilio"), is_async=False)
        self.prism_client = prism_client
        self.passed_on: list[tuple[str, str]] = []

    def request(self, method, uri, *args, **kwargs):
        if method == "POST" and uri.endswith("/v1/ConversationWithParticipants"):
            return Response(409, json.dumps({
                "code": 50353, "message": "Conversation with provided unique name already exists",
                "more_info": "https://www.twilio.com/docs/errors/50353", "status": 409}))
        self.passed_on.append((method, uri))
        return self.prism_client.request(method, uri, *args, **kwargs)


def test_lookup_after_a_conflict_fits_the_spec(backend, prism):
    client = backend.client
    client.http_client = ConflictOnCreate(client.http_client)

    sid = accepted(prism, lambda: create_group_chat(backend))

    assert sid.startswith("CH")
    assert client.http_client.passed_on == [
        ("GET", f"https://conversations.twilio.com/v1/Conversations/{UNIQUE_NAME_PREFIX}{CUSTOMER_CONVERSATION}"),
    ]


@pytest.mark.parametrize("breaking_call, field", [
    pytest.param(lambda backend: create_group_chat(backend, messaging_service_sid="MG-not-a-service-sid"),
                 "MessagingServiceSid", id="group-chat-bad-messaging-service"),
    pytest.param(lambda backend: send_message(backend, media_sid="not-a-media-sid"),
                 "MediaSid", id="message-bad-media-sid"),
    pytest.param(lambda backend: backend.client.conversations.v1.conversation_with_participants.create(
                     friendly_name="x", state="archived"),
                 "State", id="sdk-bad-state-enum"),
    pytest.param(lambda backend: backend.client.conversations.v1.conversation_with_participants.create(
                     participant='{"messaging_binding": {"address": "+14155550142"}}'),
                 "Participant", id="sdk-participant-not-a-list"),
])
def test_mock_refuses_a_request_that_breaks_the_spec(backend, prism, breaking_call, field):
    start = prism.log_size()

    with pytest.raises(Exception) as raised:
        breaking_call(backend)

    error = to_api_error(raised.value)
    assert (error.status, error.transient) == (422, False), error
    assert f"Request body property {field} must" in prism.log_since(start)


def test_the_history_syncs_reads_fit_the_spec(backend, prism):
    """Every read sync_twilio_conversations makes (the first page of each list is
    enough: the pages after it are the URLs Twilio itself hands out)."""
    from django_twilio_convlink.history import TwilioHistory

    reader = TwilioHistory(client=backend.client)
    conversations = accepted(prism, lambda: next(reader.conversation_pages(since="2026-01-01",
                                                                           state="active")))
    conversation_sid = conversations[0].sid
    assert conversation_sid.startswith("CH")
    assert accepted(prism, lambda: reader.conversation(conversation_sid)).sid == conversation_sid
    accepted(prism, lambda: reader.addresses(conversation_sid))
    messages = accepted(prism, lambda: next(reader.message_pages(conversation_sid)))
    assert messages and messages[0].sid.startswith("IM")
    accepted(prism, lambda: next(reader.message_pages(conversation_sid, order="desc", page_size=1)))
    found = accepted(prism, lambda: next(reader.conversations_of(CUSTOMER)))
    assert all(sid.startswith("CH") for sid in found)


@pytest.mark.django_db(transaction=True)
def test_a_conversation_from_the_spec_is_brought_in(backend, prism):
    """Twilio's own examples of a conversation, its participants and messages, through
    the whole command: stored, and nothing written back to Twilio."""
    import io

    from django.core.management import call_command

    from tests.testapp.models import ChatConversation

    start = prism.log_size()
    out = io.StringIO()
    call_command("sync_twilio_conversations", "--conversation-sid", "CHaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
                 stdout=out, stderr=io.StringIO())
    assert "0 failed" in out.getvalue(), out.getvalue()
    stored = ChatConversation.objects.get(conversation_sid="CHaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa")
    assert stored.messages.exists()
    log = prism.log_since(start)
    assert "[HTTP SERVER] get /v1/Conversations/CHaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa/Messages" in log
    assert "[HTTP SERVER] post" not in log  # history is read, never written back
