"""Every signed delivery is logged before processing; failures
keep their row, error and traceback; replays and Twilio's retries complete them."""

import datetime
from io import StringIO
from urllib.parse import urlencode

import pytest
from django.core.management import CommandError, call_command
from django.db import DatabaseError, connection
from django.test import RequestFactory
from django.urls import reverse
from django.utils import timezone

from django_twilio_convlink.deliveries import record_delivery
from django_twilio_convlink.models import WebhookDelivery
from django_twilio_convlink.signature import forged_today
from tests.helpers import WEBHOOK_PATH, TwilioClient, payload
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


# --- Unfinished deliveries: the worker died before the delivery was marked ----------------

def killed_mid_processing(data, token=TOKEN):
    """What a delivery looks like after its worker was SIGKILLed (or the OOM killer
    struck) during processing: recorded, event rolled back, nothing more."""
    request = RequestFactory().post(WEBHOOK_PATH, data=urlencode(data),
                                    content_type="application/x-www-form-urlencoded",
                                    headers={"I-Twilio-Idempotency-Token": token} if token else {})
    return record_delivery(request)


def age(delivery, seconds):
    WebhookDelivery.objects.filter(pk=delivery.pk).update(
        received_at=timezone.now() - datetime.timedelta(seconds=seconds))


def raise_system_exit_on_message_insert(execute, sql, params, many, context):
    # gunicorn's worker timeout: SIGABRT, whose handler calls sys.exit(1) wherever the
    # worker is, here in the middle of the event's transaction.
    if "testapp_chatmessage" in sql and sql.lstrip().upper().startswith("INSERT"):
        raise SystemExit(1)
    return execute(sql, params, many, context)


def test_a_worker_aborted_mid_processing_marks_the_delivery_failed():
    data = payload(FIRST)
    with connection.execute_wrapper(raise_system_exit_on_message_insert), pytest.raises(SystemExit):
        deliver(data)
    delivery = WebhookDelivery.objects.get()
    assert delivery.status == "failed" and delivery.error.startswith("SystemExit")
    assert not ChatMessage.objects.exists()
    call_command("replay_twilio_webhooks", "--failed", stdout=StringIO())
    assert ChatMessage.objects.get().message_sid == data["MessageSid"]


def test_a_delivery_left_received_becomes_unfinished_after_the_grace_period(settings):
    delivery = killed_mid_processing(payload(FIRST))
    assert not WebhookDelivery.objects.unfinished().exists()  # may still be processing
    age(delivery, 299)
    assert not WebhookDelivery.objects.unfinished().exists()
    age(delivery, 301)
    assert list(WebhookDelivery.objects.unfinished()) == [delivery]
    settings.TWILIO_CONVLINK = {**settings.TWILIO_CONVLINK, "DELIVERY_UNFINISHED_AFTER": 600}
    assert not WebhookDelivery.objects.unfinished().exists()


def test_replay_unfinished_completes_what_a_killed_worker_left():
    data = payload(FIRST)
    delivery = killed_mid_processing(data)
    age(delivery, 3600)
    failed_out = StringIO()
    call_command("replay_twilio_webhooks", "--failed", stdout=failed_out)
    assert "0 selected" in failed_out.getvalue()
    out = StringIO()
    call_command("replay_twilio_webhooks", "--unfinished", stdout=out)
    assert "1 selected, 1 processed, 0 failed" in out.getvalue()
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts) == ("processed", 2)
    assert ChatMessage.objects.get().message_sid == data["MessageSid"]


def test_replay_failed_and_unfinished_together():
    with connection.execute_wrapper(fail_message_inserts):
        deliver(payload(FIRST), token="failed-one")
    age(killed_mid_processing(payload(FIRST, ConversationSid="CH" + "2" * 32), token="killed-one"), 3600)
    killed_mid_processing(payload(FIRST, ConversationSid="CH" + "3" * 32), token="in-flight")
    out = StringIO()
    call_command("replay_twilio_webhooks", "--failed", "--unfinished", stdout=out)
    assert "2 selected, 2 processed" in out.getvalue()
    assert dict(WebhookDelivery.objects.values_list("idempotency_token", "status")) == {
        "failed-one": "processed", "killed-one": "processed", "in-flight": "received"}


def test_twilio_retry_settles_an_unfinished_first_attempt():
    data = payload(FIRST)
    killed_mid_processing(data)
    assert deliver({**data, "RetryCount": "1"}).status_code == 200
    assert list(WebhookDelivery.objects.order_by("pk").values_list("status", flat=True)) == [
        "processed", "processed"]


