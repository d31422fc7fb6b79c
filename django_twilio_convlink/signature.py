"""X-Twilio-Signature: which URL Twilio signed, and whether the request carries its mark.

The check always runs through the SDK's RequestValidator and never depends on DEBUG.
When it fails, the reason and the URL used are returned so the view can log them: a
proxy that hides the public URL is the most common cause, and a bare 403 hides it.
"""

from __future__ import annotations

from django.http import HttpRequest
from twilio.request_validator import RequestValidator

from .conf import convlink_settings

SIGNATURE_HEADER = "X-Twilio-Signature"


def webhook_url(request: HttpRequest) -> str:
    """The URL Twilio signed: WEBHOOK_URL when set, else the request's absolute URI.

    ``build_absolute_uri`` honours SECURE_PROXY_SSL_HEADER and USE_X_FORWARDED_HOST,
    so a site behind a TLS-terminating proxy that sets those needs no WEBHOOK_URL.
    """
    return convlink_settings.WEBHOOK_URL or request.build_absolute_uri()


def signature_failure(request: HttpRequest, url: str) -> str | None:
    """Why the request is not signed by Twilio for ``url``, or None when it is."""
    if not convlink_settings.VALIDATE_SIGNATURE:
        return None
    signature = request.headers.get(SIGNATURE_HEADER)
    if not signature:
        return f"no {SIGNATURE_HEADER} header"
    token = convlink_settings.AUTH_TOKEN
    if not token:
        # Fail closed: without a token nothing can be verified (system check E007 says so).
        return 'TWILIO_CONVLINK["AUTH_TOKEN"] is not set'
    if not RequestValidator(token).validate(url, request.POST, signature):
        return f"{SIGNATURE_HEADER} does not match"
    return None
