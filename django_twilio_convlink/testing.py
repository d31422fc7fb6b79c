"""Test helpers for sites: a signing client, the webhook security matrix, and a
statement counter for pinning what a webhook costs.

    from django_twilio_convlink.testing import WebhookSecurityTestCase

    class TwilioWebhookSecurityTests(WebhookSecurityTestCase):
        webhook_path = "/twilio/webhook/"      # where your URLconf mounts the app

Every request is signed with the SDK's ``RequestValidator.compute_signature``, as
Twilio signs it; nothing is patched. The matrix: good, bad and missing signatures,
a rotated (secondary) token, a sub-account's token, the HMAC-SHA256 shared key,
HTTPS behind a proxy, WEBHOOK_URL, ATOMIC_REQUESTS, LoginRequiredMiddleware, a
CSRF-enforcing client, an oversized body, and forged requests leaving no trace.
"""

from __future__ import annotations

import secrets
import unittest
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from django.db import connection
from django.test import Client, TestCase, override_settings
from django.test.utils import CaptureQueriesContext
from twilio.request_validator import RequestValidator

from .conf import SETTINGS_NAME, convlink_settings
from .models import WebhookDelivery
from .signature import SIGNATURE_HEADER, SIGNATURE_SETTINGS_HEADER

if TYPE_CHECKING:
    # What the test client's requests return (stubs only): an HttpResponse with the
    # test client's additions (json(), templates, context, ...).
    from django.test.client import _MonkeyPatchedWSGIResponse

SHARED_KEY_HEADER = SIGNATURE_SETTINGS_HEADER


class CaptureStatements(CaptureQueriesContext):
    """Every statement the database sees inside the block::

        with CaptureStatements(connection) as statements:
            client.post(...)
        assert len(statements) <= 6, statements.sql

    Transaction control is in it on every backend: Django logs BEGIN, COMMIT and
    ROLLBACK (``debug_transaction``) even where the driver sends them itself, and
    savepoints go through a cursor. Not in it: MySQL's client library spells BEGIN as
    ``SET autocommit=0`` and sends ``SET autocommit=1`` after the commit (one statement
    more per transaction), and on PostgreSQL a server-side cursor's FETCH and CLOSE
    (``QuerySet.iterator()``) are logged as its one DECLARE.
    """

    @property
    def sql(self) -> list[str]:
        return [query["sql"] for query in self.captured_queries]


def sample_delivery(**overrides: str) -> dict[str, str]:
    """A realistic onMessageAdded form payload with fresh SIDs."""
    data = {
        "AccountSid": convlink_settings.ACCOUNT_SID or "AC" + "0" * 32,
        "EventType": "onMessageAdded",
        "Source": "SMS",
        "RetryCount": "0",
        "ConversationSid": "CH" + secrets.token_hex(16),
        "MessageSid": "IM" + secrets.token_hex(16),
        "Index": "0",
        "DateCreated": "2026-11-20T13:42:17.312Z",
        "Author": "+14155550142",
        "Body": "Hi, the heater in unit 4B is not working",
        "Attributes": "{}",
    }
    data.update(overrides)
    return data


def signature(url: str, data: dict[str, str], secret: str, algorithm: str | None = None) -> str:
    """The ``X-Twilio-Signature`` Twilio would send for ``data`` posted to ``url``,
    computed by the SDK's ``RequestValidator`` with ``secret`` (an auth token or a
    shared key, with its ``algorithm``)."""
    options = {"algorithm": algorithm} if algorithm else {}
    return RequestValidator(secret).compute_signature(url, data, **options)


def post_signed(client: Client, path: str, data: dict[str, str], *, secret: str | None = None,
                url: str | None = None, secure: bool = False, headers: dict[str, str] | None = None,
                **extra: Any) -> _MonkeyPatchedWSGIResponse:
    """POST ``data`` to ``path`` signed as Twilio signs it (for ``url``, by default the
    URL of the test request)."""
    url = url or f"{'https' if secure else 'http'}://testserver{path}"
    secret = secret if secret is not None else signing_token()
    all_headers = {SIGNATURE_HEADER: signature(url, data, secret), **(headers or {})}
    return client.post(path, data=urlencode(data), content_type="application/x-www-form-urlencoded",
                       headers=all_headers, secure=secure, **extra)


def signing_token() -> str:
    """The token Twilio signs with: AUTH_TOKEN (the first of a list)."""
    token = convlink_settings.AUTH_TOKEN
    return token[0] if isinstance(token, list | tuple) else token


def _with(**changes: Any) -> override_settings:
    from django.conf import settings

    return override_settings(**{SETTINGS_NAME: {**getattr(settings, SETTINGS_NAME, {}), **changes}})


