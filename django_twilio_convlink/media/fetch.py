"""The Media Content Service over HTTP: ask it where a file is, then fetch the file.
Nothing here touches the database.

Two requests per file (twilio-facts, "Media"); the twilio SDK does not cover MCS:

1. ``GET {MEDIA_BASE_URL}/v1/Services/{ChatServiceSid}/Media/{MediaSid}`` with HTTP
   Basic auth. A redirect is not followed: the credentials go to the configured host
   and nowhere else.
2. the answer's ``links.content_direct_temporary``, a short-lived signed URL on
   another host (a CDN), fetched with no credentials at all, redirects followed by
   hand so that nothing (requests' netrc lookup included) adds any. The body is
   streamed into a temporary file, counted as it comes, and given up as soon as it
   passes the limit.

Every failure is a ``MediaError`` that says whether trying again may help: a fresh
file's 404, 429, 5xx, timeouts, broken connections, a temporary link refused (it
expired) may; the media service's 401/403 (credentials), a redirect from it, a
malformed answer do not. A file too large, or larger than Twilio declared, is
``MediaRefused``.
"""

from __future__ import annotations

import re
import tempfile
import time
from dataclasses import dataclass
from typing import IO, Any
from urllib.parse import urljoin, urlsplit

import requests

from ..accounts import MAIN, account_owner, subaccount_tokens
from ..conf import SETTINGS_NAME, convlink_settings

CHUNK_BYTES = 64 * 1024
MAX_REDIRECTS = 3
MEDIA_SID = re.compile(r"^ME[0-9a-fA-F]{32}$")
CHAT_SERVICE_SID = re.compile(r"^IS[0-9a-fA-F]{32}$")


class MediaError(Exception):
    """A download that did not succeed. ``transient``: the same download may succeed
    later; ``status``: the HTTP status of the answer, when there was one."""

    def __init__(self, message: str, *, transient: bool, status: int | None = None) -> None:
        super().__init__(message)
        self.transient, self.status = transient, status


class MediaRefused(MediaError):
    """The file is not stored, on purpose: larger than MEDIA_MAX_BYTES, or its bytes
    exceed the size Twilio declared. Permanent."""

    def __init__(self, message: str) -> None:
        super().__init__(message, transient=False)


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str
    # What they are, for messages: never the secret.
    label: str


@dataclass
class Fetched:
    """A downloaded file: its bytes in ``file`` (a temporary file, at position 0,
    closed by the caller) and what the media service said of it."""

    file: IO[bytes]
    size: int
    content_type: str
    filename: str


class _NoCredentials(requests.auth.AuthBase):
    """Sends no Authorization header. Passed explicitly, it also keeps requests from
    looking the host up in ~/.netrc, which it does when a request has no auth."""

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers.pop("Authorization", None)
        return request


def credentials_for(account_sid: str) -> Credentials:
    """Who may read a conversation's media: a sub-account listed in
    SUBACCOUNT_AUTH_TOKENS reads its own with its SID and (first) auth token, the
    tokens its webhooks are signed with; every other conversation is read with the
    main account's API key and secret when set, else ACCOUNT_SID and AUTH_TOKEN."""
    owner = account_owner(account_sid)
    if owner != MAIN:
        return Credentials(owner, subaccount_tokens()[owner][0], f"sub-account {owner}")
    s = convlink_settings
    if s.API_KEY_SID:
        if not s.API_KEY_SECRET:
            raise MediaError(f'{SETTINGS_NAME}["API_KEY_SECRET"] is not set.', transient=False)
        return Credentials(s.API_KEY_SID, s.API_KEY_SECRET, f"API key {s.API_KEY_SID}")
    if not s.ACCOUNT_SID or not s.AUTH_TOKEN:
        raise MediaError(f'{SETTINGS_NAME}["ACCOUNT_SID"] and ["AUTH_TOKEN"] must be set to download media.',
                         transient=False)
    return Credentials(s.ACCOUNT_SID, s.AUTH_TOKEN, f"account {s.ACCOUNT_SID}")


def media_url(chat_service_sid: str, media_sid: str) -> str:
    if not CHAT_SERVICE_SID.fullmatch(chat_service_sid or ""):
        raise MediaError(f"{chat_service_sid!r} is not a conversation service SID (IS...).", transient=False)
    if not MEDIA_SID.fullmatch(media_sid or ""):
        raise MediaError(f"{media_sid!r} is not a media SID (ME...).", transient=False)
    base = str(convlink_settings.MEDIA_BASE_URL).rstrip("/")
    return f"{base}/v1/Services/{chat_service_sid}/Media/{media_sid}"


