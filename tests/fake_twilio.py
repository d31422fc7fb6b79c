"""A fake Twilio Conversations API on loopback, shared by every process of a test (the
load test's gunicorn workers, the RQ test's worker): ConversationWithParticipants with
unique names kept unique (a second creation is a 409 with Twilio's error 50353), a
conversation fetched by SID or unique name, and messages posted and listed. It counts
creations, conflicts and messages per conversation, so a test can assert that each
group chat was made once and each copy posted once.
"""

from __future__ import annotations

import base64
import json
import re
import threading
import time
from collections import Counter, defaultdict
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

from django.conf import settings

from django_twilio_convlink.group_chat import UNIQUE_NAME_PREFIX
from tests.helpers import sid

ACCOUNT_SID = "AC" + "0123456789abcdef" * 2  # the one tests/settings_load.py gives the SDK

CONVERSATION = re.compile(r"^/v1/Conversations/([^/]+)$")
MESSAGES = re.compile(r"^/v1/Conversations/(CH[0-9a-f]{32})/Messages$")


class FakeTwilio(ThreadingHTTPServer):
    """ConversationWithParticipants (unique names unique: a second creation is a 409 with
    Twilio's error 50353), conversation fetch by SID or unique name, and message posts.
    Counts successful creations and conflicts per unique name, messages per conversation."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), FakeTwilioHandler)
        self.lock = threading.Lock()
        self.conversations: dict[str, dict] = {}
        self.by_unique_name: dict[str, str] = {}
        self.created: Counter[str] = Counter()
        self.conflicts: Counter[str] = Counter()
        self.messages: defaultdict[str, list[dict]] = defaultdict(list)
        self.posted_at: dict[str, float] = {}  # when each body was posted (time.time())
        self.fetches = 0
        self.listings = 0
        self.unexpected: list[str] = []
        # Seconds each answer waits, as Twilio's API over the internet does (a benchmark
        # of the webhook with the Twilio calls in the request sets it).
        self.latency = 0.0
        self.auth = "Basic " + base64.b64encode(f"{ACCOUNT_SID}:{settings.AUTH_TOKEN}".encode()).decode()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def create(self, form: dict[str, list[str]]) -> tuple[int, dict]:
        unique_name = form.get("UniqueName", [""])[0]
        if not unique_name.startswith(UNIQUE_NAME_PREFIX) or len(form.get("Participant", [])) != 3:
            return self.unexpect(f"bad ConversationWithParticipants {form}")
        with self.lock:
            if unique_name in self.by_unique_name:
                self.conflicts[unique_name] += 1
                return 409, {"code": 50353, "status": 409,
                             "message": "Conversation with provided unique name already exists",
                             "more_info": "https://www.twilio.com/docs/errors/50353"}
            conversation = conversation_json(sid("CH"), unique_name, form)
            self.conversations[conversation["sid"]] = conversation
            self.by_unique_name[unique_name] = conversation["sid"]
            self.created[unique_name] += 1
        return 201, conversation

    def fetch(self, key: str) -> tuple[int, dict]:
        with self.lock:
            self.fetches += 1
            conversation = self.conversations.get(self.by_unique_name.get(key, key))
        if conversation is None:
            return not_found(key)
        return 200, conversation

    def list_messages(self, conversation_sid: str, query: dict[str, list[str]]) -> tuple[int, dict]:
        """One page, newest first: all the app asks for (find_forwards, after a failed run)."""
        with self.lock:
            self.listings += 1
            if conversation_sid not in self.conversations:
                return not_found(conversation_sid)
            messages = self.messages[conversation_sid][::-1]
        size = int(query.get("PageSize", ["50"])[0])
        url = f"https://conversations.twilio.com/v1/Conversations/{conversation_sid}/Messages"
        return 200, {"messages": messages[:size], "meta": {
            "page": 0, "page_size": size, "first_page_url": url, "previous_page_url": None, "url": url,
            "next_page_url": None, "key": "messages"}}

    def post_message(self, conversation_sid: str, form: dict[str, list[str]]) -> tuple[int, dict]:
        with self.lock:
            if conversation_sid not in self.conversations:
                return self.unexpect(f"message into unknown conversation {conversation_sid}")
            messages = self.messages[conversation_sid]
            message = {
                "sid": sid("IM"), "account_sid": ACCOUNT_SID, "conversation_sid": conversation_sid,
                "index": len(messages), "author": form.get("Author", [""])[0],
                "body": form.get("Body", [""])[0], "attributes": form.get("Attributes", ["{}"])[0],
                "media": None, "participant_sid": None, "delivery": None, "content_sid": None,
                "date_created": "2026-11-20T13:42:18Z", "date_updated": "2026-11-20T13:42:18Z",
                "url": f"https://conversations.twilio.com/v1/Conversations/{conversation_sid}/Messages",
                "links": {},
            }
            messages.append(message)
            self.posted_at[message["body"]] = time.time()
        return 201, message

    def unexpect(self, what: str) -> tuple[int, dict]:
        with self.lock:
            self.unexpected.append(what)
        return 400, {"code": 20001, "status": 400, "message": what, "more_info": ""}


def not_found(key: str) -> tuple[int, dict]:
    return 404, {"code": 20404, "status": 404, "message": f"The requested resource {key} was not found",
                 "more_info": "https://www.twilio.com/docs/errors/20404"}


def conversation_json(conversation_sid: str, unique_name: str, form: dict[str, list[str]]) -> dict:
    url = f"https://conversations.twilio.com/v1/Conversations/{conversation_sid}"
    return {
        "sid": conversation_sid, "account_sid": ACCOUNT_SID,
        "chat_service_sid": "IS" + "8" * 32,
        "messaging_service_sid": form.get("MessagingServiceSid", ["MG" + "3" * 32])[0],
        "friendly_name": form.get("FriendlyName", [""])[0], "unique_name": unique_name,
        "attributes": form.get("Attributes", ["{}"])[0], "state": "active",
        "date_created": "2026-11-20T13:42:18Z", "date_updated": "2026-11-20T13:42:18Z",
        "timers": {}, "bindings": None, "url": url,
        "links": {"participants": f"{url}/Participants", "messages": f"{url}/Messages"},
    }


def send_json(handler: BaseHTTPRequestHandler, status: int, body: Any) -> None:
    """Answer ``handler``'s request with ``body`` as JSON, as Twilio's API does."""
    data = json.dumps(body).encode()
    handler.send_response(status)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(data)))
    handler.end_headers()
    handler.wfile.write(data)


class FakeTwilioHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # the SDK's requests session keeps its connection
    # Headers and body in one segment, sent at once: on a kept-alive connection Nagle's
    # algorithm would otherwise hold the body for the client's delayed ACK (40 ms a call).
    wbufsize = -1
    disable_nagle_algorithm = True
    server: FakeTwilio

    def do_GET(self) -> None:
        path, _, query = self.path.partition("?")
        if not self.authorized():
            self.answer(*self.server.unexpect(f"unauthorized GET {self.path}"))
        elif match := CONVERSATION.match(path):
            self.answer(*self.server.fetch(match.group(1)))
        elif match := MESSAGES.match(path):
            self.answer(*self.server.list_messages(match.group(1), parse_qs(query)))
        else:
            self.answer(*self.server.unexpect(f"GET {self.path}"))

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        form = parse_qs(self.rfile.read(length).decode(), keep_blank_values=True)
        if not self.authorized():
            self.answer(*self.server.unexpect(f"unauthorized POST {self.path}"))
        elif self.path == "/v1/ConversationWithParticipants":
            self.answer(*self.server.create(form))
        elif match := MESSAGES.match(self.path):
            self.answer(*self.server.post_message(match.group(1), form))
        else:
            self.answer(*self.server.unexpect(f"POST {self.path}"))

    def authorized(self) -> bool:
        return self.headers.get("Authorization") == self.server.auth

    def answer(self, status: int, body: dict) -> None:
        if self.server.latency:
            time.sleep(self.server.latency)
        send_json(self, status, body)

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - the base class's name
        pass


@contextmanager
def fake_twilio():
    server = FakeTwilio()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
