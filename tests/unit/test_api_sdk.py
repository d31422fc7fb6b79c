"""SdkBackend through the real ``twilio`` SDK, with a scripted HTTP client where the network
would be: the SDK builds the requests and parses the answers exactly as in production, and
each test scripts what Twilio answers and reads what was sent.
"""

import json
import logging
from dataclasses import dataclass
from typing import Any

import pytest
import requests
from twilio.http import HttpClient
from twilio.http.response import Response
from twilio.rest import Client

from django_twilio_convlink.api import (
    ApiError,
    Participant,
    RedirectingHttpClient,
    SdkBackend,
    build_client,
    get_api_backend,
    to_api_error,
)

ACCOUNT_SID = "AC0123456789abcdef0123456789abcdef"
AUTH_TOKEN = "7e570a1b2c3d4e5f60718293a4b5c6d7"
API = "https://conversations.twilio.com/v1"

CUSTOMER = "+14155550142"
MANAGER = "+15612205252"
TWILIO_PHONE = "+13153524379"
CUSTOMER_CONVERSATION = "CH5f0c3e1a9b7d4e2f8a6c1b3d5e7f9a0b"
UNIQUE_NAME = "convlink-group-" + CUSTOMER_CONVERSATION
GROUP_SID = "CH9d2e4f6a8b0c1d3e5f7a9b1c3d5e7f90"
EXISTING_SID = "CHe3b1c5a7d9f2e4b6a8c0d2f4e6a8b0c1"
SERVICE_SID = "MG33333333333333333333333333333333"
MEDIA_SID = "ME4a6c8e0b2d4f6a8c0e2b4d6f8a0c2e4b"
MESSAGE_SID = "IM7b9d1f3a5c7e9b1d3f5a7c9e1b3d5f7a"


@dataclass
class SentRequest:
    method: str
    url: str
    data: dict[str, Any]


class ScriptedHttpClient(HttpClient):
    """Twilio as the test scripts it: each request gets the next reply, either
    ``(status, json body)`` or an exception to raise (a timeout, a refused connection)."""

    def __init__(self, *replies: tuple[int, Any] | Exception) -> None:
        super().__init__(logging.getLogger("tests.twilio"), is_async=False)
        self.replies = list(replies)
        self.requests: list[SentRequest] = []

    def request(self, method, uri, params=None, data=None, headers=None, auth=None, timeout=None,
                allow_redirects=False):
        self.requests.append(SentRequest(method, uri, dict(data or {})))
        assert self.replies, f"unexpected request {method} {uri}"
        reply = self.replies.pop(0)
        if isinstance(reply, Exception):
            raise reply
        status, body = reply
        return Response(status, body if isinstance(body, str) else json.dumps(body))

    @property
    def calls(self) -> list[tuple[str, str]]:
        return [(r.method, r.url) for r in self.requests]


def backend_answering(*replies: tuple[int, Any] | Exception) -> tuple[SdkBackend, ScriptedHttpClient]:
    fake = ScriptedHttpClient(*replies)
    backend = SdkBackend()
    backend._client = Client(ACCOUNT_SID, AUTH_TOKEN, http_client=fake)
    return backend, fake


def twilio_error(status: int, code: int, message: str) -> tuple[int, dict[str, Any]]:
    return status, {"code": code, "message": message,
                    "more_info": f"https://www.twilio.com/docs/errors/{code}", "status": status}


def conversation(sid: str, unique_name: str = UNIQUE_NAME) -> tuple[int, dict[str, Any]]:
    return 201, {
        "sid": sid, "account_sid": ACCOUNT_SID, "chat_service_sid": "IS0123456789abcdef0123456789abcdef",
        "messaging_service_sid": SERVICE_SID, "friendly_name": f"{CUSTOMER} with the manager and assistant",
        "unique_name": unique_name, "attributes": "{}", "state": "active",
        "date_created": "2025-06-02T14:03:11Z", "date_updated": "2025-06-02T14:03:11Z",
        "timers": {}, "bindings": {}, "url": f"{API}/Conversations/{sid}",
        "links": {"participants": f"{API}/Conversations/{sid}/Participants"},
    }


