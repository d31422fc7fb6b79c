import pytest
from django.conf import settings
from django.db import connection
from django.test import Client

from django_twilio_convlink import testing
from django_twilio_convlink.signature import SIGNATURE_HEADER
from django_twilio_convlink.testing import CaptureStatements
from tests.factories import PAYLOADS, payload, sid  # noqa: F401  (tests import them from here)

WEBHOOK_PATH = "/twilio/webhook/"
CUSTOMER = "+14155550142"


class TwilioClient(Client):
    """A test client that signs its POSTs exactly as Twilio does, with the SDK."""

    def __init__(self, *args, token: str | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.token = token or settings.AUTH_TOKEN

    def webhook(self, data: dict[str, str], *, path: str = WEBHOOK_PATH,
                signed_url: str | None = None, signature: str | None = None,
                secure: bool = False, headers: dict[str, str] | None = None, **extra):
        # A given signature (a forged one) goes over the one post_signed computes.
        forced = {SIGNATURE_HEADER: signature} if signature is not None else {}
        return testing.post_signed(self, path, data, secret=self.token, url=signed_url, secure=secure,
                                   headers={**forced, **(headers or {})}, **extra)


@pytest.fixture
def twilio_client() -> TwilioClient:
    return TwilioClient()


@pytest.fixture(autouse=True)
def api_outbox():
    """The Twilio calls the app made in this test (LocmemBackend), emptied before it."""
    from django_twilio_convlink import api

    api.LocmemBackend.reset()
    yield api.outbox
    api.LocmemBackend.reset()


@pytest.fixture
def captured_sql():
    """The SQL statements the database sees inside the ``with`` block (``.sql``)."""
    return lambda: CaptureStatements(connection)


def pytest_collection_modifyitems(config, items):
    # The concurrency tests need a server database with row locks; on SQLite they
    # would only measure SQLite's global write lock. .ci/run runs them on PostgreSQL.
    if connection.vendor == "sqlite":
        skip = pytest.mark.skip(reason="needs PostgreSQL or MariaDB (set DATABASE_URL)")
        for item in items:
            if "concurrency" in item.keywords:
                item.add_marker(skip)
