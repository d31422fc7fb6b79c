"""Where Twilio REST calls go: one small interface, three backends, chosen in settings
the way EMAIL_BACKEND chooses where mail goes.

* ``SdkBackend`` (default): the official ``twilio`` SDK, client built lazily from
  settings on first use, never at import time.
* ``ConsoleBackend``: logs each call and invents SIDs; for development without an
  account (the example project's default).
* ``LocmemBackend``: records calls in ``api.outbox`` for a site's own tests, as
  ``django.core.mail.outbox`` does for mail.

Backends speak in the app's terms (create the group chat, send a message) and turn
every Twilio failure into ``ApiError`` with a ``transient`` verdict, so the domain code
never handles SDK exceptions or HTTP status codes itself.
"""

from __future__ import annotations

import json
import logging
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import requests
from django.core.signals import setting_changed
from django.dispatch import receiver
from django.utils.module_loading import import_string
from twilio.base import values
from twilio.base.exceptions import TwilioRestException
from twilio.http.http_client import TwilioHttpClient
from twilio.rest import Client

from .conf import SETTINGS_NAME, convlink_settings
from .exceptions import ApiError as ApiError  # its documented import path

try:  # twilio 9.13+
    from twilio.base.exceptions import TwilioServiceException
except ImportError:
    TwilioServiceException = None

logger = logging.getLogger(__name__)

TWILIO_CONVERSATIONS_URL = "https://conversations.twilio.com"
# "Participant ... already exists in Conversation CHxxxx": the SID Twilio names.
_EXISTING_SID = re.compile(r"\b(CH[0-9a-fA-F]{32})\b")

ALREADY_IN_A_CONVERSATION = 50416
ALREADY_A_PARTICIPANT = 50437
UNIQUE_NAME_TAKEN = 50353
TOO_MANY_PARTICIPANTS = 50436
OPTED_OUT = 21610


@dataclass
class Participant:
    """One member of a group MMS: an SMS address, or a chat identity projected onto
    a Twilio number (the assistant)."""

    address: str = ""
    identity: str = ""
    projected_address: str = ""

    def as_twilio_json(self) -> str:
        binding = {"address": self.address} if self.address else {"projected_address": self.projected_address}
        value: dict[str, Any] = {"messaging_binding": binding}
        if self.identity:
            value["identity"] = self.identity
        return json.dumps(value)


@dataclass
class ApiCall:
    """What LocmemBackend records."""

    method: str
    kwargs: dict[str, Any]
    result: str = ""


class BaseApiBackend:
    def create_group_chat(self, *, unique_name: str, friendly_name: str, attributes: dict[str, Any],
                          messaging_service_sid: str, participants: list[Participant]) -> str:
        """Create the group conversation with its participants; return its SID.

        Idempotent by ``unique_name``: when the conversation (or its participants) already
        exists, the existing conversation's SID is returned instead of an error.
        """
        raise NotImplementedError

    def send_message(self, *, conversation_sid: str, author: str, body: str, media_sid: str,
                     attributes: dict[str, Any]) -> str:
        """Post a message into a conversation; return its SID (IM...)."""
        raise NotImplementedError

    def find_forwards(self, *, conversation_sid: str, source_sid: str) -> dict[int, str]:
        """SIDs of the copies of ``source_sid`` already in the conversation, by part
        (``forwarded_from`` and ``part`` in their attributes): what an earlier run
        posted although its answer was lost."""
        raise NotImplementedError

    def conversation_service_sid(self, *, conversation_sid: str) -> str:
        """The conversation's ChatServiceSid (IS...): where its media live, for a
        conversation whose webhooks did not say."""
        raise NotImplementedError


