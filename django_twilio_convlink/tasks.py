"""The group chat work as tasks of Django's Tasks API, off the webhook's 5 seconds.

``django.tasks`` on Django 6.x; the ``django-tasks`` backport on Django 5.2 (system
check twilio_convlink.E010 says so when it is missing). The task backend alias and
queue come from TASK_BACKEND and TASK_QUEUE, so a site that runs database, RQ or
Celery workers keeps this work there. Tasks take primary keys, never model instances.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import partial
from typing import Any

from django.db import transaction
from django.utils import timezone

from .api import ApiError
from .conf import convlink_settings
from .group_chat import forward_customer_message

try:  # Django 6.0+
    from django.tasks import task, task_backends
except ImportError:  # Django 5.2 with the backport
    try:
        from django_tasks import task, task_backends
    except ImportError:
        task = task_backends = None

logger = logging.getLogger(__name__)
TASKS_AVAILABLE = task is not None


def forward_customer_message_task(message_pk: int) -> str:
    """Ensure the group chat and forward one message (a Task when a framework is here)."""
    try:
        return forward_customer_message(message_pk)
    except ApiError as error:
        if error.transient:
            _schedule_retry(message_pk)
        raise


_run_in_process = forward_customer_message_task

def _as_task(func: Callable[[int], str]) -> Any:
    # Bound to the function's own name: workers find a task by its module path. The
    # decorator validates against a backend at import, so it gets the configured one
    # (a site whose TASKS has no "default" alias can still import this module); if
    # that is misconfigured, the default, so that `manage.py check` can import this
    # module and report E012 instead of crashing.
    for options in ({"backend": convlink_settings.TASK_BACKEND, "queue_name": convlink_settings.TASK_QUEUE},
                    {}):
        try:
            return task(**options)(func)
        except Exception as exc:
            logger.debug("Task %s not bound with %s: %s", func.__name__, options, exc)
    return func


if TASKS_AVAILABLE:
    forward_customer_message_task = _as_task(forward_customer_message_task)


def _configured_task():
    return forward_customer_message_task.using(
        backend=convlink_settings.TASK_BACKEND, queue_name=convlink_settings.TASK_QUEUE)


def enqueue_forward(message_pk: int) -> None:
    """Enqueue the forward of ``message_pk`` when the current transaction commits.

    If enqueuing fails (a broker down), the message stays ``pending`` and
    ``manage.py retry_group_chats`` picks it up: the customer's message is saved
    either way.

    With ENQUEUE_IN_TRANSACTION (a task backend whose tasks are rows of this
    database) the task is written inside the current transaction instead: it commits
    with the message or not at all, and the webhook saves a commit. A failure to
    enqueue then fails the event, which Twilio redelivers.
    """
    if convlink_settings.ENQUEUE_IN_TRANSACTION and TASKS_AVAILABLE:
        _configured_task().enqueue(message_pk)
        return
    transaction.on_commit(partial(_enqueue_now, message_pk))


def _enqueue_now(message_pk: int) -> None:
    if not TASKS_AVAILABLE:
        logger.error("No tasks framework: forwarding %s in the request. Install django-tasks "
                     "(see system check twilio_convlink.E010).", message_pk)
        try:
            _run_in_process(message_pk)
        except ApiError:
            pass  # recorded on the conversation; retry_group_chats takes it from here
        return
    try:
        _configured_task().enqueue(message_pk)
    except Exception:
        logger.exception("Enqueuing the group chat forward of message %s failed; "
                         "retry_group_chats will pick it up", message_pk)


def _schedule_retry(message_pk: int) -> None:
    """Re-enqueue at the retry time where the task backend can defer (django-tasks-db
    can); elsewhere retry_group_chats, run from cron, does it."""
    if not TASKS_AVAILABLE:
        return
    from . import get_message_model

    retry_at = (get_message_model()._default_manager.filter(pk=message_pk)
                .values_list("forward_retry_at", flat=True).first())
    backend = task_backends[convlink_settings.TASK_BACKEND]
    if retry_at is None or not backend.supports_defer:
        return
    try:
        _configured_task().using(run_after=max(retry_at, timezone.now())).enqueue(message_pk)
    except Exception:
        logger.exception("Scheduling the retry of message %s failed", message_pk)