def message(sid: str) -> tuple[int, dict[str, Any]]:
    return 201, {
        "sid": sid, "account_sid": ACCOUNT_SID, "conversation_sid": GROUP_SID, "index": 0,
        "author": "ASSISTANT", "body": "Is early check-in possible?", "media": None, "attributes": "{}",
        "participant_sid": None, "date_created": "2025-06-02T14:03:12Z", "date_updated": None,
        "url": f"{API}/Conversations/{GROUP_SID}/Messages/{sid}",
    }


def create_group_chat(backend: SdkBackend, *, messaging_service_sid: str = SERVICE_SID) -> str:
    """The call ensure_group_chat makes for the customer's conversation."""
    return backend.create_group_chat(
        unique_name=UNIQUE_NAME,
        friendly_name=f"{CUSTOMER} with the manager and assistant",
        attributes={"customer_conversation_sid": CUSTOMER_CONVERSATION, "customer_phone": CUSTOMER},
        messaging_service_sid=messaging_service_sid,
        participants=[Participant(address=CUSTOMER), Participant(address=MANAGER),
                      Participant(identity="ASSISTANT", projected_address=TWILIO_PHONE)],
    )


def send_message(backend: SdkBackend, *, body: str = "Is early check-in possible?",
                 media_sid: str = MEDIA_SID) -> str:
    return backend.send_message(conversation_sid=GROUP_SID, author="ASSISTANT", body=body,
                                media_sid=media_sid, attributes={"forwarded_from": MESSAGE_SID})


# --- Creating the group chat ---------------------------------------------------------------------

def test_group_chat_is_created_with_its_three_participants_in_one_request():
    backend, twilio = backend_answering(conversation(GROUP_SID))

    assert create_group_chat(backend) == GROUP_SID

    assert twilio.calls == [("POST", f"{API}/ConversationWithParticipants")]
    sent = twilio.requests[0].data
    assert sent["FriendlyName"] == f"{CUSTOMER} with the manager and assistant"
    assert sent["UniqueName"] == UNIQUE_NAME
    assert json.loads(sent["Attributes"]) == {"customer_conversation_sid": CUSTOMER_CONVERSATION,
                                              "customer_phone": CUSTOMER}
    assert sent["MessagingServiceSid"] == SERVICE_SID
    assert [json.loads(p) for p in sent["Participant"]] == [
        {"messaging_binding": {"address": CUSTOMER}},
        {"messaging_binding": {"address": MANAGER}},
        {"identity": "ASSISTANT", "messaging_binding": {"projected_address": TWILIO_PHONE}},
    ]


def test_group_chat_without_a_messaging_service_leaves_the_field_out():
    backend, twilio = backend_answering(conversation(GROUP_SID))

    create_group_chat(backend, messaging_service_sid="")

    assert "MessagingServiceSid" not in twilio.requests[0].data


@pytest.mark.parametrize("code, message", [
    (50416, f"Participant with provided messaging binding address already exists in Conversation "
            f"{EXISTING_SID}"),
    (50437, f"Participant already exists in Conversation {EXISTING_SID}"),
])
def test_participants_already_in_a_conversation_give_that_conversation(code, message):
    # An earlier attempt created the group chat but its answer was lost.
    backend, twilio = backend_answering(twilio_error(409, code, message), conversation(EXISTING_SID))

    assert create_group_chat(backend) == EXISTING_SID

    assert twilio.calls == [("POST", f"{API}/ConversationWithParticipants"),
                            ("GET", f"{API}/Conversations/{EXISTING_SID}")]


def test_conversation_named_in_a_conflict_is_taken_only_if_it_is_ours():
    """A member sitting in some other conversation (the customer's 1:1, say) is not our
    group chat: the unique name decides."""
    other = "CH" + "f" * 32
    backend, twilio = backend_answering(
        twilio_error(409, 50416, f"Participant already exists in Conversation {other}"),
        conversation(other, unique_name=""),
        conversation(EXISTING_SID),
    )

    assert create_group_chat(backend) == EXISTING_SID

    assert twilio.calls[-1] == ("GET", f"{API}/Conversations/{UNIQUE_NAME}")


@pytest.mark.parametrize("conflict", [
    twilio_error(409, 50353, "Conversation with provided unique name already exists"),
    (409, "Conflict"),
], ids=["unique-name-taken", "conflict-without-twilio-code"])
def test_taken_unique_name_gives_the_conversation_holding_it(conflict):
    backend, twilio = backend_answering(conflict, conversation(EXISTING_SID))

    assert create_group_chat(backend) == EXISTING_SID

    assert twilio.calls == [("POST", f"{API}/ConversationWithParticipants"),
                            ("GET", f"{API}/Conversations/{UNIQUE_NAME}")]


