"""The group chat work on a real worker: django-tasks-db stores the task when the
webhook commits, the webhook answers without calling Twilio, and `db_worker` then
makes the calls. A failure the backend can defer is re-enqueued for its retry time."""

from io import StringIO

import pytest
from django.core.management import call_command

from django_twilio_convlink.api import ApiError, LocmemBackend
from tests.factories import GuestFactory, ReservationFactory
from tests.helpers import TwilioClient, payload
from tests.testapp.models import ChatMessage

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def on_worker(settings):
    settings.TWILIO_CONVLINK = {**settings.TWILIO_CONVLINK, "TASK_BACKEND": "database"}


def queued():
    from django_tasks_db.models import DBTaskResult

    return DBTaskResult.objects.filter(status="READY")


def run_worker() -> str:
    out = StringIO()
    call_command("db_worker", "--batch", "--backend", "database", "--no-startup-delay",
                 "--queue-name", "*", stdout=out, stderr=out)
    return out.getvalue()


def test_webhook_enqueues_and_the_worker_calls_twilio(on_worker, api_outbox):
    ReservationFactory(guest=GuestFactory(mobile="(415) 555-0142"))
    data = payload("onMessageAdded_sms_from_customer")
    assert TwilioClient().webhook(data).status_code == 200
    assert api_outbox == []  # the webhook itself never waits for Twilio
    [task] = queued()
    assert task.task_path == "django_twilio_convlink.tasks.forward_customer_message_task"
    assert ChatMessage.objects.get(message_sid=data["MessageSid"]).forward_state == "pending"

    run_worker()
    assert [call.method for call in api_outbox] == ["create_group_chat", "send_message"]
    assert ChatMessage.objects.get(message_sid=data["MessageSid"]).forward_state == "sent"
    assert not queued().exists()


def test_the_worker_runs_the_task_bound_to_the_configured_queue(settings, api_outbox):
    # The worker imports the task by its path in its own process: it gets the one
    # bound to TASK_BACKEND and TASK_QUEUE there, which the queue's backend accepts.
    settings.TASKS = {**settings.TASKS, "database": {**settings.TASKS["database"], "QUEUES": ["twilio"]}}
    settings.TWILIO_CONVLINK = {**settings.TWILIO_CONVLINK, "TASK_BACKEND": "database",
                                "TASK_QUEUE": "twilio"}
    data = payload("onMessageAdded_sms_from_customer")
    assert TwilioClient().webhook(data).status_code == 200
    [task] = queued()
    assert task.queue_name == "twilio"
    run_worker()
    assert ChatMessage.objects.get(message_sid=data["MessageSid"]).forward_state == "sent"
    assert not queued().exists()


def test_enqueued_in_the_transaction_commits_with_the_message_or_not_at_all(settings, api_outbox):
    from django.db import DatabaseError, connection

    from django_twilio_convlink.models import WebhookDelivery
    from django_twilio_convlink.testing import CaptureStatements

    settings.TWILIO_CONVLINK = {**settings.TWILIO_CONVLINK, "TASK_BACKEND": "database",
                                "ENQUEUE_IN_TRANSACTION": True}
    data = payload("onMessageAdded_sms_from_customer")
    with CaptureStatements(connection) as captured:
        assert TwilioClient().webhook(data).status_code == 200
    task_insert = next(i for i, sql in enumerate(captured.sql) if "django_tasks_database_dbtaskresult" in sql)
    assert task_insert < captured.sql.index("COMMIT")  # inside the event's transaction
    assert queued().count() == 1

    # The task cannot be written: the message is not either, and Twilio will redeliver.
    def refuse_tasks(execute, sql, params, many, context):
        if "dbtaskresult" in sql and sql.lstrip().upper().startswith("INSERT"):
            raise DatabaseError("simulated: queue table unavailable")
        return execute(sql, params, many, context)

    second = payload("onMessageAdded_sms_from_customer", Index="1")
    with connection.execute_wrapper(refuse_tasks):
        assert TwilioClient().webhook(second).status_code == 500
    assert not ChatMessage.objects.filter(message_sid=second["MessageSid"]).exists()
    assert WebhookDelivery.objects.get(message_sid=second["MessageSid"]).status == "failed"
    run_worker()
    assert [call.method for call in api_outbox] == ["create_group_chat", "send_message"]


def test_transient_failure_is_deferred_on_a_backend_that_can(on_worker, api_outbox):
    data = payload("onMessageAdded_sms_from_customer")
    TwilioClient().webhook(data)
    LocmemBackend.fail_with = [ApiError("Service unavailable", status=503, transient=True)]
    run_worker()
    message = ChatMessage.objects.get(message_sid=data["MessageSid"])
    assert message.forward_state == "failed"
    [retry] = queued()
    assert retry.run_after == message.conversation.group_chat_retry_at