def describe(session: requests.Session, chat_service_sid: str, media_sid: str,
             credentials: Credentials) -> dict[str, Any]:
    """The media service's JSON answer for one file (its temporary link included)."""
    url = media_url(chat_service_sid, media_sid)
    response = _get(session, url, auth=(credentials.username, credentials.password), stream=False)
    with response:
        if response.is_redirect or response.is_permanent_redirect:
            target = urlsplit(urljoin(url, response.headers.get("Location", ""))).netloc or "?"
            raise MediaError(f"The media service answered {response.status_code} with a redirect to "
                             f"{target}; not followed, so the credentials go to no other host.",
                             transient=False, status=response.status_code)
        _raise_for_status(response, "The media service", credentials)
        try:
            answer = response.json()
            link = answer["links"]["content_direct_temporary"]
        except (ValueError, KeyError, TypeError):
            raise MediaError("The media service's answer has no links.content_direct_temporary.",
                             transient=False, status=response.status_code) from None
    if not isinstance(link, str) or urlsplit(link).scheme not in ("http", "https"):
        raise MediaError("The media service's temporary link is not an http(s) URL.", transient=False)
    return dict(answer)


def download(session: requests.Session, url: str, *, limit: int, declared: int | None,
             deadline: float) -> tuple[IO[bytes], int]:
    """The bytes at ``url`` (the temporary link), fetched without credentials, in a
    temporary file. Refused past ``limit`` bytes, or past ``declared`` when the media
    service declared a size; a transient error when the transfer ends short of
    ``declared`` or runs past ``deadline`` (time.monotonic())."""
    for _hop in range(MAX_REDIRECTS + 1):
        response = _get(session, url, auth=_NoCredentials(), stream=True)
        if not (response.is_redirect or response.is_permanent_redirect):
            break
        target = urljoin(url, response.headers.get("Location", ""))
        response.close()
        if urlsplit(target).scheme not in ("http", "https"):
            raise MediaError("The temporary link redirects to a URL that is not http(s).", transient=False)
        url = target
    else:
        raise MediaError(f"The temporary link redirects more than {MAX_REDIRECTS} times.", transient=False)
    ceiling = min(limit, declared) if declared is not None else limit
    with response:
        _raise_for_status(response, "The temporary link", None)
        length = response.headers.get("Content-Length", "")
        if length.isdigit() and int(length) > ceiling:
            raise _too_large(f"{length} bytes", limit, declared)
        file = tempfile.TemporaryFile()
        size = 0
        try:
            for chunk in response.iter_content(CHUNK_BYTES):
                size += len(chunk)
                if size > ceiling:
                    raise _too_large(f"more than {ceiling} bytes", limit, declared)
                if time.monotonic() > deadline:
                    raise MediaError("The download took too long; it will be tried again.", transient=True)
                file.write(chunk)
            if declared is not None and size < declared:
                raise MediaError(f"The download ended after {size} of {declared} bytes.", transient=True)
        except requests.RequestException as exc:
            file.close()
            raise MediaError(_error_text(exc, url), transient=True) from exc
        except BaseException:
            file.close()
            raise
    file.seek(0)
    return file, size


def _too_large(amount: str, limit: int, declared: int | None) -> MediaRefused:
    if declared is not None and declared < limit:
        return MediaRefused(f"The file sent {amount}; Twilio declared {declared} bytes.")
    return MediaRefused(f"The file is {amount}; MEDIA_MAX_BYTES is {limit}.")


def _get(session: requests.Session, url: str, *, auth: Any, stream: bool) -> requests.Response:
    timeout = convlink_settings.API_TIMEOUT
    try:
        return session.get(url, auth=auth, stream=stream, allow_redirects=False, timeout=(timeout, timeout))
    except (requests.RequestException, OSError) as exc:
        # Timeouts, refused or reset connections, DNS: worth trying again.
        raise MediaError(_error_text(exc, url), transient=True) from exc


def _error_text(exc: BaseException, url: str) -> str:
    """The error for the row and the log, without the URL's query: a temporary link's
    query is its signature, which reads the file until it expires (never stored)."""
    text = f"{type(exc).__name__}: {exc}"
    query = urlsplit(url).query
    return text.replace(query, "...") if query else text


def _raise_for_status(response: requests.Response, who: str, credentials: Credentials | None) -> None:
    status = response.status_code
    if 200 <= status < 300:
        return
    if status in (401, 403) and credentials is not None:
        raise MediaError(f"{who} answered {status}: it refuses the credentials of {credentials.label}. "
                         "Permanent until the credentials change (then: fetch_twilio_media "
                         "--include-permanent).", transient=False, status=status)
    # A fresh file may answer 404 for a short while (twilio-facts, "Media"). A temporary
    # link carries no credentials: its 401/403 is a link that expired, and the next
    # attempt asks the media service for a new one.
    transient = status in (401, 403, 404, 408, 425, 429) or status >= 500
    raise MediaError(f"{who} answered {status}{' ' + response.reason if response.reason else ''}.",
                     transient=transient, status=status)
