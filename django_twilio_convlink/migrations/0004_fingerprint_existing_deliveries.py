"""Fingerprints for the deliveries recorded before the field existed that may still be
settled by a retry (failed, or still received): without one, a later successful retry
of theirs would leave them failed."""

import hashlib
import json

from django.db import migrations


def fingerprint(params):
    # A copy of deliveries.fingerprint as it was when this migration was written:
    # migrations must not change when the app's code does.
    if not isinstance(params, dict):
        return ""
    signed = {k: v for k, v in params.items() if k != "RetryCount"}
    return hashlib.sha256(json.dumps(signed, sort_keys=True, ensure_ascii=False).encode(
        "utf-8", "surrogatepass")).hexdigest()


def fill(apps, schema_editor):
    WebhookDelivery = apps.get_model("twilio_convlink", "WebhookDelivery")
    pending = WebhookDelivery.objects.filter(fingerprint="", status__in=["failed", "received"])
    for delivery in pending.only("pk", "params").iterator(chunk_size=500):
        WebhookDelivery.objects.filter(pk=delivery.pk).update(fingerprint=fingerprint(delivery.params))


class Migration(migrations.Migration):

    dependencies = [
        ("twilio_convlink", "0003_delivery_fingerprint_and_refused"),
    ]

    operations = [
        migrations.RunPython(fill, migrations.RunPython.noop, elidable=True),
    ]
