"""A stand-in for Twilio's Media Content Service on loopback, for the media tests.

Two HTTP servers on 127.0.0.1: ``mcs`` plays the media service (it checks HTTP Basic
auth and answers the JSON of ../shared/twilio-mcs-example.json, whose temporary link
points at the second server), ``cdn`` plays the CDN host of the temporary links.
Every request either server sees is recorded with its headers, so a test can assert
that no Authorization header ever reached the CDN.

Per media SID a test scripts the answers: ``mcs_script[sid]`` and ``cdn_script[sid]``
are lists of actions taken one per request, before the normal answer:
``("status", 404)``, ``("sleep", 3.0)``, ``("redirect", url)``, ``("body", bytes)``
(the CDN sends these bytes instead of the file's), ``("chunked", bytes)`` (the same,
chunked, with no Content-Length to go by), ``("declare", n)`` (the media service
declares n bytes; None: declares no size), ``("call", function)`` (calls
``function()`` in the server's thread, then answers normally: something the site does
while a download is under way; a function that uses the database closes its
connection).
"""

from __future__ import annotations

import base64
import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit


@dataclass
class MediaFile:
    content: bytes
    content_type: str = "image/jpeg"
    filename: str = "photo.jpg"
    service_sid: str = "IS88888888888888888888888888888888"


@dataclass
class Seen:
    server: str  # "mcs" or "cdn"
    path: str
    headers: dict[str, str]


@dataclass
class MediaService:
    username: str
    password: str
    files: dict[str, MediaFile] = field(default_factory=dict)
    mcs_script: dict[str, list[tuple[str, Any]]] = field(default_factory=dict)
    cdn_script: dict[str, list[tuple[str, Any]]] = field(default_factory=dict)
    seen: list[Seen] = field(default_factory=list)

    def start(self) -> MediaService:
        self._mcs = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self, "mcs"))
        self._cdn = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self, "cdn"))
        for server in (self._mcs, self._cdn):
            server.daemon_threads = True
            # A short poll: stop() waits for it, once per server and test.
            threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def stop(self) -> None:
        for server in (self._mcs, self._cdn):
            server.shutdown()
            server.server_close()

    @property
    def mcs_url(self) -> str:
        return f"http://127.0.0.1:{self._mcs.server_address[1]}"

    @property
    def cdn_url(self) -> str:
        return f"http://127.0.0.1:{self._cdn.server_address[1]}"

    def add(self, media_sid: str, content: bytes, **kwargs: Any) -> MediaFile:
        self.files[media_sid] = MediaFile(content, **kwargs)
        return self.files[media_sid]

    def requests_to(self, server: str) -> list[Seen]:
        return [s for s in self.seen if s.server == server]

    def credentials_at_cdn(self) -> list[Seen]:
        """The requests to the CDN host that carried an Authorization header: there
        must be none (the ``media_service`` fixture asserts it after every test)."""
        return [seen for seen in self.requests_to("cdn") if "authorization" in map(str.lower, seen.headers)]


def _handler(service: MediaService, role: str) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # quiet
            pass

        def do_GET(self) -> None:  # noqa: N802
            service.seen.append(Seen(role, self.path, {k: v for k, v in self.headers.items()}))
            path = urlsplit(self.path).path
            if role == "mcs":
                self._mcs(path)
            else:
                self._cdn(path)

        def _script(self, script: dict[str, list[tuple[str, Any]]], sid: str) -> dict[str, Any]:
            """Run the scripted actions for this request; returns overrides."""
            steps = script.get(sid) or []
            overrides: dict[str, Any] = {}
            if steps:
                action, value = steps.pop(0)
                if action == "sleep":
                    time.sleep(value)
                elif action == "call":
                    value()
                elif action == "status":
                    self._send(value, b'{"message": "scripted"}', "application/json")
                    overrides["done"] = True
                elif action == "redirect":
                    self.send_response(302)
                    self.send_header("Location", value)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    overrides["done"] = True
                else:
                    overrides[action] = value
            return overrides

        def _mcs(self, path: str) -> None:
            parts = path.strip("/").split("/")
            # /v1/Services/{IS}/Media/{ME}
            if len(parts) != 5 or parts[:2] != ["v1", "Services"] or parts[3] != "Media":
                return self._send(404, b'{"message": "not found"}', "application/json")
            service_sid, media_sid = parts[2], parts[4]
            expected = "Basic " + base64.b64encode(f"{service.username}:{service.password}".encode()).decode()
            if self.headers.get("Authorization") != expected:
                return self._send(401, b'{"message": "Authenticate", "code": 20003}', "application/json")
            overrides = self._script(service.mcs_script, media_sid)
            if overrides.get("done"):
                return None
            file = service.files.get(media_sid)
            if file is None or file.service_sid != service_sid:
                return self._send(404, b'{"message": "not found"}', "application/json")
            answer = {
                "sid": media_sid, "service_sid": service_sid,
                "size": overrides.get("declare", len(file.content)),
                "content_type": file.content_type, "filename": file.filename,
                "links": {"content": f"{path}/Content",
                          "content_direct_temporary": f"{service.cdn_url}/{media_sid}?Expires=1&Signature=x"},
            }
            return self._send(200, json.dumps(answer).encode(), "application/json")

        def _cdn(self, path: str) -> None:
            media_sid = path.strip("/").split("/")[0]
            overrides = self._script(service.cdn_script, media_sid)
            if overrides.get("done"):
                return None
            file = service.files.get(media_sid)
            if file is None:
                return self._send(404, b"not found", "text/plain")
            if "chunked" in overrides:
                return self._send_chunked(overrides["chunked"], file.content_type)
            return self._send(200, overrides.get("body", file.content), file.content_type)

        def _send_chunked(self, body: bytes, content_type: str) -> None:
            self.send_response(200)
            self.send_header("Content-Type", content_type)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            try:
                for start in range(0, len(body), 1024):
                    chunk = body[start:start + 1024]
                    self.wfile.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
                self.wfile.write(b"0\r\n\r\n")
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (a refused file)
            self.close_connection = True

        def _send(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            try:
                self.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (a refused oversized file)

    return Handler
