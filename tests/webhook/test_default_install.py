"""The default install: ``pip install django-twilio-convlink`` on Django 5.2, no
``tasks`` extra, the default settings (GROUP_CHAT on).

Each test runs a fresh interpreter in which neither ``django.tasks`` nor the
``django_tasks`` backport can be imported (``sys.modules[name] = None`` before
Django starts), with the test settings minus what needs a tasks framework:
``TASKS`` and the ``django_tasks_db`` app. SQLite in memory whatever DATABASE_URL
says: the subprocess migrates its own database.
"""

import configparser
import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import django
import pytest

ROOT = Path(__file__).resolve().parents[2]

django_5_2 = pytest.mark.skipif(
    django.VERSION >= (6, 0), reason="Django 6.0+ has django.tasks built in: it cannot be missing")


def test_the_metadata_names_every_django_and_python_that_tox_tests():
    tox = configparser.ConfigParser()
    tox.read(ROOT / "tox.ini")
    envlist = tox["tox"]["envlist"]
    djangos = {f"{major}.{minor}" for major, minor in re.findall(r"django(\d)(\d+)", envlist)}
    pythons = sorted({int(minor) for minor in re.findall(r"py3(\d+)", envlist)})
    setup = configparser.ConfigParser()
    setup.read(ROOT / "setup.cfg")
    classifiers = set(setup["metadata"]["classifiers"].split("\n"))
    assert djangos and {f"Framework :: Django :: {version}" for version in djangos} <= classifiers
    assert pythons and {f"Programming Language :: Python :: 3.{minor}" for minor in pythons} <= classifiers
    # python_requires starts at the oldest Python tested.
    assert setup["options"]["python_requires"] == f">=3.{pythons[0]}"
    urls = setup["metadata"]["project_urls"]
    assert all(f"{name} = https://" in urls for name in ("Documentation", "Changelog", "Source"))

WITHOUT_TASKS = """
import sys
sys.modules["django.tasks"] = None  # Django 5.2 ...
sys.modules["django_tasks"] = None  # ... without the django-tasks backport
import tests.settings as site
del site.TASKS
site.INSTALLED_APPS = [app for app in site.INSTALLED_APPS if app != "django_tasks_db"]
site.TWILIO_CONVLINK = {**site.TWILIO_CONVLINK, **CHANGES}
import django
django.setup()
from django_twilio_convlink import tasks
assert not tasks.TASKS_AVAILABLE
"""


def run_without_tasks(script: str, **changes) -> subprocess.CompletedProcess:
    """Run ``script`` after Django's setup in an interpreter without a tasks framework,
    with ``changes`` to TWILIO_CONVLINK."""
    code = f"CHANGES = {changes!r}\n" + WITHOUT_TASKS + textwrap.dedent(script)
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings", "DATABASE_URL": "sqlite://:memory:"}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                          env=env, timeout=120)


MANAGE = """
from django.core.management import execute_from_command_line
execute_from_command_line(["manage.py", *ARGS])
"""


def manage(*args: str, **changes) -> subprocess.CompletedProcess:
    return run_without_tasks(f"ARGS = {list(args)!r}\n" + MANAGE, **changes)


@django_5_2
def test_check_passes_and_only_check_deploy_suggests_a_worker():
    result = manage("check")
    assert result.returncode == 0, result.stderr
    assert "twilio_convlink.W007" not in result.stderr
    assert "twilio_convlink.E010" not in result.stderr
    result = manage("check", "--deploy")
    assert result.returncode == 0, result.stderr
    assert "twilio_convlink.W007" in result.stderr and "No tasks framework" in result.stderr
    assert "twilio_convlink.E010" not in result.stderr


@django_5_2
def test_migrate_runs():
    result = manage("migrate", "--verbosity", "1")
    assert result.returncode == 0, result.stderr
    assert "Applying twilio_convlink.0001_initial... OK" in result.stdout


@django_5_2
@pytest.mark.parametrize("changes", [
    {"TASK_BACKEND": "celery"},
    {"TASK_QUEUE": "twilio"},
    {"ENQUEUE_IN_TRANSACTION": True},
])
def test_settings_that_expect_a_task_backend_still_stop_at_E010(changes):
    result = manage("check", **changes)
    assert result.returncode == 1
    assert "twilio_convlink.E010" in result.stderr
    assert "django-twilio-convlink[tasks]" in result.stderr


WEBHOOK = """
import json, logging
from urllib.parse import urlencode
from django.core.management import call_command
from django.db import connection
from django.test import Client
from twilio.request_validator import RequestValidator
from django_twilio_convlink import api
from tests.factories import GuestFactory, ReservationFactory
from tests.helpers import payload
from tests.testapp.models import ChatMessage

call_command("migrate", verbosity=0)
stay = ReservationFactory(guest=GuestFactory(mobile="(415) 555-0142"))
errors = []
logging.getLogger("django_twilio_convlink").addHandler(
    type("Errors", (logging.Handler,), {"emit": lambda self, record: errors.append(record.getMessage())})(
        logging.ERROR))

in_transaction = []
record = api.LocmemBackend._record
def watched(self, method, kwargs, perform):
    in_transaction.append(connection.in_atomic_block)
    return record(self, method, kwargs, perform)
api.LocmemBackend._record = watched
api.LocmemBackend.fail_with = FAIL_WITH

data = payload("onMessageAdded_sms_from_customer")
url = "http://testserver/twilio/webhook/"
response = Client().post(
    "/twilio/webhook/", data=urlencode(data), content_type="application/x-www-form-urlencoded",
    headers={"X-Twilio-Signature": RequestValidator(site.AUTH_TOKEN).compute_signature(url, data)})
message = ChatMessage.objects.get(message_sid=data["MessageSid"])
print(json.dumps({
    "status": response.status_code,
    "calls": [call.method for call in api.outbox],
    "in_transaction": in_transaction,
    "forward_state": message.forward_state,
    "group_chat_error": message.conversation.group_chat_error,
    "errors": errors,
}))
"""


def deliver_without_tasks(fail_with: str = "[]") -> dict:
    result = run_without_tasks(
        "from django_twilio_convlink.api import ApiError\n"
        f"FAIL_WITH = {fail_with}\n" + WEBHOOK)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.splitlines()[-1])


@django_5_2
def test_a_webhook_forwards_in_its_process_after_the_commit():
    outcome = deliver_without_tasks()
    assert outcome["status"] == 200
    assert outcome["calls"] == ["create_group_chat", "send_message"]
    assert outcome["in_transaction"] == [False, False]  # Twilio is never called inside it
    assert outcome["forward_state"] == "sent"
    assert outcome["errors"] == []  # the default install is no error


@django_5_2
def test_a_failed_in_process_forward_is_recorded_and_left_to_retry_group_chats():
    outcome = deliver_without_tasks('[ApiError("Service unavailable", status=503, transient=True)]')
    assert outcome["status"] == 200  # the customer's message is saved
    assert outcome["forward_state"] == "failed"
    assert "Service unavailable" in outcome["group_chat_error"]