class SdkBackend(BaseApiBackend):
    """The real thing, through the official SDK."""

    def __init__(self) -> None:
        self._client = None

    @property
    def client(self) -> Client:
        if self._client is None:
            self._client = build_client()
        return self._client

    def create_group_chat(self, *, unique_name: str, friendly_name: str, attributes: dict[str, Any],
                          messaging_service_sid: str, participants: list[Participant]) -> str:
        try:
            created = self.client.conversations.v1.conversation_with_participants.create(
                friendly_name=friendly_name,
                unique_name=unique_name,
                attributes=json.dumps(attributes),
                messaging_service_sid=messaging_service_sid or values.unset,
                participant=[p.as_twilio_json() for p in participants],
            )
            return created.sid
        except Exception as exc:
            error = to_api_error(exc)
            if error.code in (ALREADY_IN_A_CONVERSATION, ALREADY_A_PARTICIPANT):
                # The group exists (an earlier attempt whose answer was lost, or a
                # concurrent one): Twilio names it in the message. Taken only if it is
                # ours by unique name; a member sitting in some other conversation is
                # not our group chat.
                match = _EXISTING_SID.search(error.message)
                if match and self._unique_name_of(match.group(1)) == unique_name:
                    return match.group(1)
            if error.status == 409 or error.code in (UNIQUE_NAME_TAKEN, ALREADY_IN_A_CONVERSATION,
                                                     ALREADY_A_PARTICIPANT):
                return self._existing_by_unique_name(unique_name, error)
            raise error from exc

    def _unique_name_of(self, conversation_sid: str) -> str | None:
        try:
            return self.client.conversations.v1.conversations(conversation_sid).fetch().unique_name
        except Exception as exc:
            error = to_api_error(exc)
            if error.status == 404:
                return None
            raise error from exc

    def _existing_by_unique_name(self, unique_name: str, original: ApiError) -> str:
        try:
            return self.client.conversations.v1.conversations(unique_name).fetch().sid
        except Exception as exc:
            error = to_api_error(exc)
            if error.status == 404:
                raise original from exc  # not ours after all: report what Twilio said first
            raise error from exc

    def send_message(self, *, conversation_sid: str, author: str, body: str, media_sid: str,
                     attributes: dict[str, Any]) -> str:
        try:
            message = self.client.conversations.v1.conversations(conversation_sid).messages.create(
                author=author,
                body=body or values.unset,
                media_sid=media_sid or values.unset,
                attributes=json.dumps(attributes),
            )
            return message.sid
        except Exception as exc:
            raise to_api_error(exc) from exc

    # Copies are looked for among the newest messages only: a retry follows its
    # failed attempt within hours, and a busy group chat is not thousands deep by then.
    FORWARD_SEARCH_DEPTH = 100

    def find_forwards(self, *, conversation_sid: str, source_sid: str) -> dict[int, str]:
        try:
            messages = self.client.conversations.v1.conversations(conversation_sid).messages.list(
                order="desc", limit=self.FORWARD_SEARCH_DEPTH)
        except Exception as exc:
            raise to_api_error(exc) from exc
        return forwards_in(((m.sid, m.attributes) for m in messages if m.sid), source_sid)

    def conversation_service_sid(self, *, conversation_sid: str) -> str:
        try:
            return self.client.conversations.v1.conversations(conversation_sid).fetch().chat_service_sid or ""
        except Exception as exc:
            raise to_api_error(exc) from exc


def forwards_in(messages: Iterable[tuple[str, Any]], source_sid: str) -> dict[int, str]:
    """{part: SID} of the messages whose attributes say they copy ``source_sid``."""
    found: dict[int, str] = {}
    for sid, raw in messages:
        try:
            attributes = json.loads(raw) if isinstance(raw, str) else (raw or {})
        except ValueError:
            continue
        if isinstance(attributes, dict) and attributes.get("forwarded_from") == source_sid:
            part = attributes.get("part", 0)
            if isinstance(part, int):
                found.setdefault(part, sid)
    return found


