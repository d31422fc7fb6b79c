"""The app's one place that binds task functions to the site's task backend, off the
webhook's 5 seconds, for any consumer of the write path.

``django.tasks`` on Django 6.x; the ``django-tasks`` backport on Django 5.2 when the
site installs it (``pip install "django-twilio-convlink[tasks]"``). The task backend
alias and queue come from TASK_BACKEND and TASK_QUEUE, so a site that runs database,
RQ or Celery workers keeps this work there. Tasks take primary keys, never model
instances.

A consumer registers its function under a name from its ``connect()`` (called by
``AppConfig.ready``): ``register(name, function, recovery=...)``. This module imports
no consumer. The task is then ``django_twilio_convlink.tasks.<name>``: the path queued
task rows store and workers import (``forward_customer_message_task``, the group
chat's forward, is one). A task is bound to its backend when first used, never at
import (``bound_task``): a Task validates against its backend when it is made, and a
module that did so at import would have to fall back to something when TASKS lacks
the alias (or fail to import, and take ``manage.py check`` with it).

Without either framework (a plain install on Django 5.2) ``enqueue`` runs the
function in the webhook's process right after its commit: what the ImmediateBackend,
the default of both frameworks, would do. The default install must pass ``manage.py
check`` quietly, so the advice to run a worker is a deployment check (W007, also for
the immediate backend); a site whose settings expect a task backend that is not there
gets error E010 instead.
"""

from __future__ import annotations

import datetime
import inspect
import logging
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache, partial
from typing import Any

from django.conf import global_settings, settings
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed
from django.db import transaction
from django.dispatch import receiver
from django.utils import timezone

from .conf import DEFAULTS, SETTINGS_NAME, convlink_settings

try:  # Django 6.0+
    from django.tasks import task, task_backends
except ImportError:  # Django 5.2 with the backport
    try:
        from django_tasks import task, task_backends  # type: ignore[no-redef,assignment]
    except ImportError:
        task = task_backends = None  # type: ignore[assignment]

logger = logging.getLogger(__name__)
TASKS_AVAILABLE = task is not None


@dataclass(frozen=True)
class Registered:
    """A registered task: the function a worker runs (named as the task's path),
    what takes over when enqueuing fails, and the exceptions the function records
    and logs itself (not logged again when it runs in this process)."""

    function: Callable[..., Any]
    recovery: str
    recorded: tuple[type[BaseException], ...]


_registry: dict[str, Registered] = {}


def register(name: str, function: Callable[..., Any], *, recovery: str,
             recorded: tuple[type[BaseException], ...] = ()) -> None:
    """Make ``function`` the task ``django_twilio_convlink.tasks.<name>``.

    ``recovery`` says, in the log line of a failed enqueue, what picks the work up
    instead (the site's cron command, say): the caller's data must record the work
    as due before it enqueues. Registering the same function again changes nothing;
    another function under a taken name is an error.
    """
    if not name.isidentifier() or (name in globals() and name not in _registry):
        # A module attribute would shadow __getattr__: workers would import it instead.
        raise ImproperlyConfigured(f"{name!r} cannot name a task of {__name__}.")
    if inspect.iscoroutinefunction(function):
        raise ImproperlyConfigured(f"Task {name!r}: coroutine functions are not supported.")
    known = _registry.get(name)
    if known is not None:
        if known.function.__wrapped__ is not function:  # type: ignore[attr-defined]
            raise ImproperlyConfigured(f"Task name {name!r} is already registered for another function.")
        return

    def run(*args: Any, **kwargs: Any) -> Any:
        return function(*args, **kwargs)

    # A worker finds a task by Task.module_path, the function's __module__ and
    # __qualname__, and requires a module-level Task at that path: the function a
    # backend sees carries the public name, which __getattr__ below resolves.
    run.__module__, run.__name__, run.__qualname__ = __name__, name, name
    run.__doc__ = function.__doc__
    run.__wrapped__ = function  # type: ignore[attr-defined]  # the signature the backend reads
    _registry[name] = Registered(run, recovery, recorded)


def _registered(name: str) -> Registered:
    try:
        return _registry[name]
    except KeyError:
        raise ImproperlyConfigured(
            f"No task {name!r} is registered: is django_twilio_convlink in INSTALLED_APPS, and has "
            f"django.setup() run in this process? Known: {sorted(_registry) or 'none'}.") from None