def test_conflict_naming_no_conversation_falls_back_to_the_unique_name():
    backend, twilio = backend_answering(
        twilio_error(409, 50416, "Participant with provided messaging binding address already exists"),
        conversation(EXISTING_SID),
    )

    assert create_group_chat(backend) == EXISTING_SID

    assert twilio.calls[1] == ("GET", f"{API}/Conversations/{UNIQUE_NAME}")


def test_conflict_with_no_conversation_by_that_name_reports_the_conflict():
    backend, twilio = backend_answering(
        twilio_error(409, 50353, "Conversation with provided unique name already exists"),
        twilio_error(404, 20404, f"The requested resource /Conversations/{UNIQUE_NAME} was not found"),
    )

    with pytest.raises(ApiError) as raised:
        create_group_chat(backend)

    assert (raised.value.status, raised.value.code, raised.value.transient) == (409, 50353, False)
    assert len(twilio.requests) == 2


def test_conflict_then_twilio_failing_on_the_lookup_is_worth_retrying():
    backend, twilio = backend_answering(
        twilio_error(409, 50353, "Conversation with provided unique name already exists"),
        twilio_error(503, 20503, "Service Unavailable"),
    )

    with pytest.raises(ApiError) as raised:
        create_group_chat(backend)

    assert (raised.value.status, raised.value.transient) == (503, True)


@pytest.mark.parametrize("reply", [
    twilio_error(429, 20429, "Too Many Requests"),
    twilio_error(500, 20500, "Internal Server Error"),
    (502, "<html><body><h1>502 Bad Gateway</h1></body></html>"),
], ids=["429", "500", "502-html"])
def test_twilio_overloaded_or_down_is_worth_retrying(reply):
    backend, twilio = backend_answering(reply)

    with pytest.raises(ApiError) as raised:
        create_group_chat(backend)

    assert raised.value.transient is True
    assert raised.value.status == reply[0]
    assert len(twilio.requests) == 1


@pytest.mark.parametrize("code, message", [
    (21610, "Attempt to send to unsubscribed recipient"),
    (50436, "Too many participants in the conversation"),
])
def test_refusals_that_no_retry_can_change_are_permanent(code, message):
    backend, twilio = backend_answering(twilio_error(400, code, message))

    with pytest.raises(ApiError) as raised:
        create_group_chat(backend)

    assert (raised.value.code, raised.value.status, raised.value.transient) == (code, 400, False)
    assert message in str(raised.value)
    assert len(twilio.requests) == 1


@pytest.mark.parametrize("failure", [
    requests.exceptions.ReadTimeout("HTTPSConnectionPool(host='conversations.twilio.com'): Read timed out."),
    requests.exceptions.ConnectionError("Failed to establish a new connection: [Errno 111] refused"),
], ids=["timeout", "connection-refused"])
def test_network_failure_is_worth_retrying(failure):
    backend, twilio = backend_answering(failure)

    with pytest.raises(ApiError) as raised:
        create_group_chat(backend)

    assert raised.value.transient is True
    assert raised.value.status is None
    assert raised.value.__cause__ is failure


# --- Posting a message ---------------------------------------------------------------------------

def test_message_is_posted_as_the_assistant_with_its_media_and_attributes():
    backend, twilio = backend_answering(message(MESSAGE_SID))

    assert send_message(backend) == MESSAGE_SID

    assert twilio.calls == [("POST", f"{API}/Conversations/{GROUP_SID}/Messages")]
    sent = twilio.requests[0].data
    assert sent["Author"] == "ASSISTANT"
    assert sent["Body"] == "Is early check-in possible?"
    assert sent["MediaSid"] == MEDIA_SID
    assert json.loads(sent["Attributes"]) == {"forwarded_from": MESSAGE_SID}


def test_text_message_sends_no_media_and_photo_sends_no_body():
    backend, twilio = backend_answering(message(MESSAGE_SID), message(MESSAGE_SID))

    send_message(backend, media_sid="")
    send_message(backend, body="")

    text, photo = (r.data for r in twilio.requests)
    assert "MediaSid" not in text and text["Body"] == "Is early check-in possible?"
    assert "Body" not in photo and photo["MediaSid"] == MEDIA_SID


