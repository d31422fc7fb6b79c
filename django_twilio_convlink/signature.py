"""Is this request Twilio's? Everything the view decides before it reads a delivery.

``refusal`` checks, cheapest first: the declared body size, the URL Twilio signed, the
X-Twilio-Signature header, the body, the signature. Nothing a client sends makes it
raise. A Content-Length that is no number, a Host Django refuses, a port or a
bracketed host no URL parser accepts, a body Django cannot parse, a charset that is
not UTF-8: each is a refusal, which the view answers with a 4xx and counts.
(``Host: 127.0.0.1:99999`` once made the SDK's URL parsing raise inside ``validate``,
and ``charset=rot13`` made Django's form parsing raise: each a 500 and an ERROR
traceback that anyone could cause.)

The signature check always runs through the SDK's RequestValidator and never depends
on DEBUG. A refusal carries its reason and the URL used so the view can log them: a
proxy that hides the public URL is the most common cause, and a bare 403 hides it.
"""

from __future__ import annotations

import codecs
import hmac
import logging
from dataclasses import dataclass
from urllib.parse import urlparse

from django.core.cache import cache
from django.core.exceptions import BadRequest, DisallowedHost, SuspiciousOperation
from django.http import HttpRequest, QueryDict, UnreadablePostError
from django.http.multipartparser import MultiPartParserError
from django.utils import timezone
from twilio.request_validator import RequestValidator

try:  # twilio 9.13+: webhook shared-key signing
    from twilio.request_validator import SIGNATURE_SETTINGS_HEADER, get_signature_algorithm
except ImportError:
    SIGNATURE_SETTINGS_HEADER, get_signature_algorithm = "X-Twilio-Webhooks-Signature-Settings", None

from .accounts import MAIN, account_owner, subaccount_tokens
from .conf import convlink_settings

logger = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Twilio-Signature"


@dataclass(frozen=True)
class Refusal:
    """Why a request is rejected before anything is stored: the status to answer, the
    reason to log, the response body, and the URL validated against, once known."""

    status: int
    reason: str
    message: str
    url: str = ""

    def __str__(self) -> str:
        return f"{self.reason} (validated against {self.url})" if self.url else self.reason


# What Django's request parsing raises for a body it cannot read: too many fields or
# files, over DATA_UPLOAD_MAX_MEMORY_SIZE (SuspiciousOperation), a form that is not
# UTF-8 (BadRequest), broken multipart, a client gone mid-body (UnreadablePostError).
# LookupError and UnicodeError back up the charset check below: a codec that is no text
# encoding, text that is no UTF-8.
UNPARSEABLE_BODY = (SuspiciousOperation, BadRequest, MultiPartParserError, UnreadablePostError,
                    LookupError, UnicodeError)

# Twilio posts UTF-8 ("application/x-www-form-urlencoded; charset=UTF-8"); ASCII is
# part of it. Django decodes a form, multipart included, with whatever codec Python
# knows by the Content-Type's charset: "rot13" and "hex" are no text encodings
# (LookupError), and "unicode_escape" reads the characters \ud800 as a lone surrogate
# the SDK cannot encode for its HMAC (UnicodeEncodeError). Both answered 500 before the
# signature was checked.
UTF8_CODECS = frozenset({"utf-8", "ascii"})


def webhook_url(request: HttpRequest) -> str:
    """The URL Twilio signed: WEBHOOK_URL when set, else the request's absolute URI.

    ``build_absolute_uri`` honours SECURE_PROXY_SSL_HEADER and USE_X_FORWARDED_HOST,
    so a site behind a TLS-terminating proxy that sets those needs no WEBHOOK_URL.
    Raises DisallowedHost for a Host Django refuses (ALLOWED_HOSTS, RFC 1034/1035).
    """
    return convlink_settings.WEBHOOK_URL or request.build_absolute_uri()


