"""Settings for the killed-worker test's gunicorn (tests/system/test_killed_worker.py).

The test settings without the group chat: the one delivery the test kills mid-way is a
customer's message, and only its own transaction is under test. Errors of the worker
go to its log, which the test shows when something is off. DATABASE_URL names the test
database of the pytest run.
"""

from tests.settings import *  # noqa: F403
from tests.settings import LOGGING, TWILIO_CONVLINK

TWILIO_CONVLINK = {**TWILIO_CONVLINK, "GROUP_CHAT": False}

LOGGING = {
    **LOGGING,
    "formatters": {"plain": {"format": "%(levelname)s %(process)d %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "loggers": {
        "django_twilio_convlink": {"handlers": ["console"], "level": "WARNING"},
        "django.request": {"handlers": ["console"], "level": "ERROR", "propagate": False},
    },
}