@pytest.mark.parametrize("reply, status, code, transient", [
    (twilio_error(400, 21610, "Attempt to send to unsubscribed recipient"), 400, 21610, False),
    (twilio_error(404, 20404, f"The requested resource /Conversations/{GROUP_SID} was not found"),
     404, 20404, False),
    (twilio_error(429, 20429, "Too Many Requests"), 429, 20429, True),
    (twilio_error(500, 20500, "Internal Server Error"), 500, 20500, True),
    (requests.exceptions.ReadTimeout("Read timed out."), None, None, True),
], ids=["opted-out", "conversation-gone", "429", "500", "timeout"])
def test_message_failures_say_whether_to_retry(reply, status, code, transient):
    backend, twilio = backend_answering(reply)

    with pytest.raises(ApiError) as raised:
        send_message(backend)

    assert (raised.value.status, raised.value.code, raised.value.transient) == (status, code, transient)
    assert len(twilio.requests) == 1


def test_conflict_on_a_message_is_not_mistaken_for_an_existing_group_chat():
    backend, twilio = backend_answering(
        twilio_error(409, 50437, f"Participant already exists in Conversation {EXISTING_SID}"))

    with pytest.raises(ApiError) as raised:
        send_message(backend)

    assert (raised.value.status, raised.value.code) == (409, 50437)
    assert len(twilio.requests) == 1


def test_a_conversations_service_is_read_from_the_conversation():
    backend, twilio = backend_answering((200, conversation(EXISTING_SID)[1]))

    service = backend.conversation_service_sid(conversation_sid=EXISTING_SID)

    assert service == "IS0123456789abcdef0123456789abcdef"
    assert twilio.calls == [("GET", f"{API}/Conversations/{EXISTING_SID}")]


@pytest.mark.parametrize("reply, status, transient", [
    (twilio_error(404, 20404, f"The requested resource /Conversations/{EXISTING_SID} was not found"),
     404, False),
    (twilio_error(401, 20003, "Authenticate"), 401, False),
    (twilio_error(429, 20429, "Too Many Requests"), 429, True),
    (twilio_error(503, 20503, "Service Unavailable"), 503, True),
    (requests.exceptions.ConnectTimeout("Connect timed out."), None, True),
], ids=["gone", "credentials", "429", "503", "timeout"])
def test_a_failed_service_lookup_says_whether_to_retry(reply, status, transient):
    backend, _ = backend_answering(reply)

    with pytest.raises(ApiError) as raised:
        backend.conversation_service_sid(conversation_sid=EXISTING_SID)

    assert (raised.value.status, raised.value.transient) == (status, transient)


# --- The client from settings --------------------------------------------------------------------

@pytest.fixture
def sdk_settings(settings):
    def configure(**values: Any) -> None:
        settings.TWILIO_CONVLINK = {**settings.TWILIO_CONVLINK,
                                    "API_BACKEND": "django_twilio_convlink.api.SdkBackend",
                                    "ACCOUNT_SID": ACCOUNT_SID, "AUTH_TOKEN": AUTH_TOKEN, **values}
    return configure


def test_client_authenticates_with_the_account_sid_and_auth_token(sdk_settings):
    sdk_settings(API_TIMEOUT=4)

    client = build_client()

    assert (client.username, client.password, client.account_sid) == (ACCOUNT_SID, AUTH_TOKEN, ACCOUNT_SID)
    assert client.http_client.timeout == 4


def test_client_authenticates_with_an_api_key_when_one_is_set(sdk_settings):
    sdk_settings(API_KEY_SID="SK0123456789abcdef0123456789abcdef", API_KEY_SECRET="key-secret")

    client = build_client()

    assert (client.username, client.password) == ("SK0123456789abcdef0123456789abcdef", "key-secret")
    assert client.account_sid == ACCOUNT_SID


def test_missing_account_sid_is_a_permanent_error_at_the_first_call(sdk_settings):
    sdk_settings(ACCOUNT_SID="")
    backend = get_api_backend()  # no client yet, so no error yet

    with pytest.raises(ApiError) as raised:
        create_group_chat(backend)

    assert raised.value.transient is False
    assert "ACCOUNT_SID" in str(raised.value)
    with pytest.raises(ApiError):
        build_client()


def test_client_is_built_on_first_use_only(sdk_settings):
    sdk_settings()
    backend = get_api_backend()

    assert isinstance(backend, SdkBackend)
    assert SdkBackend()._client is None
    assert backend._client is None
    client = backend.client
    assert isinstance(client, Client)
    assert backend.client is client