def bound_task(name: str) -> Any:
    """Task ``name`` on TASK_BACKEND and TASK_QUEUE as the settings are now.

    Raises what the tasks framework raises for them, with its message: an alias not in
    TASKS, a backend that cannot be imported, a queue it does not serve. Raises
    ImproperlyConfigured without a tasks framework (system check E010/W007) or for a
    name no consumer registered.
    """
    if not TASKS_AVAILABLE:
        raise ImproperlyConfigured('No tasks framework: on Django 5.2 pip install '
                                   '"django-twilio-convlink[tasks]" (system check twilio_convlink.E010).')
    return _bind(_registered(name).function, convlink_settings.TASK_BACKEND, convlink_settings.TASK_QUEUE)


@cache
def _bind(function: Callable[..., Any], backend: str, queue_name: str) -> Any:
    # Cached on the settings that choose the binding; a failure is not cached, so the
    # next enqueue after a fix binds again.
    return task(backend=backend, queue_name=queue_name)(function)


@receiver(setting_changed)
def _unbind_on_tasks_change(*, setting: str, **kwargs: Any) -> None:
    # A Task was validated against the backends of one TASKS (override_settings in tests).
    if setting == "TASKS":
        _bind.cache_clear()


def __getattr__(name: str) -> Any:
    # PEP 562: resolved on each lookup, so the import path a worker uses gives the task
    # bound with that process's settings, and importing this module binds nothing.
    if name in _registry:
        if not TASKS_AVAILABLE:
            return _registry[name].function
        try:
            return bound_task(name)
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


def enqueue(name: str, *args: Any) -> None:
    """Enqueue task ``name`` with ``args`` when the current transaction commits.

    If enqueuing fails (a broker down, a TASK_BACKEND not in TASKS), the failure is
    logged with the task backend's own error and the task's ``recovery``: the caller
    has recorded the work as due in its own rows, so nothing is lost. Without a tasks
    framework the function runs in this process once the transaction has committed
    (``_run_here``).

    With ENQUEUE_IN_TRANSACTION (a task backend whose tasks are rows of this
    database) the task is written inside the current transaction instead: it commits
    with the caller's rows or not at all, and the webhook saves a commit. A failure to
    enqueue then fails the caller's transaction (the webhook's event, which Twilio
    redelivers).
    """
    registered = _registered(name)
    if convlink_settings.ENQUEUE_IN_TRANSACTION and TASKS_AVAILABLE:
        bound_task(name).enqueue(*args)
        return
    transaction.on_commit(partial(_enqueue_now, name, registered, args))


def _enqueue_now(name: str, registered: Registered, args: tuple[Any, ...]) -> None:
    if not TASKS_AVAILABLE:
        _run_here(name, registered, args)
        return
    try:
        bound_task(name).enqueue(*args)
    except Exception as exc:
        logger.exception("Enqueuing task %s(%s) on task backend %r failed (%s: %s); %s", name, _args(args),
                         convlink_settings.TASK_BACKEND, type(exc).__name__, exc, registered.recovery)


def _run_here(name: str, registered: Registered, args: tuple[Any, ...]) -> None:
    """Run the task in this process, after the commit, as the ImmediateBackend would:
    a failure is logged, never raised, so the webhook's answer does not depend on it;
    ``recovery`` takes it from there."""
    expected = task_settings_in_use()
    if expected:
        logger.error("No tasks framework, and these settings expect a task backend: %s. Running task "
                     "%s(%s) in this process (system check twilio_convlink.E010).",
                     ", ".join(expected), name, _args(args))
    try:
        registered.function(*args)
    except registered.recorded:
        pass  # recorded and logged by the task's function
    except Exception:
        logger.exception("Task %s(%s) failed in this process; %s", name, _args(args), registered.recovery)


def enqueue_at(name: str, when: datetime.datetime, *args: Any) -> bool:
    """Enqueue task ``name`` to run at ``when`` (or now, if that is past) where the
    task backend can defer (django-tasks-db can). Returns whether it did; where it
    cannot, the task's ``recovery`` (a cron command) must. Failures are logged."""
    if not TASKS_AVAILABLE:
        return False
    try:
        bound = bound_task(name)
        if not bound.get_backend().supports_defer:
            return False
        bound.using(run_after=max(when, timezone.now())).enqueue(*args)
        return True
    except Exception:
        logger.exception("Scheduling task %s(%s) for %s failed", name, _args(args), when)
        return False


def _args(args: tuple[Any, ...]) -> str:
    return ", ".join(map(repr, args))
