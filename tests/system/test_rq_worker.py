"""The worker tier on RQ: the group chat's Twilio calls run in a real ``rqworker``
process (django-rq, with django-tasks-rq as the task backend) on the local Redis.

The webhook, in this process, answers without calling Twilio and leaves one job on
the queue; a redelivery of the same message adds none. The worker, a separate process
on this run's test database (settings tests/settings_rq.py), then creates the group
chat and posts the copy at the fake Twilio API (tests/fake_twilio.py) through the real
SDK: once. Needs PostgreSQL or MariaDB (the worker shares the test database) and
Redis (``.ci/run`` starts it when down).
"""

import subprocess
import sys
import time

import pytest
from django.test import override_settings

from tests.factories import GuestFactory, ReservationFactory
from tests.fake_twilio import ACCOUNT_SID, fake_twilio
from tests.helpers import TwilioClient, payload
from tests.settings_rq import ON_RQ, RQ_QUEUES, RQ_TASKS
from tests.system.processes import ROOT, site_environment
from tests.testapp.models import ChatConversation, ChatMessage

pytestmark = [pytest.mark.concurrency, pytest.mark.django_db(transaction=True)]

django_rq = pytest.importorskip("django_rq", reason="django-tasks-rq is not installed (the test extra)")
CUSTOMER = "+14155550142"
WORKER_TIMEOUT = 60


@pytest.fixture
def queue():
    redis = pytest.importorskip("redis")
    try:
        redis.Redis.from_url(RQ_QUEUES["convlink"]["URL"]).ping()
    except redis.exceptions.ConnectionError as error:
        pytest.fail(f"Redis is not reachable at {RQ_QUEUES['convlink']['URL']}: {error}")
    with override_settings(RQ_QUEUES=RQ_QUEUES):
        rq_queue = django_rq.get_queue("convlink")
        rq_queue.empty()
        yield rq_queue
        rq_queue.empty()


def run_worker(twilio_url: str, log_path) -> str:
    """``manage.py rqworker --burst``: works off the queue, says "done, quitting", and
    exits. rq's worker may then hang joining its pub/sub thread (rq/rq#1613, seen here
    with rq 3.0 now and then): once it has said it is done it is stopped, and its exit
    status is not held against it; a worker that never says it is done fails the test."""
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "django", "rqworker", "--burst", "--job-class", "django_tasks_rq.Job",
             "convlink"], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
            env=site_environment("tests.settings_rq", FAKE_TWILIO_URL=twilio_url))
    deadline = time.monotonic() + WORKER_TIMEOUT
    try:
        while process.poll() is None and time.monotonic() < deadline:
            if "done, quitting" in log_path.read_text(errors="replace"):
                try:
                    process.wait(timeout=3)
                except subprocess.TimeoutExpired:
                    break
            time.sleep(0.1)
    finally:
        if process.poll() is None:
            process.terminate()
            process.wait(timeout=10)
    text = log_path.read_text(errors="replace")
    assert "done, quitting" in text, text
    return text


def test_an_rq_worker_forwards_a_customers_message_once(settings, queue, tmp_path):
    ReservationFactory(guest=GuestFactory(mobile=CUSTOMER))
    data = payload("onMessageAdded_sms_from_customer")
    with fake_twilio() as twilio, override_settings(
            TASKS=RQ_TASKS, TWILIO_CONVLINK={**settings.TWILIO_CONVLINK, **ON_RQ, "ACCOUNT_SID": ACCOUNT_SID,
                                             "API_BASE_URL": twilio.url}):
        client = TwilioClient()
        assert client.webhook(data).status_code == 200
        assert client.webhook({**data, "RetryCount": "1"}).status_code == 200  # Twilio retried
        # The webhook never waits for Twilio: one job on the queue, none for the retry.
        assert twilio.created == {} and queue.count == 1
        [job] = queue.get_jobs()
        assert job.func_name == "django_twilio_convlink.tasks.forward_customer_message_task"
        assert ChatMessage.objects.get(message_sid=data["MessageSid"]).forward_state == "pending"

        log = run_worker(twilio.url, tmp_path / "rqworker.log")
        message = ChatMessage.objects.get(message_sid=data["MessageSid"])
        assert message.forward_state == "sent", log
        assert "Successfully completed django_twilio_convlink.tasks.forward_customer_message_task" in log
        group = ChatConversation.objects.get(is_group_chat=True)
        assert sum(twilio.created.values()) == 1 and twilio.conflicts == {}
        assert [m["body"] for m in twilio.messages[group.conversation_sid]] == [message.body]
        assert twilio.unexpected == []
        # Nothing left behind: no job waiting, none failed.
        assert queue.count == 0 and queue.failed_job_registry.count == 0
