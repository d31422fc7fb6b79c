"""The test site as a WSGI application, for the load test's gunicorn workers.

    DJANGO_SETTINGS_MODULE=tests.settings_load gunicorn tests.wsgi:application

A task that fails inside the request (ImmediateBackend) is only recorded on its
TaskResult; its traceback is logged here so that the load test can show it.
"""

import logging
import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings_load")

application = get_wsgi_application()

try:  # Django 6.0+
    from django.tasks.signals import task_finished
except ImportError:  # Django 5.2 with the backport
    from django_tasks.signals import task_finished

logger = logging.getLogger("tests.wsgi")


def _log_failed_task(sender, task_result, **kwargs):
    for error in task_result.errors:
        logger.error("TASK FAILED %s args=%s\n%s", task_result.task.module_path, task_result.args,
                     error.traceback)


task_finished.connect(_log_failed_task, dispatch_uid="tests.wsgi.failed_task")
