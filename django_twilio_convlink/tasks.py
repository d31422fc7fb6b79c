"""The group chat work as tasks of Django's Tasks API, off the webhook's 5 seconds.

``django.tasks`` on Django 6.x; the ``django-tasks`` backport on Django 5.2 when the
site installs it (``pip install "django-twilio-convlink[tasks]"``). The task backend
alias and queue come from TASK_BACKEND and TASK_QUEUE, so a site that runs database,
RQ or Celery workers keeps this work there. Tasks take primary keys, never model
instances.

The task is bound to its backend in one place, ``bound_task()``, when first used and
never at import: a Task validates against its backend when it is made, and a module
that did so at import would have to fall back to something when TASKS lacks the alias
(or fail to import, and take ``manage.py check`` with it). Workers import the task as
``forward_customer_message_task``; that name resolves to ``bound_task()`` too.

Without either framework (a plain install on Django 5.2) the forward runs in the
webhook's process right after its commit: what the ImmediateBackend, the default of
both frameworks, would do. The default install must pass ``manage.py check``, so that
is a warning (W007) suggesting a worker; a site whose settings expect a task backend
that is not there gets error E010 instead.
"""

from __future__ import annotations

import logging
from functools import cache, partial
from typing import Any

from django.conf import global_settings, settings
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed
from django.db import transaction
from django.dispatch import receiver
from django.utils import timezone

from .api import ApiError
from .conf import DEFAULTS, SETTINGS_NAME, convlink_settings
from .group_chat import forward_customer_message

try:  # Django 6.0+
    from django.tasks import task, task_backends
except ImportError:  # Django 5.2 with the backport
    try:
        from django_tasks import task, task_backends  # type: ignore[no-redef,assignment]
    except ImportError:
        task = task_backends = None  # type: ignore[assignment]

logger = logging.getLogger(__name__)
TASKS_AVAILABLE = task is not None
_TASK_NAME = "forward_customer_message_task"


def _forward_customer_message(message_pk: int) -> str:
    """Ensure the group chat and forward one message: the task's function."""
    try:
        return forward_customer_message(message_pk)
    except ApiError as error:
        if error.transient:
            _schedule_retry(message_pk)
        raise


# A worker finds a task by Task.module_path, the function's __module__ and __qualname__,
# and requires a Task at that path. The function therefore carries the public name,
# whose module attribute is the bound Task (__getattr__ below), and lives under another.
_forward_customer_message.__name__ = _forward_customer_message.__qualname__ = _TASK_NAME


def bound_task() -> Any:
    """The forward as a Task on TASK_BACKEND and TASK_QUEUE as the settings are now.

    Raises what the tasks framework raises for them, with its message: an alias not in
    TASKS, a backend that cannot be imported, a queue it does not serve. Raises
    ImproperlyConfigured without a tasks framework (system check E010/W007).
    """
    if not TASKS_AVAILABLE:
        raise ImproperlyConfigured('No tasks framework: on Django 5.2 pip install '
                                   '"django-twilio-convlink[tasks]" (system check twilio_convlink.E010).')
    return _bind(convlink_settings.TASK_BACKEND, convlink_settings.TASK_QUEUE)


@cache
def _bind(backend: str, queue_name: str) -> Any:
    # Cached on the settings that choose the binding; a failure is not cached, so the
    # next enqueue after a fix binds again.
    return task(backend=backend, queue_name=queue_name)(_forward_customer_message)


@receiver(setting_changed)
def _unbind_on_tasks_change(*, setting: str, **kwargs: Any) -> None:
    # A Task was validated against the backends of one TASKS (override_settings in tests).
    if setting == "TASKS":
        _bind.cache_clear()


