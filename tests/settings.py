"""Test settings. DATABASE_URL picks the database (SQLite in memory by default):

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/test pytest
"""

import importlib.util

import environ

env = environ.Env()

SECRET_KEY = "tests-only"
DEBUG = False
USE_TZ = True
TIME_ZONE = "UTC"
ALLOWED_HOSTS = ["*"]
ROOT_URLCONF = "tests.urls"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

DATABASES = {"default": env.db("DATABASE_URL", default="sqlite://:memory:")}
DATABASES["default"].setdefault("TEST", {})
if DATABASES["default"]["ENGINE"].endswith("mysql"):
    DATABASES["default"]["OPTIONS"] = {"charset": "utf8mb4"}
    DATABASES["default"]["TEST"]["CHARSET"] = "utf8mb4"

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django_twilio_convlink",
    "django_tasks_db",  # the worker test's task backend
    "tests.testapp",
]

MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.auth.middleware.LoginRequiredMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]

TEMPLATES = [{
    "BACKEND": "django.template.backends.django.DjangoTemplates",
    "APP_DIRS": True,
    "OPTIONS": {"context_processors": [
        "django.template.context_processors.request",
        "django.contrib.auth.context_processors.auth",
        "django.contrib.messages.context_processors.messages",
    ]},
}]

AUTH_TOKEN = "7e570a1b2c3d4e5f60718293a4b5c6d7"

TWILIO_CONVLINK = {
    "ACCOUNT_SID": "AC0123456789abcdef0123456789abcdef",
    "AUTH_TOKEN": AUTH_TOKEN,
    "TWILIO_PHONE": "+13153524379",
    "MANAGER_PHONE": "(561) 220-5252",
    "ASSISTANT_IDENTITY": "ASSISTANT",
    "SYSTEM_IDENTITIES": ["+1 555 000 9999", "night-desk"],
    "CONVERSATION_MODEL": "testapp.ChatConversation",
    "MESSAGE_MODEL": "testapp.ChatMessage",
    "BOOKING_MODEL": "testapp.Reservation",
    "APARTMENT_MODEL": "testapp.Property",
    "BOOKING_PHONE_FIELD": "guest__mobile",
    "BOOKING_APARTMENT_FIELD": "unit",
    "BOOKING_START_FIELD": "check_in",
    "BOOKING_END_FIELD": "check_out",
    "BOOKING_WINDOW_DAYS": 90,
    "PHONE_REGION": "US",
    "VALIDATE_SIGNATURE": True,
    "WEBHOOK_URL": None,
    # Twilio calls are recorded, not made (django_twilio_convlink.api.outbox).
    "API_BACKEND": "django_twilio_convlink.api.LocmemBackend",
    "MESSAGING_SERVICE_SID": "MG33333333333333333333333333333333",
    # No download reaches Twilio's media service from the tests: the media tests turn
    # it on against a stand-in server on loopback (tests/media_server.py).
    "MEDIA_DOWNLOAD": False,
}

# Django 6.0+ has the framework built in; Django 5.2 uses the django-tasks backport.
_TASKS = "django.tasks" if importlib.util.find_spec("django.tasks") else "django_tasks"
TASKS = {
    "default": {"BACKEND": f"{_TASKS}.backends.immediate.ImmediateBackend"},
    # Enqueues and runs nothing: for tests that run the task themselves.
    "dummy": {"BACKEND": f"{_TASKS}.backends.dummy.DummyBackend"},
    # Rows in the database, run by `manage.py db_worker`: a real worker setup.
    "database": {"BACKEND": "django_tasks_db.DatabaseBackend"},
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {"django_twilio_convlink": {"handlers": ["console"], "level": "WARNING"}},
}
