"""The one way this app reads its settings: ``convlink_settings.NAME``.

Every value comes from the ``TWILIO_CONVLINK`` dict in the site's settings and is
looked up on each access, never cached at import time, so ``override_settings`` in a
site's tests takes effect at once. Values derived from settings at some cost (the
normalized system phones, ``phones.system_authors``) are cached keyed on the settings'
values, so a changed setting is a new key and nothing needs clearing.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

SETTINGS_NAME = "TWILIO_CONVLINK"

# The keywords Twilio's Advanced Opt-Out acts on (the default on long codes and
# messaging services): matched against the whole message, trimmed, case-insensitive.
TWILIO_OPT_OUT_KEYWORDS = ("STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "REVOKE", "OPTOUT")
TWILIO_OPT_IN_KEYWORDS = ("START", "YES", "UNSTOP")

DEFAULTS: dict[str, Any] = {
    "ACCOUNT_SID": "",
    "AUTH_TOKEN": "",
    "TWILIO_PHONE": "",
    "MANAGER_PHONE": "",
    "ASSISTANT_IDENTITY": "ASSISTANT",
    "SYSTEM_IDENTITIES": [],
    "CONVERSATION_MODEL": None,
    "MESSAGE_MODEL": None,
    "BOOKING_MODEL": None,
    "APARTMENT_MODEL": None,
    "BOOKING_PHONE_FIELD": None,
    "BOOKING_APARTMENT_FIELD": None,
    "BOOKING_START_FIELD": None,
    "BOOKING_END_FIELD": None,
    "BOOKING_WINDOW_DAYS": 90,
    # Booking fields the admin's conversation search also looks in (ORM paths from the
    # booking model, e.g. ["guest__full_name", "unit__title"]).
    "BOOKING_SEARCH_FIELDS": [],
    "PHONE_REGION": "US",
    "VALIDATE_SIGNATURE": True,
    "WEBHOOK_URL": None,
    # Twilio caps a Conversations message body at 32 KiB; anything longer is not Twilio.
    "MAX_BODY_LENGTH": 32 * 1024,
    # The group chat (customer, manager, assistant) and the forwarding into it.
    "GROUP_CHAT": True,
    "MESSAGING_SERVICE_SID": "",
    "API_BACKEND": "django_twilio_convlink.api.SdkBackend",
    "API_KEY_SID": "",
    "API_KEY_SECRET": "",
    "API_BASE_URL": None,
    "API_TIMEOUT": 10,
    "TASK_BACKEND": "default",
    "TASK_QUEUE": "default",
    # Enqueue inside the webhook's transaction (for a task backend that stores tasks in
    # the same database, such as django-tasks-db) instead of after its commit.
    "ENQUEUE_IN_TRANSACTION": False,
    "GROUP_CHAT_MAX_ATTEMPTS": 8,
    "GROUP_CHAT_RETRY_DELAY": 60,
    # Webhook security and operation.
    "SECONDARY_AUTH_TOKENS": [],
    "SUBACCOUNT_AUTH_TOKENS": {},
    "WEBHOOK_SHARED_KEYS": {},
    "MAX_REQUEST_BYTES": 128 * 1024,
    "DELIVERY_RETENTION_DAYS": 30,
    # A delivery still "received" this many seconds after it arrived is unfinished: its
    # worker was killed or timed out mid-processing (Twilio gives a webhook 5 s).
    "DELIVERY_UNFINISHED_AFTER": 300,
    # A customer's message that is one of these words opts their phone out (or back in).
    "OPT_OUT_KEYWORDS": list(TWILIO_OPT_OUT_KEYWORDS),
    "OPT_IN_KEYWORDS": list(TWILIO_OPT_IN_KEYWORDS),
    # Customers' photos and files, brought from Twilio's Media Content Service into the
    # site's storage (``media``), off the request path.
    "MEDIA_DOWNLOAD": True,
    "MEDIA_BASE_URL": "https://mcs.us1.twilio.com",
    # An alias of Django's STORAGES.
    "MEDIA_STORAGE": "default",
    # Twilio's MMS limit is 5 MB per message; chat media can be larger.
    "MEDIA_MAX_BYTES": 20 * 1024 * 1024,
    "MEDIA_MAX_ATTEMPTS": 8,
    "MEDIA_RETRY_DELAY": 30,
    # Stored files older than this many days are deleted by prune_twilio_media; None
    # keeps them as long as the site keeps them.
    "MEDIA_RETENTION_DAYS": None,
}

# Settings without which the app cannot define its models or link anything.
REQUIRED = ("CONVERSATION_MODEL", "MESSAGE_MODEL", "BOOKING_MODEL", "APARTMENT_MODEL",
            "BOOKING_PHONE_FIELD", "BOOKING_APARTMENT_FIELD")


class ConvlinkSettings:
    """Attribute access to ``settings.TWILIO_CONVLINK`` with defaults.

    ``convlink_settings.BOOKING_MODEL`` raises ImproperlyConfigured naming the exact
    key to set when a required value is missing, instead of a KeyError deep inside.
    """

    def _user_settings(self) -> dict[str, Any]:
        value = getattr(settings, SETTINGS_NAME, {})
        if not isinstance(value, dict):
            raise ImproperlyConfigured(f"settings.{SETTINGS_NAME} must be a dict.")
        return value

    def __getattr__(self, name: str) -> Any:
        if name not in DEFAULTS:
            raise AttributeError(f"{SETTINGS_NAME} has no setting {name!r}")
        value = self._user_settings().get(name, DEFAULTS[name])
        if name in REQUIRED and not value:
            raise ImproperlyConfigured(
                f'Set {SETTINGS_NAME}["{name}"] in your settings '
                "(see the settings reference in django-twilio-convlink's documentation)."
            )
        return value

    def get(self, name: str, default: Any = None) -> Any:
        """The raw value, or ``default``: for system checks, which must never raise."""
        try:
            value = getattr(self, name)
        except ImproperlyConfigured:
            return default
        return default if value is None else value

    def unknown_keys(self) -> list[str]:
        return sorted(set(self._user_settings()) - set(DEFAULTS))


convlink_settings = ConvlinkSettings()
