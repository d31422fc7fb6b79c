"""X-Twilio-Signature: which URL Twilio signed, and whether the request carries its mark.

The check always runs through the SDK's RequestValidator and never depends on DEBUG.
When it fails, the reason and the URL used are returned so the view can log them: a
proxy that hides the public URL is the most common cause, and a bare 403 hides it.
"""

from __future__ import annotations

from django.http import HttpRequest
from twilio.request_validator import RequestValidator

try:  # twilio 9.13+: webhook shared-key signing
    from twilio.request_validator import SIGNATURE_SETTINGS_HEADER, get_signature_algorithm
except ImportError:
    SIGNATURE_SETTINGS_HEADER, get_signature_algorithm = "X-Twilio-Webhooks-Signature-Settings", None

from .conf import convlink_settings

SIGNATURE_HEADER = "X-Twilio-Signature"


def webhook_url(request: HttpRequest) -> str:
    """The URL Twilio signed: WEBHOOK_URL when set, else the request's absolute URI.

    ``build_absolute_uri`` honours SECURE_PROXY_SSL_HEADER and USE_X_FORWARDED_HOST,
    so a site behind a TLS-terminating proxy that sets those needs no WEBHOOK_URL.
    """
    return convlink_settings.WEBHOOK_URL or request.build_absolute_uri()


def _as_list(value: str | list[str] | tuple[str, ...] | None) -> list[str]:
    if not value:
        return []
    return [value] if isinstance(value, str) else [v for v in value if v]


def auth_tokens_for(account_sid: str) -> list[str]:
    """The tokens a delivery from ``account_sid`` may be signed with.

    A sub-account listed in SUBACCOUNT_AUTH_TOKENS signs with its own token(s) only.
    Everyone else: AUTH_TOKEN and, during a rotation, SECONDARY_AUTH_TOKENS.
    """
    s = convlink_settings
    subaccount_tokens = (s.SUBACCOUNT_AUTH_TOKENS or {}).get(account_sid)
    if subaccount_tokens:
        return _as_list(subaccount_tokens)
    return _as_list(s.AUTH_TOKEN) + _as_list(s.SECONDARY_AUTH_TOKENS)


def _shared_key(settings_header: str) -> tuple[str | None, str | None]:
    """(algorithm, secret) for a delivery signed with a webhook shared key."""
    fields = dict(part.strip().partition("=")[::2] for part in settings_header.split(","))
    algorithm = get_signature_algorithm(settings_header) if get_signature_algorithm else None
    return algorithm, (convlink_settings.WEBHOOK_SHARED_KEYS or {}).get(fields.get("key", ""))


def signature_failure(request: HttpRequest, url: str) -> str | None:
    """Why the request is not signed by Twilio for ``url``, or None when it is."""
    if not convlink_settings.VALIDATE_SIGNATURE:
        return None
    signature = request.headers.get(SIGNATURE_HEADER)
    if not signature:
        return f"no {SIGNATURE_HEADER} header"
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
        secrets, options = auth_tokens_for(request.POST.get("AccountSid", "")), {}
        if not secrets:
            # Fail closed: without a token nothing can be verified (system check E007).
            return 'TWILIO_CONVLINK["AUTH_TOKEN"] is not set'
    for secret in secrets:
        if RequestValidator(secret).validate(url, request.POST, signature, **options):
            return None
    return f"{SIGNATURE_HEADER} does not match"
