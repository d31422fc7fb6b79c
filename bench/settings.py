"""Benchmark settings: the test site (tests/settings.py) plus the baseline app, on the
database BENCH_DATABASE_URL names (bench.part sets it; a test database is created
from it and dropped afterwards)."""

import os
import tempfile

import environ

from tests.settings import *  # noqa: F403
from tests.settings import INSTALLED_APPS, LOGGING, TWILIO_CONVLINK

DATABASES = {"default": environ.Env.db_url_config(
    os.environ.get("BENCH_DATABASE_URL", "sqlite:///bench.sqlite3"))}
DATABASES["default"]["TEST"] = {}
if DATABASES["default"]["ENGINE"].endswith("sqlite3"):
    # On disk, like a real site (an in-memory database would flatter every write).
    DATABASES["default"]["TEST"]["NAME"] = os.path.join(
        tempfile.gettempdir(), f"convlink-bench-{os.getpid()}.sqlite3")
if DATABASES["default"]["ENGINE"].endswith("mysql"):
    DATABASES["default"]["OPTIONS"] = {"charset": "utf8mb4"}
    DATABASES["default"]["TEST"]["CHARSET"] = "utf8mb4"
# gunicorn's workers open the test database the bench process created.
if os.environ.get("BENCH_TEST_DATABASE_NAME"):
    DATABASES["default"]["NAME"] = os.environ["BENCH_TEST_DATABASE_NAME"]

INSTALLED_APPS = [*INSTALLED_APPS, "bench.baseline"]
ROOT_URLCONF = "bench.urls"
# The group chat work belongs to a worker; the webhook only enqueues it: one INSERT
# into django-tasks-db's queue table, inside the event's transaction as the README
# recommends for a queue in the same database (BENCH_ENQUEUE_IN_TRANSACTION=0: after
# the commit, in a transaction of its own).
TWILIO_CONVLINK = {
    **TWILIO_CONVLINK,
    "TASK_BACKEND": os.environ.get("BENCH_TASK_BACKEND", "database"),
    "ENQUEUE_IN_TRANSACTION": os.environ.get("BENCH_ENQUEUE_IN_TRANSACTION", "1") == "1",
}
LOGGING = {**LOGGING, "loggers": {"django_twilio_convlink": {"handlers": ["console"], "level": "ERROR"}}}