def to_api_error(exc: Exception) -> ApiError:
    """Classify an SDK or network exception: 429, 5xx and network failures are
    transient; any other answer, and any other exception (a bug: retrying cannot fix
    it), is permanent."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, TwilioRestException):
        return _http_error(str(exc.msg), exc.code, exc.status)
    if TwilioServiceException is not None and isinstance(exc, TwilioServiceException):
        # twilio 9.13+ raises this for RFC 9457 problem bodies instead.
        return _http_error(str(getattr(exc, "detail", None) or getattr(exc, "title", exc)),
                           getattr(exc, "code", None), getattr(exc, "status", None))
    if isinstance(exc, requests.RequestException | OSError):
        # Timeouts, refused or reset connections, DNS failures: worth retrying.
        return ApiError(f"{type(exc).__name__}: {exc}", transient=True)
    return ApiError(f"{type(exc).__name__}: {exc}", transient=False)


def _http_error(message: str, code: int | None, status: int | None) -> ApiError:
    transient = status is None or status == 429 or status >= 500
    return ApiError(message, code=code, status=status, transient=transient)


def build_client() -> Client:
    """The SDK client from settings: ACCOUNT_SID with AUTH_TOKEN, or an API key SID and
    secret with ACCOUNT_SID. API_BASE_URL sends Conversations calls elsewhere (a mock)."""
    s = convlink_settings
    if not s.ACCOUNT_SID:
        raise ApiError(f'{SETTINGS_NAME}["ACCOUNT_SID"] is not set.', transient=False)
    if s.API_KEY_SID:
        username, password, secret = s.API_KEY_SID, s.API_KEY_SECRET, "API_KEY_SECRET"
    else:
        username, password, secret = s.ACCOUNT_SID, s.AUTH_TOKEN, "AUTH_TOKEN"
    if not password:
        # The SDK would silently fall back to the TWILIO_AUTH_TOKEN environment variable.
        raise ApiError(f'{SETTINGS_NAME}["{secret}"] is not set.', transient=False)
    http_client = RedirectingHttpClient(s.API_BASE_URL, timeout=s.API_TIMEOUT) if s.API_BASE_URL \
        else TwilioHttpClient(timeout=s.API_TIMEOUT)
    client = Client(username, password, account_sid=s.ACCOUNT_SID, http_client=http_client)
    if s.API_BASE_URL:
        # TWILIO_REGION / TWILIO_EDGE in the environment make the SDK rewrite the host
        # (conversations.ie1.twilio.com), which would slip past the redirect.
        client.region = client.edge = None
    return client


class RedirectingHttpClient(TwilioHttpClient):
    """Sends the Conversations calls to API_BASE_URL, through the SDK's public
    ``http_client`` hook; everything else (auth, encoding, errors) stays the SDK's."""

    def __init__(self, base_url: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.base_url = base_url.rstrip("/")

    def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        if url.startswith(TWILIO_CONVERSATIONS_URL):
            url = self.base_url + url[len(TWILIO_CONVERSATIONS_URL):]
        return super().request(method, url, *args, **kwargs)


class ConsoleBackend(BaseApiBackend):
    """Logs the calls instead of making them; invents SIDs."""

    def create_group_chat(self, **kwargs: Any) -> str:
        sid = "CH" + secrets.token_hex(16)
        logger.warning("Twilio (console): create group chat %s -> %s", _describe(kwargs), sid)
        return sid

    def send_message(self, **kwargs: Any) -> str:
        sid = "IM" + secrets.token_hex(16)
        logger.warning("Twilio (console): send message %s -> %s", _describe(kwargs), sid)
        return sid

    def find_forwards(self, **kwargs: Any) -> dict[int, str]:
        return {}

    def conversation_service_sid(self, **kwargs: Any) -> str:
        logger.warning("Twilio (console): fetch conversation %s -> no service SID",
                       kwargs["conversation_sid"])
        return ""


def _describe(kwargs: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in kwargs.items())


outbox: list[ApiCall] = []
_outbox_lock = threading.Lock()


@dataclass
class _LocmemState:
    group_chats: dict[str, str] = field(default_factory=dict)
    # conversation SID -> [(message SID, attributes)]
    messages: dict[str, list[tuple[str, dict[str, Any]]]] = field(default_factory=dict)
    # conversation SID -> ChatServiceSid, for conversation_service_sid
    services: dict[str, str] = field(default_factory=dict)


class LocmemBackend(BaseApiBackend):
    """Records every call in ``django_twilio_convlink.api.outbox`` and behaves like
    Twilio for what the app relies on: a repeated group chat creation gives the same
    SID, and posted messages can be found again by their attributes.

    For failure tests: ``fail_with`` makes the next calls raise; ``fail_on["name"]``
    the next calls of one method; ``lose_answer_on["name"]`` performs the next call
    and then raises (a timeout after Twilio did the work). ``reset()`` clears all.
    """

    state = _LocmemState()
    fail_with: list[ApiError] = []
    fail_on: dict[str, list[ApiError]] = {}
    lose_answer_on: dict[str, list[ApiError]] = {}
    delay: float = 0.0

    def _record(self, method: str, kwargs: dict[str, Any], perform: Callable[[], str]) -> str:
        if LocmemBackend.delay:
            time.sleep(LocmemBackend.delay)
        with _outbox_lock:
            call = ApiCall(method, kwargs)
            outbox.append(call)
            if LocmemBackend.fail_with:
                raise LocmemBackend.fail_with.pop(0)
            if LocmemBackend.fail_on.get(method):
                raise LocmemBackend.fail_on[method].pop(0)
            call.result = perform()
            if LocmemBackend.lose_answer_on.get(method):
                raise LocmemBackend.lose_answer_on[method].pop(0)
            return call.result

    def create_group_chat(self, **kwargs: Any) -> str:
        chats = LocmemBackend.state.group_chats
        return self._record("create_group_chat", kwargs,
                            lambda: chats.setdefault(kwargs["unique_name"], "CH" + secrets.token_hex(16)))

    def send_message(self, **kwargs: Any) -> str:
        def perform() -> str:
            sid = "IM" + secrets.token_hex(16)
            LocmemBackend.state.messages.setdefault(kwargs["conversation_sid"], []).append(
                (sid, kwargs["attributes"]))
            return sid
        return self._record("send_message", kwargs, perform)

    def find_forwards(self, **kwargs: Any) -> dict[int, str]:
        self._record("find_forwards", kwargs, lambda: "")
        stored = LocmemBackend.state.messages.get(kwargs["conversation_sid"], [])
        return forwards_in(stored, kwargs["source_sid"])

    def conversation_service_sid(self, **kwargs: Any) -> str:
        services = LocmemBackend.state.services
        return self._record("conversation_service_sid", kwargs,
                            lambda: services.get(kwargs["conversation_sid"], ""))

    @classmethod
    def reset(cls) -> None:
        with _outbox_lock:
            outbox.clear()
            cls.state = _LocmemState()
            cls.fail_with = []
            cls.fail_on = {}
            cls.lose_answer_on = {}
            cls.delay = 0.0


@lru_cache(maxsize=4)
def _backend(path: str) -> BaseApiBackend:
    return import_string(path)()


def get_api_backend() -> BaseApiBackend:
    """The configured backend (API_BACKEND), one instance per process."""
    return _backend(convlink_settings.API_BACKEND)


def calls_twilio() -> bool:
    """Whether API_BACKEND calls Twilio: any backend but the ones that print the calls
    (ConsoleBackend, development) or keep them (LocmemBackend, tests), a site's own
    included. False too for a path that does not import (check E011)."""
    try:
        backend = import_string(convlink_settings.get("API_BACKEND", ""))
    except ImportError:
        return False
    return not (isinstance(backend, type) and issubclass(backend, ConsoleBackend | LocmemBackend))


@receiver(setting_changed)
def _drop_clients(*, setting: str, **kwargs: Any) -> None:
    # New credentials or API_BASE_URL in a test must reach a new SDK client.
    if setting == SETTINGS_NAME:
        _backend.cache_clear()