def refusal(request: HttpRequest) -> Refusal | None:
    """None when the request may be processed, else why not: 413 for a body over
    MAX_REQUEST_BYTES; 400 for a Content-Length that is no number of bytes, a Host
    that makes no URL, a body Django cannot parse or whose charset is not UTF-8; 403
    when the signature is missing or wrong or nothing could verify it (fails closed).
    With VALIDATE_SIGNATURE off, only the size and the body are checked.

    Raises nothing for anything the client sent, and reads no database.
    """
    length = request.META.get("CONTENT_LENGTH") or "0"
    # str.isdigit() is true for "²" and "١٢", which int() refuses or reads as a number;
    # HTTP allows ASCII digits only.
    if not (length.isascii() and length.isdigit()):
        return Refusal(400, f"Content-Length {_clip(length)!r} is not a number of bytes",
                       "Malformed Content-Length.")
    digits = length.lstrip("0") or "0"
    # Compared by length first: int() refuses over 4,300 digits (ValueError).
    limit = convlink_settings.MAX_REQUEST_BYTES
    if len(digits) > len(str(limit)) or int(digits) > limit:
        return Refusal(413, f"body of {_clip(digits)} bytes is over MAX_REQUEST_BYTES",
                       "Request body too large.")
    if not convlink_settings.VALIDATE_SIGNATURE:
        return _unparseable_body(request)
    url = ""
    try:
        url = webhook_url(request)
        # The SDK parses the URL and reads its port inside validate(); a port over
        # 65535 or a bracketed host that is no IP address raises ValueError there.
        urlparse(url).port  # noqa: B018
    except DisallowedHost as exc:
        return Refusal(400, _clip(str(exc), 300), "Invalid Host header.")
    except ValueError as exc:
        source = "WEBHOOK_URL" if convlink_settings.WEBHOOK_URL else "the URL built from the Host"
        return Refusal(400, f"{source} {_clip(url)!r} cannot be parsed: {exc}", "Invalid Host header.")
    signature = request.headers.get(SIGNATURE_HEADER)
    if not signature:
        return _forged(f"no {SIGNATURE_HEADER} header", url)
    unparseable = _unparseable_body(request)
    if unparseable:
        return unparseable
    failure = signature_failure(request, url, signature)
    return _forged(failure, url) if failure else None


def _forged(reason: str, url: str) -> Refusal:
    return Refusal(403, reason, "Invalid Twilio signature.", url)


def _unparseable_body(request: HttpRequest) -> Refusal | None:
    charset = (request.content_params or {}).get("charset")
    if charset is not None and _codec_name(charset) not in UTF8_CODECS:
        return Refusal(400, f"the body must be UTF-8 encoded, not {_clip(charset)!r} (Content-Type charset)",
                       "Unsupported charset: the body must be UTF-8.")
    try:
        params = request.POST  # parsed once here, cached for the validator and the view
    except UNPARSEABLE_BODY as exc:
        return Refusal(400, f"the body cannot be parsed: {type(exc).__name__}: {_clip(str(exc), 300)}",
                       "Malformed request body.")
    field = _field_not_utf8(params)
    if field is not None:
        return Refusal(400, f"the body cannot be parsed: the field {_clip(field)!r} is no UTF-8 text",
                       "Malformed request body.")
    return None


def _codec_name(charset: str) -> str | None:
    """The codec's canonical name ("UTF8" is "utf-8"), or None for a name Python does
    not know (or that holds a NUL, which ``codecs.lookup`` refuses with ValueError)."""
    try:
        return codecs.lookup(charset).name
    except (LookupError, ValueError):
        return None


def _field_not_utf8(params: QueryDict) -> str | None:
    """The first field whose name or a value holds a lone surrogate, which UTF-8 cannot
    encode: the SDK would raise on it, a database would refuse it."""
    for name, values in params.lists():
        for text in (name, *values):
            try:
                text.encode("utf-8")
            except UnicodeEncodeError:
                return name
    return None


def _clip(text: str, limit: int = 100) -> str:
    # Anything a client sent may be 128 KiB long; the log needs its start only.
    return text if len(text) <= limit else text[:limit] + "..."


def _as_list(value: str | list[str] | tuple[str, ...] | None) -> list[str]:
    if not value:
        return []
    return [value] if isinstance(value, str) else [v for v in value if v]


