"""A stateful stand-in for the read side of Twilio's Conversations API on loopback, for
the history sync's tests (the SDK is pointed at it with API_BASE_URL).

It holds an account: conversations, their participants and messages. It answers
``GET /v1/Conversations`` (StartDate, EndDate, State, PageSize), ``/v1/Conversations/{sid}``,
``.../Participants``, ``.../Messages`` (Order, PageSize) and
``/v1/ParticipantConversations`` (Address), in Twilio's JSON, a page at a time with a
``meta.next_page_url`` chain on Twilio's own host (the SDK follows it, and
API_BASE_URL's redirect brings it back here). ``throttle`` answers 429 (code 20429)
to the next requests of a path prefix. Every request is recorded; any POST, PUT or
DELETE is recorded and refused, so a test can assert the sync wrote nothing.
"""

from __future__ import annotations

import base64
import datetime
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from tests.fake_twilio import send_json

TWILIO = "https://conversations.twilio.com"
ACCOUNT = "AC0123456789abcdef0123456789abcdef"
SERVICE = "IS88888888888888888888888888888888"
TWILIO_PHONE = "+13153524379"


def _when(moment: datetime.datetime) -> str:
    return moment.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Message:
    sid: str
    index: int
    author: str
    body: str
    date_created: datetime.datetime
    media: list[dict[str, Any]] | None = None
    attributes: str = "{}"
    delivery: dict[str, Any] | None = None
    participant_sid: str | None = None

    def json(self, conversation_sid: str) -> dict[str, Any]:
        return {"account_sid": ACCOUNT, "conversation_sid": conversation_sid, "sid": self.sid,
                "index": self.index, "author": self.author, "body": self.body, "media": self.media,
                "attributes": self.attributes, "participant_sid": self.participant_sid,
                "date_created": _when(self.date_created), "date_updated": _when(self.date_created),
                "url": f"{TWILIO}/v1/Conversations/{conversation_sid}/Messages/{self.sid}",
                "delivery": self.delivery, "links": {}, "content_sid": None}


@dataclass
class Conversation:
    sid: str
    date_created: datetime.datetime
    addresses: list[str] = field(default_factory=list)
    messages: list[Message] = field(default_factory=list)
    friendly_name: str = ""
    unique_name: str | None = None
    state: str = "active"
    attributes: str = "{}"

    def json(self) -> dict[str, Any]:
        return {"account_sid": ACCOUNT, "chat_service_sid": SERVICE, "messaging_service_sid": None,
                "sid": self.sid, "friendly_name": self.friendly_name or None, "unique_name": self.unique_name,
                "attributes": self.attributes, "state": self.state, "date_created": _when(self.date_created),
                "date_updated": _when(self.date_created), "timers": {}, "url": f"{TWILIO}/v1/Conversations/"
                f"{self.sid}", "links": {}, "bindings": None}

    def participants_json(self) -> list[dict[str, Any]]:
        return [{"account_sid": ACCOUNT, "conversation_sid": self.sid, "sid": f"MB{n:032x}",
                 "identity": None, "attributes": "{}", "role_sid": None,
                 "messaging_binding": {"type": "sms", "address": address, "proxy_address": TWILIO_PHONE},
                 "date_created": _when(self.date_created), "date_updated": _when(self.date_created),
                 "url": "", "last_read_message_index": None, "last_read_timestamp": None}
                for n, address in enumerate(self.addresses)]


@dataclass
class Seen:
    method: str
    path: str
    query: dict[str, str]


