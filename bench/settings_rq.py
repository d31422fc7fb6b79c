"""Settings for the RQ workers of bench/rq.py: the benchmark's settings with django-rq,
the "rq" task backend and the group chat's work sent to it (tests/settings_rq.py), the
real SDK backend pointed at the fake Twilio the benchmark runs (FAKE_TWILIO_URL)."""

import os

from bench.settings import *  # noqa: F403
from bench.settings import INSTALLED_APPS, TWILIO_CONVLINK
from tests.settings_rq import ON_RQ, RQ_QUEUES, RQ_TASKS  # noqa: F401 (RQ_QUEUES: a setting)

INSTALLED_APPS = [*INSTALLED_APPS, "django_rq"]
TASKS = RQ_TASKS
# ACCOUNT_SID and AUTH_TOKEN are the test site's, which the fake Twilio expects.
TWILIO_CONVLINK = {**TWILIO_CONVLINK, **ON_RQ, "API_BASE_URL": os.environ.get("FAKE_TWILIO_URL", "")}
