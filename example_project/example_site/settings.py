"""Settings of the example site, read from the environment (and ``.env`` when present).

With no ``.env`` and no variables set, the site runs for local development: SQLite in
``db.sqlite3`` next to ``manage.py``, DEBUG on, and development secrets that are fine
to publish because they protect nothing. ``.env.example`` documents every variable.
"""

from pathlib import Path

import environ

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
# Only when present: a missing .env is the normal case for a first run, and
# django-environ would otherwise warn about it on every command.
if (BASE_DIR / ".env").is_file():
    environ.Env.read_env(BASE_DIR / ".env")

DEBUG = env.bool("DJANGO_DEBUG", default=True)

# The development defaults exist only with DEBUG on: a deployment that forgets to set
# a real secret stops at startup with the variable's name instead of running with a
# key (or a Twilio token) that anyone can read in this file.
def _dev_default(value: str) -> str | environ.NoValue:
    return value if DEBUG else environ.Env.NOTSET


SECRET_KEY = env.str("DJANGO_SECRET_KEY", default=_dev_default("django-insecure-example-site-dev-only"))
ALLOWED_HOSTS = env.list("DJANGO_ALLOWED_HOSTS", default=["localhost", "127.0.0.1"])

# A cache every process shares (CACHE_URL to use Redis or Memcached): the app counts
# forged webhook requests there, and a per-process LocMem cache would count in each
# worker alone (system check twilio_convlink.W008).
CACHES = {"default": env.cache_url("CACHE_URL", default=f"filecache://{BASE_DIR / '.cache'}")}

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_twilio_convlink",
    "bookings",
    "messaging",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "example_site.urls"
WSGI_APPLICATION = "example_site.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {
    "default": env.db("DATABASE_URL", default=f"sqlite:///{BASE_DIR / 'db.sqlite3'}"),
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

LANGUAGE_CODE = "en-us"
# Bookings are chosen by "today" in this time zone: set it to where the apartments are.
TIME_ZONE = env.str("DJANGO_TIME_ZONE", default="UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
# Customers' photos and files, downloaded from Twilio, land in the default storage
# (TWILIO_CONVLINK["MEDIA_STORAGE"] names another STORAGES alias, an S3 bucket, say).
# The admin serves them to staff who may view the conversation; nothing here gives
# them a public URL.
MEDIA_ROOT = env.path("DJANGO_MEDIA_ROOT", default=BASE_DIR / "media")

def _has_django_tasks() -> bool:
    # Django 6.0+ ships django.tasks; Django 5.2 uses the django-tasks backport.
    from importlib.util import find_spec

    return find_spec("django.tasks") is not None


TWILIO_CONVLINK = {
    "ACCOUNT_SID": env.str("TWILIO_ACCOUNT_SID", default=""),
    "AUTH_TOKEN": env.str("TWILIO_AUTH_TOKEN", default=_dev_default("dev-auth-token-not-secret")),
    "TWILIO_PHONE": env.str("TWILIO_PHONE", default="+13153524379"),
    "MANAGER_PHONE": env.str("MANAGER_PHONE", default="+15612205252"),
    "ASSISTANT_IDENTITY": "ASSISTANT",
    "SYSTEM_IDENTITIES": [],
    "CONVERSATION_MODEL": "messaging.TwilioConversation",
    "MESSAGE_MODEL": "messaging.TwilioMessage",
    "BOOKING_MODEL": "bookings.Booking",
    "APARTMENT_MODEL": "bookings.Apartment",
    "BOOKING_PHONE_FIELD": "tenant__phone",
    "BOOKING_APARTMENT_FIELD": "apartment",
    "BOOKING_START_FIELD": "start_date",
    "BOOKING_END_FIELD": "end_date",
    "BOOKING_WINDOW_DAYS": 90,
    # The admin's conversation search finds a tenant's name and an apartment too.
    "BOOKING_SEARCH_FIELDS": ["tenant__name", "apartment__name"],
    "PHONE_REGION": "US",
    "VALIDATE_SIGNATURE": True,
    # The public URL configured in Twilio, when a tunnel or proxy makes the URL Django
    # sees differ from the one Twilio signed.
    "WEBHOOK_URL": env.str("WEBHOOK_URL", default=None),
    # The group chat (customer + manager + assistant). Without an account the calls go
    # to the console backend, which logs them instead of calling Twilio.
    "GROUP_CHAT": env.bool("TWILIO_GROUP_CHAT", default=True),
    "MESSAGING_SERVICE_SID": env.str("TWILIO_MESSAGING_SERVICE_SID", default=""),
    "API_BACKEND": env.str(
        "TWILIO_API_BACKEND",
        default="django_twilio_convlink.api.SdkBackend" if env.str("TWILIO_ACCOUNT_SID", default="")
        else "django_twilio_convlink.api.ConsoleBackend",
    ),
    # Without an account there is no media service to download from.
    "MEDIA_DOWNLOAD": env.bool("TWILIO_MEDIA_DOWNLOAD",
                               default=bool(env.str("TWILIO_ACCOUNT_SID", default=""))),
}

# Group chat work runs as tasks. The default ImmediateBackend runs them right after
# the webhook's commit, in the request; see docs/worker.rst for running them on a worker.
TASKS = {"default": {"BACKEND": env.str(
    "TASKS_BACKEND",
    default="django.tasks.backends.immediate.ImmediateBackend" if _has_django_tasks()
    else "django_tasks.backends.immediate.ImmediateBackend",
)}}

# The app logs each link it makes and each webhook it refuses (with the reason and
# the URL it validated against): show both in the runserver console.
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {
        "django_twilio_convlink": {"handlers": ["console"], "level": "INFO", "propagate": False},
    },
}