@dataclass
class TwilioAccount:
    username: str
    password: str
    conversations: dict[str, Conversation] = field(default_factory=dict)
    seen: list[Seen] = field(default_factory=list)
    throttled: dict[str, int] = field(default_factory=dict)

    def add(self, conversation: Conversation) -> Conversation:
        self.conversations[conversation.sid] = conversation
        return conversation

    def throttle(self, path_prefix: str, times: int = 1) -> None:
        """Answer 429 to the next ``times`` requests whose path starts with ``path_prefix``."""
        self.throttled[path_prefix] = times

    def writes(self) -> list[Seen]:
        return [request for request in self.seen if request.method != "GET"]

    def gets(self, path_prefix: str = "") -> list[Seen]:
        return [request for request in self.seen if request.method == "GET"
                and request.path.startswith(path_prefix)]

    def start(self) -> TwilioAccount:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    # The answers

    def answer(self, path: str, query: dict[str, str]) -> tuple[int, Any]:
        parts = path.strip("/").split("/")
        if parts[:2] == ["v1", "Conversations"] and len(parts) == 2:
            listed = sorted(self.conversations.values(), key=lambda c: c.date_created)
            if query.get("StartDate"):
                since = datetime.datetime.fromisoformat(query["StartDate"][:10]).replace(tzinfo=datetime.UTC)
                listed = [c for c in listed if c.date_created >= since]
            if query.get("EndDate"):
                until = datetime.datetime.fromisoformat(query["EndDate"][:10]).replace(tzinfo=datetime.UTC)
                listed = [c for c in listed if c.date_created < until]
            if query.get("State"):
                listed = [c for c in listed if c.state == query["State"]]
            return self.page(path, query, "conversations", [c.json() for c in listed])
        if parts[:2] == ["v1", "ParticipantConversations"]:
            address = query.get("Address", "")
            found = [{"account_sid": ACCOUNT, "chat_service_sid": SERVICE, "conversation_sid": c.sid,
                      "participant_sid": None, "participant_messaging_binding": {"address": address},
                      "conversation_state": c.state, "conversation_unique_name": c.unique_name,
                      "conversation_friendly_name": c.friendly_name, "links": {}}
                     for c in self.conversations.values() if address in c.addresses]
            return self.page(path, query, "conversations", found, largest=50)
        if parts[:2] == ["v1", "Conversations"] and len(parts) >= 3:
            conversation = self.conversations.get(parts[2])
            if conversation is None:
                return 404, {"code": 20404, "message": "The requested resource was not found", "status": 404}
            if len(parts) == 3:
                return 200, conversation.json()
            if parts[3] == "Participants":
                return self.page(path, query, "participants", conversation.participants_json())
            if parts[3] == "Messages":
                messages = sorted(conversation.messages, key=lambda m: m.index,
                                  reverse=query.get("Order") == "desc")
                return self.page(path, query, "messages", messages,
                                 lambda m: m.json(conversation.sid))
        return 404, {"code": 20404, "message": f"No such resource {path}", "status": 404}

    @staticmethod
    def page(path: str, query: dict[str, str], key: str, items: list[Any],
             as_json: Callable[[Any], Any] = lambda item: item, largest: int = 100) -> tuple[int, Any]:
        # Only the page's items are turned into JSON: the stand-in runs in the process
        # whose memory the history benchmark measures.
        size = min(int(query.get("PageSize", 50)), largest)
        number = int(query.get("Page", 0))
        chunk = [as_json(item) for item in items[number * size:(number + 1) * size]]
        base = {k: v for k, v in query.items() if k not in ("Page", "PageToken")}

        def url(page: int) -> str:
            query = urlencode({**base, "PageSize": size, "Page": page, "PageToken": f"PT{page}"})
            return f"{TWILIO}{path}?{query}"

        more = (number + 1) * size < len(items)
        return 200, {key: chunk, "meta": {
            "page": number, "page_size": size, "first_page_url": url(0), "url": url(number), "key": key,
            "previous_page_url": url(number - 1) if number else None,
            "next_page_url": url(number + 1) if more else None}}


def _handler(account: TwilioAccount) -> type[BaseHTTPRequestHandler]:
    expected = "Basic " + base64.b64encode(f"{account.username}:{account.password}".encode()).decode()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def reply(self, status: int, body: Any) -> None:
            send_json(self, status, body)

        def do_GET(self) -> None:
            split = urlsplit(self.path)
            query = {k: v[0] for k, v in parse_qs(split.query).items()}
            account.seen.append(Seen("GET", split.path, query))
            if self.headers.get("Authorization") != expected:
                return self.reply(401, {"code": 20003, "message": "Authenticate", "status": 401})
            for prefix, times in list(account.throttled.items()):
                if times and split.path.startswith(prefix):
                    account.throttled[prefix] = times - 1
                    return self.reply(429, {"code": 20429, "message": "Too Many Requests", "status": 429})
            self.reply(*account.answer(split.path, query))

        def refuse(self) -> None:
            split = urlsplit(self.path)
            account.seen.append(Seen(self.command, split.path, {}))
            self.reply(405, {"code": 20004, "message": "Method not allowed", "status": 405})

        do_POST = do_PUT = do_DELETE = refuse

    return Handler