def auth_tokens_for(account_sid: str) -> list[str]:
    """The tokens a delivery from ``account_sid`` may be signed with.

    A sub-account listed in SUBACCOUNT_AUTH_TOKENS signs with its own token(s) only,
    whatever the case of the SID's hex digits (``accounts.account_owner``).
    Everyone else: AUTH_TOKEN and, during a rotation, SECONDARY_AUTH_TOKENS.
    """
    owner = account_owner(account_sid)
    if owner != MAIN:
        return subaccount_tokens()[owner]
    s = convlink_settings
    return _as_list(s.AUTH_TOKEN) + _as_list(s.SECONDARY_AUTH_TOKENS)


def _shared_key(settings_header: str) -> tuple[str | None, str | None]:
    """(algorithm, secret) for a delivery signed with a webhook shared key."""
    fields = dict(part.strip().partition("=")[::2] for part in settings_header.split(","))
    algorithm = get_signature_algorithm(settings_header) if get_signature_algorithm else None
    return algorithm, (convlink_settings.WEBHOOK_SHARED_KEYS or {}).get(fields.get("key", ""))


def signature_failure(request: HttpRequest, url: str, signature: str) -> str | None:
    """Why ``signature`` is not Twilio's for ``url`` and the request's parameters, or
    None when it is. Expects a URL ``urlparse`` takes (``refusal`` checks it) and a
    body Django parsed."""
    params: QueryDict = request.POST
    settings_header = request.headers.get(SIGNATURE_SETTINGS_HEADER, "")
    if settings_header:
        # twilio 9.13+: "key=webhooks_sharedkey_...,algorithm=HMAC_SHA256" signs with
        # a shared key instead of the auth token.
        if get_signature_algorithm is None:
            return f"{SIGNATURE_SETTINGS_HEADER} needs twilio>=9.13 to be validated"
        algorithm, secret = _shared_key(settings_header)
        if not secret:
            return f'the shared key named in {SIGNATURE_SETTINGS_HEADER} is not in WEBHOOK_SHARED_KEYS'
        secrets, options = [secret], {"algorithm": algorithm}
    else:
        secrets, options = auth_tokens_for(params.get("AccountSid", "")), {}
        if not secrets:
            # Fail closed: without a token nothing can be verified (system check E007).
            return 'TWILIO_CONVLINK["AUTH_TOKEN"] is not set'
    validators = [RequestValidator(secret) for secret in secrets]
    # The SDK's validate() computes two HMACs, the URL with and without its port,
    # because Twilio's signing is inconsistent there. The URL exactly as built is the
    # common case: its one HMAC, compared in constant time, settles most requests.
    # The SDK's own computation, so the accepted signatures are the SDK's.
    algorithm = options.get("algorithm")
    # geturl() as the SDK rebuilds it ("https://h/p?" is "https://h/p" to the SDK): one of
    # its two candidates, so nothing is accepted that validate() refuses.
    as_sdk = urlparse(url).geturl()
    if any(_signs(validator, as_sdk, params, signature, algorithm) for validator in validators):
        return None
    if any(validator.validate(url, params, signature, **options) for validator in validators):
        return None
    return f"{SIGNATURE_HEADER} does not match"


def _signs(validator: RequestValidator, url: str, params: QueryDict, signature: str,
           algorithm: str | None) -> bool:
    try:
        # twilio before 9.13 has no algorithm argument (and signs with SHA-1 only).
        computed = (validator.compute_signature(url, params, algorithm) if algorithm
                    else validator.compute_signature(url, params))
    except ValueError:  # an algorithm this SDK does not know: validate() says so
        return False
    return hmac.compare_digest(computed.encode("utf-8"), signature.encode("utf-8", "surrogatepass"))


# The rejected requests are counted per day in the site's default cache, never in the
# database: strangers must not be able to fill a table (check W008 warns when that
# cache is per process).
FORGED_COUNTER = "twilio_convlink:forged:{day}"


def _forged_key() -> str:
    return FORGED_COUNTER.format(day=timezone.now().date().isoformat())


def count_forged() -> None:
    """Count a rejected (unsigned or forged) request in the cache, never the database."""
    key = _forged_key()
    try:
        if not cache.add(key, 1, timeout=2 * 86400):
            cache.incr(key)
    except Exception:  # a cache outage must not turn a 403 into a 500
        logger.debug("Could not count a forged request", exc_info=True)


def forged_today() -> int:
    return int(cache.get(_forged_key(), 0) or 0)