def test_new_credentials_in_settings_reach_a_new_client(sdk_settings):
    sdk_settings()
    assert get_api_backend().client.username == ACCOUNT_SID

    sdk_settings(API_KEY_SID="SK0123456789abcdef0123456789abcdef", API_KEY_SECRET="key-secret")

    assert get_api_backend().client.username == "SK0123456789abcdef0123456789abcdef"


class RecordingAdapter(requests.adapters.BaseAdapter):
    """Where requests' session would open a socket: records the prepared request."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[tuple[str, Any]] = []

    def send(self, request, timeout=None, **kwargs):
        self.sent.append((request.url, timeout))
        response = requests.Response()
        response.status_code, response._content = 201, json.dumps(conversation(GROUP_SID)[1]).encode()
        return response

    def close(self) -> None:
        pass


def test_api_base_url_sends_conversations_calls_there_and_nothing_else(sdk_settings):
    sdk_settings(API_BASE_URL="http://twilio-mock.test:4010/", API_TIMEOUT=3)
    client = build_client()
    assert isinstance(client.http_client, RedirectingHttpClient)
    adapter = RecordingAdapter()
    client.http_client.session.mount("http://", adapter)
    client.http_client.session.mount("https://", adapter)

    client.http_client.request("POST", f"{API}/ConversationWithParticipants", data={"FriendlyName": "x"})
    client.http_client.request("GET", f"https://api.twilio.com/2010-04-01/Accounts/{ACCOUNT_SID}.json")

    assert adapter.sent == [
        ("http://twilio-mock.test:4010/v1/ConversationWithParticipants", 3),
        (f"https://api.twilio.com/2010-04-01/Accounts/{ACCOUNT_SID}.json", 3),
    ]


def test_rfc9457_problem_answers_are_classified_like_the_others():
    """twilio 9.13 raises TwilioServiceException for problem+json bodies."""
    problem = (400, {"type": "https://www.twilio.com/docs/errors/21610", "title": "Opted out",
                     "status": 400, "code": 21610, "detail": "The recipient replied STOP"})
    backend, _ = backend_answering(problem)

    with pytest.raises(ApiError) as raised:
        send_message(backend)

    assert (raised.value.code, raised.value.transient) == (21610, False)


def test_a_bug_is_not_retried_as_if_twilio_were_down():
    error = to_api_error(TypeError("Object of type date is not JSON serializable"))
    assert not error.transient


def test_empty_secret_does_not_fall_back_to_the_environment(sdk_settings, monkeypatch):
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", "from-the-environment")
    sdk_settings(AUTH_TOKEN="")
    with pytest.raises(ApiError, match="AUTH_TOKEN"):
        build_client()


def test_region_in_the_environment_does_not_bypass_api_base_url(sdk_settings, monkeypatch):
    monkeypatch.setenv("TWILIO_REGION", "ie1")
    monkeypatch.setenv("TWILIO_EDGE", "dublin")
    sdk_settings(API_BASE_URL="http://127.0.0.1:9")
    client = build_client()
    assert client.get_hostname("https://conversations.twilio.com/v1/Conversations").startswith(
        "https://conversations.twilio.com")


def test_earlier_copies_are_found_by_their_forwarded_from_attribute():
    source = "IM" + "1" * 32
    listing = (200, {
        "messages": [
            {"sid": "IM" + "a" * 32, "attributes": json.dumps({"forwarded_from": source, "part": 1})},
            {"sid": "IM" + "b" * 32, "attributes": json.dumps({"forwarded_from": "IM" + "9" * 32})},
            {"sid": "IM" + "c" * 32, "attributes": "not json"},
            {"sid": "IM" + "d" * 32, "attributes": json.dumps({"forwarded_from": source})},
        ],
        "meta": {"page": 0, "page_size": 100, "first_page_url": "", "previous_page_url": None,
                 "url": "", "next_page_url": None, "key": "messages"},
    })
    backend, twilio = backend_answering(listing)

    found = backend.find_forwards(conversation_sid=GROUP_SID, source_sid=source)

    assert found == {0: "IM" + "d" * 32, 1: "IM" + "a" * 32}
    method, url = twilio.calls[0]
    assert (method, url) == ("GET", f"{API}/Conversations/{GROUP_SID}/Messages")