def test_status_reports_unfinished_deliveries_with_the_oldest():
    # Read back, not recomputed: a minute may turn between the two.
    oldest = killed_mid_processing(payload(FIRST), token="a")
    age(oldest, 7200)
    oldest.refresh_from_db()
    age(killed_mid_processing(payload(FIRST), token="b"), 600)
    killed_mid_processing(payload(FIRST), token="c")
    out = StringIO()
    call_command("check_twilio_status", "--detailed", stdout=out)
    text = out.getvalue()
    assert f"died): 2, oldest {timezone.localtime(oldest.received_at):%Y-%m-%d %H:%M}" in text
    assert "replay_twilio_webhooks --unfinished" in text
    assert "waiting to be processed 3" in text


def test_prune_treats_unfinished_like_failed():
    age(killed_mid_processing(payload(FIRST), token="old-unfinished"), 40 * 86400)
    killed_mid_processing(payload(FIRST), token="in-flight")
    call_command("prune_twilio_webhooks", stdout=StringIO())
    assert WebhookDelivery.objects.count() == 2
    call_command("prune_twilio_webhooks", "--days", "0", "--include-failed", stdout=StringIO())
    # One received a moment ago may be in processing right now: it stays.
    assert list(WebhookDelivery.objects.values_list("idempotency_token", flat=True)) == ["in-flight"]


# --- Settling earlier copies: same signed parameters, not the token alone ------------------

def test_a_borrowed_idempotency_token_settles_nothing_else():
    with connection.execute_wrapper(fail_message_inserts):
        deliver(payload(FIRST), token="victim-token")
    genuine = payload(FIRST, RetryCount="1")
    deliver(genuine, token="genuine-token")
    # A replay of the genuine, signed delivery, with the victim's token in the header.
    assert deliver(genuine, token="victim-token").status_code == 200
    assert WebhookDelivery.objects.get(idempotency_token="victim-token", params__RetryCount="0"
                                       ).status == "failed"
    out = StringIO()
    call_command("replay_twilio_webhooks", "--failed", "--dry-run", stdout=out)
    assert "1 selected" in out.getvalue()


def test_a_retry_with_other_parameters_settles_nothing():
    # Same event, same message, same token: but not the same delivery.
    with connection.execute_wrapper(fail_message_inserts):
        deliver(payload("onMessageUpdated", Body="v2", DateUpdated="2026-11-20T13:46:00Z"))
    first = WebhookDelivery.objects.get()
    older = payload("onMessageUpdated", MessageSid=first.message_sid, Body="v1", RetryCount="1")
    assert deliver(older).status_code == 200
    first.refresh_from_db()
    assert first.status == "failed"


# --- Replay robustness ---------------------------------------------------------------------

@pytest.mark.parametrize("edited", [{"Body": 42}, {"Body": ["a", None]}, {"Body": {"x": 1}}])
def test_replay_reports_an_edited_row_and_goes_on(edited):
    with connection.execute_wrapper(fail_message_inserts):
        deliver(payload(FIRST), token="edited")
        deliver(payload(FIRST, ConversationSid="CH" + "2" * 32), token="intact")
    broken = WebhookDelivery.objects.get(idempotency_token="edited")
    broken.params = {**broken.params, **edited}
    broken.save()
    out, err = StringIO(), StringIO()
    call_command("replay_twilio_webhooks", "--failed", stdout=out, stderr=err)
    assert "2 selected, 1 processed, 0 failed, 1 rejected or refused" in out.getvalue()
    assert f"Delivery {broken.pk} was rejected or refused again" in err.getvalue()
    assert "'Body' is not text" in err.getvalue()
    assert WebhookDelivery.objects.get(idempotency_token="intact").status == "processed"


def test_replay_reports_params_that_are_not_a_mapping():
    with connection.execute_wrapper(fail_message_inserts):
        deliver(payload(FIRST))
    WebhookDelivery.objects.update(params=["not", "a", "form"])
    out = StringIO()
    call_command("replay_twilio_webhooks", "--failed", stdout=out, stderr=StringIO())
    assert "1 rejected or refused" in out.getvalue()


def test_admin_lists_unfinished_deliveries(admin_client):
    stuck = killed_mid_processing(payload(FIRST), token="stuck")
    age(stuck, 3600)
    killed_mid_processing(payload(FIRST), token="in-flight")
    changelist = reverse("admin:twilio_convlink_webhookdelivery_changelist")
    page = admin_client.get(changelist, {"needs_replay": "unfinished"}).content.decode()
    assert stuck.message_sid in page
    assert WebhookDelivery.objects.get(idempotency_token="in-flight").message_sid not in page


def test_a_late_failure_does_not_undo_a_settled_delivery():
    # Copy 1 is interrupted; Twilio's retry succeeds and settles it; then copy 1's
    # failure is recorded: the row must stay processed.
    from django_twilio_convlink.deliveries import mark_failed

    data = payload(FIRST)
    first = killed_mid_processing(data)
    assert deliver({**data, "RetryCount": "1"}).status_code == 200
    mark_failed(first, RuntimeError("too late"))
    first.refresh_from_db()
    assert first.status == "processed" and first.error == ""
