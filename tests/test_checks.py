"""Behaviour 11: settings mistakes surface at `manage.py check`, with IDs and hints."""

import pytest
from django.core.management import call_command

from django_twilio_convlink.checks import check_settings


def ids(**changes) -> set[str]:
    from django.conf import settings
    from django.test import override_settings

    with override_settings(TWILIO_CONVLINK={**settings.TWILIO_CONVLINK, **changes}):
        return {message.id for message in check_settings()}


@pytest.mark.django_db  # Django 6.1 runs the database checks too
def test_the_test_settings_are_clean():
    assert ids() == set()
    call_command("check")


@pytest.mark.parametrize(("changes", "expected"), [
    ({"CONVERSATION_MODEL": None}, "twilio_convlink.E001"),
    ({"BOOKING_MODEL": "testapp.NoSuchModel"}, "twilio_convlink.E002"),
    ({"APARTMENT_MODEL": "not-a-label"}, "twilio_convlink.E002"),
    ({"MESSAGE_MODEL": "testapp.Guest"}, "twilio_convlink.E003"),
    ({"BOOKING_PHONE_FIELD": "guest__phone"}, "twilio_convlink.E004"),
    ({"BOOKING_PHONE_FIELD": "tenant__mobile"}, "twilio_convlink.E004"),
    ({"BOOKING_PHONE_FIELD": "guest"}, "twilio_convlink.E004"),
    ({"BOOKING_PHONE_FIELD": "check_in__mobile"}, "twilio_convlink.E004"),
    ({"BOOKING_APARTMENT_FIELD": "guest"}, "twilio_convlink.E005"),
    ({"BOOKING_APARTMENT_FIELD": "check_in"}, "twilio_convlink.E005"),
    ({"BOOKING_END_FIELD": None}, "twilio_convlink.E006"),
    ({"BOOKING_START_FIELD": "guest"}, "twilio_convlink.E006"),
    ({"BOOKING_WINDOW_DAYS": -1}, "twilio_convlink.E006"),
    ({"AUTH_TOKEN": ""}, "twilio_convlink.E007"),
    ({"MANAGER_PHONE": "call me maybe"}, "twilio_convlink.E008"),
    ({"SYSTEM_IDENTITIES": ["+1 (555"]}, "twilio_convlink.E008"),
    ({"SYSTEM_IDENTITIES": "night-desk"}, "twilio_convlink.E008"),
    ({"PHONE_REGION": "XX"}, "twilio_convlink.E009"),
    ({"VALIDATE_SIGNATURE": False}, "twilio_convlink.W001"),
    ({"TWILIO_PHONE": ""}, "twilio_convlink.W002"),
    ({"AUTH_TOKNE": "typo"}, "twilio_convlink.W003"),
    ({"API_BACKEND": "no.such.Backend"}, "twilio_convlink.E011"),
    ({"TASK_BACKEND": "celery"}, "twilio_convlink.E012"),
    ({"API_BACKEND": "django_twilio_convlink.api.SdkBackend", "ACCOUNT_SID": ""}, "twilio_convlink.W004"),
    ({"MANAGER_PHONE": "+447911123456"}, "twilio_convlink.W005"),
    ({"ENQUEUE_IN_TRANSACTION": True}, "twilio_convlink.W006"),  # the default alias is immediate
    ({"ENQUEUE_IN_TRANSACTION": True, "TASK_BACKEND": "dummy"}, "twilio_convlink.W006"),
])
def test_each_mistake_has_its_id(changes, expected):
    assert expected in ids(**changes)


def test_enqueue_in_transaction_is_quiet_with_a_database_queue():
    assert "twilio_convlink.W006" not in ids(ENQUEUE_IN_TRANSACTION=True, TASK_BACKEND="database")


def test_messages_name_the_setting_and_give_a_hint():
    from django.conf import settings
    from django.test import override_settings

    broken = {**settings.TWILIO_CONVLINK, "BOOKING_PHONE_FIELD": "guest__phone"}
    with override_settings(TWILIO_CONVLINK=broken):
        [message] = check_settings()
    assert 'TWILIO_CONVLINK["BOOKING_PHONE_FIELD"]' in message.msg
    assert "tenant__phone" in message.hint


def test_settings_not_a_dict():
    from django.test import override_settings

    with override_settings(TWILIO_CONVLINK=["oops"]):
        assert [m.id for m in check_settings()] == ["twilio_convlink.E001"]


def test_group_chat_checks_are_quiet_when_it_is_off():
    assert ids(GROUP_CHAT=False, TASK_BACKEND="celery", MANAGER_PHONE="+447911123456") == set()


def test_missing_tasks_framework_says_what_to_install(monkeypatch):
    # Stands in for a Django 5.2 site without the django-tasks backport.
    from django_twilio_convlink import tasks

    monkeypatch.setattr(tasks, "TASKS_AVAILABLE", False)
    [message] = [m for m in check_settings() if m.id == "twilio_convlink.E010"]
    assert "django-tasks" in message.hint


def test_task_queue_must_be_one_the_backend_serves(settings):
    from django_twilio_convlink.tasks import task_backends

    settings.TASKS = {**settings.TASKS, "default": {**settings.TASKS["default"], "QUEUES": ["twilio"]}}
    task_backends.__dict__.pop("settings", None)  # the handler caches the parsed TASKS
    try:
        assert "twilio_convlink.E013" in ids()
        assert "twilio_convlink.E013" not in ids(TASK_QUEUE="twilio")
    finally:
        task_backends.__dict__.pop("settings", None)
