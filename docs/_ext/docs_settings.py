"""The smallest Django settings that let autodoc import the package: the test app's
models play the site's (its booking is ``Reservation``, its phone ``guest__mobile``)."""

SECRET_KEY = "docs-only"
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}}
INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django_twilio_convlink",
    "tests.testapp",
]
TWILIO_CONVLINK = {
    "AUTH_TOKEN": "docs-placeholder",
    "TWILIO_PHONE": "+13153524379",
    "MANAGER_PHONE": "+15612205252",
    "CONVERSATION_MODEL": "testapp.ChatConversation",
    "MESSAGE_MODEL": "testapp.ChatMessage",
    "BOOKING_MODEL": "testapp.Reservation",
    "APARTMENT_MODEL": "testapp.Property",
    "BOOKING_PHONE_FIELD": "guest__mobile",
    "BOOKING_APARTMENT_FIELD": "unit",
    "API_BACKEND": "django_twilio_convlink.api.ConsoleBackend",
    "MEDIA_DOWNLOAD": False,
}
