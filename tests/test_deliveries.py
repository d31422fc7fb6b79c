"""Issue 4, items 1 and 2: every signed delivery is logged before processing; failures
keep their row, error and traceback; replays and Twilio's retries complete them."""

import datetime
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.db import DatabaseError, connection
from django.urls import reverse
from django.utils import timezone

from django_twilio_convlink.deliveries import forged_today
from django_twilio_convlink.models import WebhookDelivery
from tests.conftest import TwilioClient, payload
from tests.testapp.models import ChatConversation, ChatMessage

pytestmark = pytest.mark.django_db

FIRST = "onMessageAdded_sms_from_customer"
TOKEN = "b2f0c1d4-idempotency"


def fail_message_inserts(execute, sql, params, many, context):
    if "testapp_chatmessage" in sql and sql.lstrip().upper().startswith("INSERT"):
        raise DatabaseError("simulated: could not write")
    return execute(sql, params, many, context)


def deliver(data, token=TOKEN, **kwargs):
    return TwilioClient().webhook(data, headers={"I-Twilio-Idempotency-Token": token}, **kwargs) \
        if token else TwilioClient().webhook(data, **kwargs)


def test_signed_delivery_is_recorded_with_its_fields():
    data = payload(FIRST, RetryCount="2")
    assert deliver(data).status_code == 200
    delivery = WebhookDelivery.objects.get()
    assert (delivery.event_type, delivery.message_sid, delivery.conversation_sid, delivery.account_sid) == (
        "onMessageAdded", data["MessageSid"], data["ConversationSid"], data["AccountSid"])
    assert (delivery.idempotency_token, delivery.retry_count) == (TOKEN, 2)
    assert delivery.params == data
    assert delivery.headers["X-Twilio-Signature"] == "[redacted]"
    assert (delivery.status, delivery.attempts) == ("processed", 1)
    assert delivery.processed_at >= delivery.received_at


def test_forged_requests_are_counted_not_stored():
    before = forged_today()
    assert TwilioClient(token="forged").webhook(payload(FIRST)).status_code == 403
    assert not WebhookDelivery.objects.exists()
    assert forged_today() == before + 1


def test_malformed_delivery_is_logged_as_rejected():
    assert deliver(payload(FIRST, Index="seven")).status_code == 400
    delivery = WebhookDelivery.objects.get()
    assert delivery.status == "rejected" and "Index" in delivery.error


def test_nul_in_a_field_is_still_loggable():
    assert deliver(payload(FIRST, Body="nul\x00here")).status_code == 400
    assert WebhookDelivery.objects.get().params["Body"] == "nul\ufffdhere"


def test_failed_processing_keeps_the_delivery_with_its_error():
    data = payload(FIRST)
    with connection.execute_wrapper(fail_message_inserts):
        assert deliver(data).status_code == 500
    delivery = WebhookDelivery.objects.get()
    assert delivery.status == "failed" and delivery.processed_at is None
    assert "simulated: could not write" in delivery.error
    assert "Traceback" in delivery.traceback
    assert not ChatMessage.objects.exists() and not ChatConversation.objects.exists()


def test_twilio_retry_completes_the_failed_delivery():
    data = payload(FIRST)
    with connection.execute_wrapper(fail_message_inserts):
        deliver(data)
    assert deliver({**data, "RetryCount": "1"}).status_code == 200
    assert list(WebhookDelivery.objects.order_by("pk").values_list("status", flat=True)) == [
        "processed", "processed"]
    assert ChatMessage.objects.get().message_sid == data["MessageSid"]


def test_replay_command_completes_failed_deliveries():
    data = payload(FIRST)
    with connection.execute_wrapper(fail_message_inserts):
        deliver(data)
    out = StringIO()
    call_command("replay_twilio_webhooks", "--failed", stdout=out)
    assert "1 selected, 1 processed, 0 failed" in out.getvalue()
    delivery = WebhookDelivery.objects.get()
    assert (delivery.status, delivery.attempts) == ("processed", 2)
    assert ChatMessage.objects.get().message_sid == data["MessageSid"]


def test_replaying_the_first_attempt_settles_its_failed_retries():
    # Twilio's first attempt is marked processed by primary key alone (the cheap
    # UPDATE); a replay of it must still settle the retries that failed after it.
    data = payload(FIRST)
    with connection.execute_wrapper(fail_message_inserts):
        deliver(data)
        deliver({**data, "RetryCount": "1"})
    first = WebhookDelivery.objects.order_by("pk").first()
    call_command("replay_twilio_webhooks", str(first.pk), stdout=StringIO())
    assert list(WebhookDelivery.objects.order_by("pk").values_list("status", flat=True)) == [
        "processed", "processed"]


