"""Fixtures and hooks for the whole suite; what the tests share besides fixtures is in
tests/helpers.py."""

import pytest
from django.db import connection

from django_twilio_convlink import signals
from django_twilio_convlink.testing import CaptureStatements
from tests.helpers import MESSAGE_SIGNALS, Recorder, TwilioClient


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


@pytest.fixture
def received():
    """The public signals a site's receivers get in this test (a ``Recorder``)."""
    recorder = Recorder()
    receivers = []
    for name in (*MESSAGE_SIGNALS, "event_received", "delivery_failed", "message_status_changed",
                 "customer_opted_out", "customer_opted_in", "media_stored"):
        receiver = recorder.receiver(name)
        getattr(signals, name).connect(receiver, weak=False)
        receivers.append((name, receiver))
    yield recorder
    for name, receiver in receivers:
        getattr(signals, name).disconnect(receiver)


@pytest.fixture
def media_service(settings, tmp_path):
    """The stand-in media service (tests/media_server.py) on loopback, with downloads
    on, MEDIA_BASE_URL pointing at it, and the files stored in a temporary folder.
    After the test, no request to its CDN host may have carried credentials."""
    from tests.media_server import MediaService

    convlink = settings.TWILIO_CONVLINK
    service = MediaService(convlink["ACCOUNT_SID"], convlink["AUTH_TOKEN"]).start()
    settings.TWILIO_CONVLINK = {**convlink, "MEDIA_DOWNLOAD": True, "MEDIA_BASE_URL": service.mcs_url,
                                "API_TIMEOUT": 2, "MEDIA_RETRY_DELAY": 30}
    settings.STORAGES = {**settings.STORAGES, "default": {
        "BACKEND": "django.core.files.storage.FileSystemStorage",
        "OPTIONS": {"location": str(tmp_path / "media")}}}
    yield service
    service.stop()
    # Whatever the test did: credentials went to the media service's host only.
    assert service.credentials_at_cdn() == []


def pytest_collection_modifyitems(config, items):
    # The concurrency tests need a server database with row locks; on SQLite they
    # would only measure SQLite's global write lock. .ci/run runs them on PostgreSQL.
    if connection.vendor == "sqlite":
        skip = pytest.mark.skip(reason="needs PostgreSQL or MariaDB (set DATABASE_URL)")
        for item in items:
            if "concurrency" in item.keywords:
                item.add_marker(skip)
