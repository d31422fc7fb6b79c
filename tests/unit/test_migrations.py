"""Data migrations of the app's own table, run forward from the state before them."""

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from django_twilio_convlink.deliveries import fingerprint
from tests.helpers import payload

pytestmark = pytest.mark.django_db(transaction=True)


def test_failed_deliveries_recorded_before_fingerprints_get_one():
    executor = MigrationExecutor(connection)
    before = [("twilio_convlink", "0003_delivery_fingerprint_and_refused")]
    executor.migrate(before)
    old_apps = executor.loader.project_state(before).apps
    WebhookDelivery = old_apps.get_model("twilio_convlink", "WebhookDelivery")
    data = payload("onMessageAdded_sms_from_customer")
    failed = WebhookDelivery.objects.create(params=data, status="failed")
    done = WebhookDelivery.objects.create(params=data, status="processed")
    executor = MigrationExecutor(connection)
    executor.migrate(executor.loader.graph.leaf_nodes())
    failed.refresh_from_db()
    done.refresh_from_db()
    assert failed.fingerprint == fingerprint(data) and done.fingerprint == ""
