"""Settings for the load test's gunicorn workers (tests/system/test_load.py).

The test settings, with the group chat made through the real SDK backend against the
fake Twilio server the test runs (FAKE_TWILIO_URL), so that every worker process
talks to the same Twilio. DATABASE_URL names the test database of the pytest run.
"""

import os

from tests.settings import *  # noqa: F403
from tests.settings import LOGGING, TWILIO_CONVLINK

TWILIO_CONVLINK = {
    **TWILIO_CONVLINK,
    "API_BACKEND": "django_twilio_convlink.api.SdkBackend",
    "ACCOUNT_SID": "AC" + "0123456789abcdef" * 2,
    "API_BASE_URL": os.environ["FAKE_TWILIO_URL"],
}

LOGGING = {
    **LOGGING,
    "formatters": {"plain": {"format": "%(levelname)s %(process)d %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "loggers": {
        # INFO: the log then shows each group chat created and each deadlock retry.
        "django_twilio_convlink": {"handlers": ["console"], "level": "INFO"},
        "django.request": {"handlers": ["console"], "level": "ERROR", "propagate": False},
        "tests.wsgi": {"handlers": ["console"], "level": "ERROR"},
    },
}