def test_replay_goes_on_past_a_failure_and_exits_non_zero():
    with connection.execute_wrapper(fail_message_inserts):
        deliver(payload(FIRST), token="one")
        deliver(payload(FIRST, ConversationSid="CH" + "2" * 32), token="two")
    first, second = WebhookDelivery.objects.order_by("pk")
    # The first replay fails again, the second succeeds.
    calls = []

    def fail_first(execute, sql, params, many, context):
        if "testapp_chatmessage" in sql and sql.lstrip().upper().startswith("INSERT") and not calls:
            calls.append(sql)
            raise DatabaseError("still broken")
        return execute(sql, params, many, context)

    out, err = StringIO(), StringIO()
    with connection.execute_wrapper(fail_first), pytest.raises(CommandError, match="1 delivery failed"):
        call_command("replay_twilio_webhooks", "--failed", stdout=out, stderr=err)
    assert "2 selected, 1 processed, 1 failed" in out.getvalue()
    assert f"Delivery {first.pk} failed again" in err.getvalue()
    first.refresh_from_db()
    second.refresh_from_db()
    assert (first.status, second.status) == ("failed", "processed")


def test_replay_by_id_since_and_dry_run():
    with connection.execute_wrapper(fail_message_inserts):
        deliver(payload(FIRST))
    delivery = WebhookDelivery.objects.get()
    out = StringIO()
    call_command("replay_twilio_webhooks", str(delivery.pk), "--dry-run", stdout=out)
    assert f"Would replay delivery {delivery.pk}" in out.getvalue()
    assert WebhookDelivery.objects.get().status == "failed"
    tomorrow = (timezone.now() + datetime.timedelta(days=1)).date().isoformat()
    out = StringIO()
    call_command("replay_twilio_webhooks", "--failed", "--since", tomorrow, stdout=out)
    assert "0 selected" in out.getvalue()
    call_command("replay_twilio_webhooks", str(delivery.pk), stdout=StringIO())
    assert WebhookDelivery.objects.get().status == "processed"


@pytest.mark.parametrize("args, message", [
    ((), "Name delivery ids, or use --failed"),
    (("424242",), "No delivery with id 424242"),
    (("--failed", "--since", "last tuesday"), "is not a date"),
])
def test_replay_usage_errors(args, message):
    with pytest.raises(CommandError, match=message):
        call_command("replay_twilio_webhooks", *args)


def test_prune_keeps_failed_and_recent_deliveries():
    old = timezone.now() - datetime.timedelta(days=40)
    deliver(payload(FIRST), token="processed-old")
    with connection.execute_wrapper(fail_message_inserts):
        deliver(payload(FIRST), token="failed-old")
    WebhookDelivery.objects.update(received_at=old)
    deliver(payload(FIRST), token="recent")
    out = StringIO()
    call_command("prune_twilio_webhooks", "--dry-run", stdout=out)
    assert "Would delete 1 delivery older than 30 days" in out.getvalue()
    call_command("prune_twilio_webhooks", stdout=StringIO())
    assert sorted(WebhookDelivery.objects.values_list("idempotency_token", flat=True)) == [
        "failed-old", "recent"]
    call_command("prune_twilio_webhooks", "--include-failed", stdout=StringIO())
    assert list(WebhookDelivery.objects.values_list("idempotency_token", flat=True)) == ["recent"]


def test_retention_is_a_setting(settings):
    deliver(payload(FIRST))
    WebhookDelivery.objects.update(received_at=timezone.now() - datetime.timedelta(days=3))
    settings.TWILIO_CONVLINK = {**settings.TWILIO_CONVLINK, "DELIVERY_RETENTION_DAYS": 2}
    call_command("prune_twilio_webhooks", stdout=StringIO())
    assert not WebhookDelivery.objects.exists()


def test_failed_delivery_is_found_and_replayed_in_the_admin(admin_client):
    with connection.execute_wrapper(fail_message_inserts):
        deliver(payload(FIRST))
    delivery = WebhookDelivery.objects.get()
    changelist = reverse("admin:twilio_convlink_webhookdelivery_changelist")
    page = admin_client.get(changelist, {"status__exact": "failed"}).content.decode()
    assert delivery.message_sid in page and "simulated: could not write" in page
    response = admin_client.post(changelist, {"action": "replay_selected", "_selected_action": [delivery.pk]},
                                 follow=True)
    assert "1 replayed, 0 failed again" in response.content.decode()
    assert WebhookDelivery.objects.get().status == "processed"


@pytest.mark.django_db(transaction=True)
def test_atomic_requests_site_keeps_the_failed_delivery(monkeypatch):
    """Under ATOMIC_REQUESTS a failed event must not take its log row down with it."""
    monkeypatch.setitem(connection.settings_dict, "ATOMIC_REQUESTS", True)
    with connection.execute_wrapper(fail_message_inserts):
        assert deliver(payload(FIRST)).status_code == 500
    assert WebhookDelivery.objects.get().status == "failed"