def __getattr__(name: str) -> Any:
    # PEP 562: resolved on each lookup, so the import path a worker uses gives the task
    # bound with that process's settings, and importing this module binds nothing.
    if name == _TASK_NAME:
        if not TASKS_AVAILABLE:
            return _forward_customer_message
        try:
            return bound_task()
        except Exception as exc:
            # An attribute lookup must fail with AttributeError (hasattr, and
            # import_string, which makes it the ImportError a worker handles), still
            # with the framework's reason.
            raise AttributeError(f"{__name__}.{name} cannot be bound to its task backend: "
                                 f"{type(exc).__name__}: {exc}") from exc
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def task_settings_in_use() -> list[str]:
    """The settings of this site that expect a task backend: TASKS, and any task
    setting of TWILIO_CONVLINK changed from its default. Without a tasks framework
    they cannot be honoured (system check E010)."""
    names = [f'{SETTINGS_NAME}["{key}"]' for key in ("TASK_BACKEND", "TASK_QUEUE", "ENQUEUE_IN_TRANSACTION")
             if convlink_settings.get(key) != DEFAULTS[key]]
    # Django 6.0+ defines TASKS in its global settings; Django 5.2 does not.
    if getattr(settings, "TASKS", None) not in (None, getattr(global_settings, "TASKS", None)):
        names.insert(0, "settings.TASKS")
    return names


def enqueue_forward(message_pk: int) -> None:
    """Enqueue the forward of ``message_pk`` when the current transaction commits.

    If enqueuing fails (a broker down, a TASK_BACKEND not in TASKS), the failure is
    logged with the task backend's own error, the message stays ``pending`` and
    ``manage.py retry_group_chats`` picks it up: the customer's message is saved
    either way. Without a tasks framework the forward runs in this process once the
    transaction has committed (``_forward_now``).

    With ENQUEUE_IN_TRANSACTION (a task backend whose tasks are rows of this
    database) the task is written inside the current transaction instead: it commits
    with the message or not at all, and the webhook saves a commit. A failure to
    enqueue then fails the event, which Twilio redelivers.
    """
    if convlink_settings.ENQUEUE_IN_TRANSACTION and TASKS_AVAILABLE:
        bound_task().enqueue(message_pk)
        return
    transaction.on_commit(partial(_enqueue_now, message_pk))


def _enqueue_now(message_pk: int) -> None:
    if not TASKS_AVAILABLE:
        _forward_now(message_pk)
        return
    try:
        bound_task().enqueue(message_pk)
    except Exception as exc:
        logger.exception("Enqueuing the group chat forward of message %s on task backend %r failed "
                         "(%s: %s); retry_group_chats will pick it up", message_pk,
                         convlink_settings.TASK_BACKEND, type(exc).__name__, exc)


def _forward_now(message_pk: int) -> None:
    """Forward in this process, after the commit, as the ImmediateBackend would run
    the task: a failure is recorded on the message and its conversation
    (``forward_customer_message``) and logged, never raised, so the webhook's answer
    does not depend on Twilio; retry_group_chats takes it from there."""
    expected = task_settings_in_use()
    if expected:
        logger.error("No tasks framework, and these settings expect a task backend: %s. Forwarding "
                     "message %s in this process (system check twilio_convlink.E010).",
                     ", ".join(expected), message_pk)
    try:
        _forward_customer_message(message_pk)
    except ApiError:
        pass  # recorded and logged by forward_customer_message
    except Exception:
        logger.exception("The group chat forward of message %s failed in this process; recorded on "
                         "the message for retry_group_chats", message_pk)


def _schedule_retry(message_pk: int) -> None:
    """Re-enqueue at the retry time where the task backend can defer (django-tasks-db
    can); elsewhere retry_group_chats, run from cron, does it."""
    if not TASKS_AVAILABLE:
        return
    from . import get_message_model

    retry_at = (get_message_model()._default_manager.filter(pk=message_pk)
                .values_list("forward_retry_at", flat=True).first())
    if retry_at is None:
        return
    try:
        retry = bound_task()
        if retry.get_backend().supports_defer:
            retry.using(run_after=max(retry_at, timezone.now())).enqueue(message_pk)
    except Exception:
        logger.exception("Scheduling the retry of message %s failed", message_pk)
