"""Settings for the RQ worker of tests/system/test_rq_worker.py, and what the test
process itself overrides to enqueue onto the same queue.

The test site with django-rq and a django-tasks-rq task backend ("rq") on the Redis
CONVLINK_REDIS_URL names (database 15 of the local Redis by default), the group chat's
work sent to it (TASK_BACKEND "rq", TASK_QUEUE "convlink"), and the real SDK backend
pointed at the fake Twilio the test runs (FAKE_TWILIO_URL). DATABASE_URL names the
test database of the pytest run.
"""

import os

from tests.settings import *  # noqa: F403
from tests.settings import INSTALLED_APPS, LOGGING, TASKS, TWILIO_CONVLINK

RQ_QUEUES = {"convlink": {"URL": os.environ.get("CONVLINK_REDIS_URL", "redis://127.0.0.1:6379/15")}}
RQ_TASKS = {**TASKS, "rq": {"BACKEND": "django_tasks_rq.RQBackend", "QUEUES": ["convlink"]}}
ON_RQ = {"TASK_BACKEND": "rq", "TASK_QUEUE": "convlink", "ENQUEUE_IN_TRANSACTION": False,
         "API_BACKEND": "django_twilio_convlink.api.SdkBackend"}

INSTALLED_APPS = [*INSTALLED_APPS, "django_rq"]
TASKS = RQ_TASKS
TWILIO_CONVLINK = {**TWILIO_CONVLINK, **ON_RQ, "API_BASE_URL": os.environ.get("FAKE_TWILIO_URL", "")}

LOGGING = {
    **LOGGING,
    "formatters": {"plain": {"format": "%(levelname)s %(process)d %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "loggers": {
        "django_twilio_convlink": {"handlers": ["console"], "level": "INFO"},
        "rq.worker": {"handlers": ["console"], "level": "INFO"},
    },
}