class WebhookSecurityTestCase(TestCase):
    """The signature matrix, abstract: subclass it with your ``webhook_path``.

    Importing it into a test module does not run it there on its own: pytest skips
    the class itself (``__test__``), and unittest's runner skips it in setUpClass.
    Only subclasses run.
    """

    webhook_path = "/twilio/webhook/"
    __test__ = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.__test__ = True

    @classmethod
    def setUpClass(cls) -> None:
        if cls is WebhookSecurityTestCase:
            raise unittest.SkipTest("WebhookSecurityTestCase is abstract: subclass it")
        super().setUpClass()

    def post(self, data: dict[str, str] | None = None, client: Client | None = None,
             **kwargs: Any) -> _MonkeyPatchedWSGIResponse:
        return post_signed(client or Client(), self.webhook_path, data or sample_delivery(), **kwargs)

    def assertNothingStored(self) -> None:  # noqa: N802 (unittest style)
        self.assertFalse(WebhookDelivery.objects.exists(), "a rejected request was stored")

    def test_good_signature(self) -> None:
        self.assertEqual(self.post().status_code, 200)
        self.assertEqual(WebhookDelivery.objects.get().status, "processed")

    def test_bad_signature(self) -> None:
        self.assertEqual(self.post(secret="not-the-token").status_code, 403)
        self.assertNothingStored()

    def test_missing_signature(self) -> None:
        response = Client().post(self.webhook_path, sample_delivery())
        self.assertEqual(response.status_code, 403)
        self.assertNothingStored()

    def test_tampered_parameter(self) -> None:
        data = sample_delivery()
        url = f"http://testserver{self.webhook_path}"
        forged = {**data, "Body": "Please refund me"}
        response = Client().post(self.webhook_path, data=urlencode(forged),
                                 content_type="application/x-www-form-urlencoded",
                                 headers={SIGNATURE_HEADER: signature(url, data, signing_token())})
        self.assertEqual(response.status_code, 403)
        self.assertNothingStored()

    def test_rotated_token(self) -> None:
        # During a rotation Twilio may sign with either the new or the old token.
        with _with(AUTH_TOKEN="new-token", SECONDARY_AUTH_TOKENS=["old-token"]):
            self.assertEqual(self.post(secret="old-token").status_code, 200)
            self.assertEqual(self.post(secret="new-token").status_code, 200)
            self.assertEqual(self.post(secret="older-token").status_code, 403)

    def test_subaccount_token(self) -> None:
        subaccount = "AC" + "5" * 32
        with _with(SUBACCOUNT_AUTH_TOKENS={subaccount: "subaccount-token"}):
            data = sample_delivery(AccountSid=subaccount)
            self.assertEqual(self.post(data, secret="subaccount-token").status_code, 200)
            # The parent's token does not stand in for the sub-account's.
            self.assertEqual(self.post(sample_delivery(AccountSid=subaccount)).status_code, 403)

    def test_shared_key_hmac_sha256(self) -> None:
        key_id = "webhooks_sharedkey_" + "a" * 32
        header = {SHARED_KEY_HEADER: f"key={key_id},algorithm=HMAC_SHA256"}
        data = sample_delivery()
        url = f"http://testserver{self.webhook_path}"
        with _with(WEBHOOK_SHARED_KEYS={key_id: "shared-secret"}):
            good = signature(url, data, "shared-secret", "HMAC_SHA256")
            response = Client().post(self.webhook_path, data=urlencode(data),
                                     content_type="application/x-www-form-urlencoded",
                                     headers={SIGNATURE_HEADER: good, **header})
            self.assertEqual(response.status_code, 200)
            sha1 = signature(url, sample_delivery(), "shared-secret")
            response = Client().post(self.webhook_path, data=urlencode(sample_delivery()),
                                     content_type="application/x-www-form-urlencoded",
                                     headers={SIGNATURE_HEADER: sha1, **header})
            self.assertEqual(response.status_code, 403)

    def test_https_behind_a_proxy(self) -> None:
        url = f"https://testserver{self.webhook_path}"
        with override_settings(SECURE_PROXY_SSL_HEADER=("HTTP_X_FORWARDED_PROTO", "https")):
            self.assertEqual(self.post(url=url, HTTP_X_FORWARDED_PROTO="https").status_code, 200)
        # Without telling Django about the proxy, Django sees http:// and refuses.
        self.assertEqual(self.post(url=url, HTTP_X_FORWARDED_PROTO="https").status_code, 403)

    def test_webhook_url_setting(self) -> None:
        public = "https://rentals.example.com/hooks/twilio/"
        with _with(WEBHOOK_URL=public):
            self.assertEqual(self.post(url=public).status_code, 200)
            self.assertEqual(self.post().status_code, 403)

    def test_atomic_requests(self) -> None:
        atomic = connection.settings_dict.get("ATOMIC_REQUESTS", False)
        connection.settings_dict["ATOMIC_REQUESTS"] = True
        try:
            self.assertEqual(self.post().status_code, 200)
        finally:
            connection.settings_dict["ATOMIC_REQUESTS"] = atomic

    def test_login_required_middleware(self) -> None:
        from django.conf import settings

        middleware = [*settings.MIDDLEWARE]
        required = "django.contrib.auth.middleware.LoginRequiredMiddleware"
        if required not in middleware:
            middleware.append(required)
        with override_settings(MIDDLEWARE=middleware):
            self.assertEqual(self.post().status_code, 200)

    def test_csrf_enforcing_client(self) -> None:
        self.assertEqual(self.post(client=Client(enforce_csrf_checks=True)).status_code, 200)

    def test_oversized_body(self) -> None:
        with _with(MAX_REQUEST_BYTES=1000):
            self.assertEqual(self.post(sample_delivery(Body="x" * 2000)).status_code, 413)
        self.assertNothingStored()
