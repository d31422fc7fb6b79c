"""The forward as a Task: bound to TASK_BACKEND and TASK_QUEUE where it is used
(``tasks.bound_task(FORWARD_TASK)``), never at import. A worker imports it by path and gets that
same binding; a misconfigured alias surfaces as the tasks framework's own error."""

import importlib.util
import logging
import os
import subprocess
import sys
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import call_command
from django.test import override_settings
from django.utils.module_loading import import_string

from django_twilio_convlink import tasks
from django_twilio_convlink.group_chat import FORWARD_TASK
from tests.factories import GuestFactory, ReservationFactory
from tests.helpers import TwilioClient, payload
from tests.testapp.models import ChatMessage

pytestmark = pytest.mark.django_db

ROOT = Path(__file__).resolve().parents[2]
TASK_PATH = "django_twilio_convlink.tasks.forward_customer_message_task"
# Django 6.0+ has the framework built in; Django 5.2 uses the django-tasks backport.
FRAMEWORK = "django.tasks" if importlib.util.find_spec("django.tasks") else "django_tasks"
Task = import_string(f"{FRAMEWORK}.base.Task")
# The framework's own errors: a backend alias not in TASKS, a task its backend refuses.
InvalidTaskBackend = type(tasks.task_backends).exception_class
TaskException = import_string(f"{FRAMEWORK}.exceptions.TaskException")


def convlink(settings, **changes) -> dict:
    return {**settings.TWILIO_CONVLINK, **changes}


@pytest.fixture
def twilio_queue(settings):
    """The site's worker serves a "twilio" queue of the database backend."""
    settings.TASKS = {**settings.TASKS, "database": {**settings.TASKS["database"],
                                                     "QUEUES": ["default", "twilio"]}}
    settings.TWILIO_CONVLINK = convlink(settings, TASK_BACKEND="database", TASK_QUEUE="twilio")


@pytest.fixture
def deliver(django_capture_on_commit_callbacks):
    """Deliver a webhook and run what it enqueued after its commit, as in production."""
    ReservationFactory(guest=GuestFactory(mobile="(415) 555-0142"))

    def deliver(data):
        with django_capture_on_commit_callbacks(execute=True):
            assert TwilioClient().webhook(data).status_code == 200
    return deliver


def test_a_worker_imports_the_task_bound_to_the_configured_backend_and_queue(twilio_queue):
    imported = import_string(TASK_PATH)  # what django-tasks-db's db_worker does with task_path
    assert isinstance(imported, Task)
    assert (imported.backend, imported.queue_name) == ("database", "twilio")
    assert imported.module_path == TASK_PATH  # stored on enqueue, imported again by the worker
    assert imported is tasks.bound_task(FORWARD_TASK)  # one binding, whoever asks


def test_changed_settings_bind_the_task_again(settings):
    bound = tasks.bound_task(FORWARD_TASK)
    assert (bound.backend, bound.queue_name) == ("default", "default")
    with override_settings(TWILIO_CONVLINK=convlink(settings, TASK_BACKEND="dummy")):
        assert import_string(TASK_PATH).backend == "dummy"
    assert import_string(TASK_PATH).backend == "default"


def test_a_binding_does_not_outlive_the_tasks_setting_it_was_validated_against(settings):
    default = settings.TASKS["default"]
    settings.TWILIO_CONVLINK = convlink(settings, TASK_QUEUE="twilio")
    settings.TASKS = {**settings.TASKS, "default": {**default, "QUEUES": ["twilio"]}}
    assert tasks.bound_task(FORWARD_TASK).queue_name == "twilio"
    settings.TASKS = {**settings.TASKS, "default": default}  # serves the "default" queue only
    with pytest.raises(TaskException, match="Queue 'twilio' is not valid"):
        tasks.bound_task(FORWARD_TASK)


def test_an_alias_not_in_tasks_logs_the_frameworks_error_and_leaves_the_message_for_retry(
        settings, deliver, api_outbox, caplog):
    settings.TWILIO_CONVLINK = convlink(settings, TASK_BACKEND="nightly")
    with pytest.raises(InvalidTaskBackend, match="'nightly'") as raised:
        tasks.bound_task(FORWARD_TASK)
    data = payload("onMessageAdded_sms_from_customer")
    with caplog.at_level(logging.ERROR, logger="django_twilio_convlink"):
        deliver(data)  # the webhook still answers 200: the message is saved
    [record] = [r for r in caplog.records if r.name == "django_twilio_convlink.tasks"]
    assert f"{type(raised.value).__name__}: {raised.value}" in record.getMessage()
    assert "AttributeError" not in record.getMessage()
    assert api_outbox == []
    assert ChatMessage.objects.get(message_sid=data["MessageSid"]).forward_state == "pending"

    settings.TWILIO_CONVLINK = convlink(settings, TASK_BACKEND="default")
    call_command("retry_group_chats", "--now", stdout=StringIO())
    assert ChatMessage.objects.get(message_sid=data["MessageSid"]).forward_state == "sent"
    assert [call.method for call in api_outbox] == ["create_group_chat", "send_message"]


SITE_WITHOUT_THE_ALIAS = """
import tests.settings as site
site.TASKS = {"nightly": site.TASKS["default"]}  # no "default", which TASK_BACKEND names
import django
django.setup()
import django_twilio_convlink.tasks as tasks
print("hasattr:", hasattr(tasks, "forward_customer_message_task"))
try:
    tasks.forward_customer_message_task
except AttributeError as exc:  # what import_string and a worker expect of a lookup
    print(f"bound: {exc}")
from django.core.management import execute_from_command_line
execute_from_command_line(["manage.py", "check"])
"""


def test_a_site_whose_tasks_lacks_the_alias_imports_the_module_and_gets_E012():
    # A fresh interpreter: the first import of the module is the one under test.
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings", "DATABASE_URL": "sqlite://:memory:"}
    result = subprocess.run([sys.executable, "-c", SITE_WITHOUT_THE_ALIAS], capture_output=True,
                            text=True, cwd=ROOT, env=env, timeout=120)
    assert "Traceback" not in result.stderr, result.stderr
    assert "hasattr: False" in result.stdout
    assert "bound: django_twilio_convlink.tasks.forward_customer_message_task cannot be bound to its task " \
           "backend: InvalidTaskBackend" in result.stdout and "'default'" in result.stdout
    assert result.returncode == 1  # the check's error, not a crash
    assert "twilio_convlink.E012" in result.stderr
