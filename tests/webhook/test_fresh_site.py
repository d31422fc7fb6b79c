"""A first hour on a fresh site (issue #22): ``django-admin startproject``, a booking
model of the site's own, and the install steps (INSTALLED_APPS, the two concrete
models, TWILIO_CONVLINK with a placeholder token and the console API backend, the
URLs, migrate). ``manage.py check`` says nothing about this app; the production advice
waits for ``check --deploy``; the app's own sample command gets a linked conversation.

Each step is a ``manage.py`` in a fresh interpreter, as a developer types them, on
SQLite in the project's folder.
"""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

BOOKINGS_MODELS = """
from django.db import models


class Apartment(models.Model):
    name = models.CharField(max_length=100)

    def __str__(self):
        return self.name


class Booking(models.Model):
    apartment = models.ForeignKey(Apartment, on_delete=models.CASCADE)
    guest_phone = models.CharField(max_length=30)
    start_date = models.DateField()
    end_date = models.DateField()
"""

MESSAGING_MODELS = """
from django_twilio_convlink.models import AbstractTwilioConversation, AbstractTwilioMessage


class TwilioConversation(AbstractTwilioConversation):
    pass


class TwilioMessage(AbstractTwilioMessage):
    pass
"""

SETTINGS = """

INSTALLED_APPS += ["django_twilio_convlink", "bookings", "messaging"]

TWILIO_CONVLINK = {
    "AUTH_TOKEN": "placeholder-auth-token",  # any value until the site talks to Twilio
    "API_BACKEND": "django_twilio_convlink.api.ConsoleBackend",
    "TWILIO_PHONE": "+13153524379",
    "MANAGER_PHONE": "+15612205252",
    "CONVERSATION_MODEL": "messaging.TwilioConversation",
    "MESSAGE_MODEL": "messaging.TwilioMessage",
    "BOOKING_MODEL": "bookings.Booking",
    "APARTMENT_MODEL": "bookings.Apartment",
    "BOOKING_PHONE_FIELD": "guest_phone",
    "BOOKING_APARTMENT_FIELD": "apartment",
    "BOOKING_START_FIELD": "start_date",
    "BOOKING_END_FIELD": "end_date",
}
"""

URLS = """
from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    path("twilio/", include("django_twilio_convlink.urls")),
]
"""

A_STAY = """
import datetime
from bookings.models import Apartment, Booking
today = datetime.date.today()
Booking.objects.create(apartment=Apartment.objects.create(name="Harbor View 4B"),
                       guest_phone="(415) 555-0142", start_date=today, end_date=today)
"""

# The customer's conversation (the group chat the console backend "made" is the other one).
SHOW_CONVERSATION = """
from messaging.models import TwilioConversation
conversation = TwilioConversation.objects.get(is_group_chat=False)
print(conversation.apartment, "|", conversation.messages.get().body)
"""


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """The project folder, after startproject and the install steps."""
    root = tmp_path_factory.mktemp("fresh") / "mysite"
    root.mkdir()
    subprocess.run([sys.executable, "-m", "django", "startproject", "mysite", str(root)], check=True,
                   env=clean_env(), timeout=120)
    for app, models in (("bookings", BOOKINGS_MODELS), ("messaging", MESSAGING_MODELS)):
        (root / app).mkdir()
        (root / app / "__init__.py").write_text("")
        (root / app / "models.py").write_text(textwrap.dedent(models))
    with open(root / "mysite" / "settings.py", "a") as settings:
        settings.write(SETTINGS)
    (root / "mysite" / "urls.py").write_text(URLS)
    return root


def clean_env() -> dict[str, str]:
    # Not the test suite's settings or database: the project's own, as on a laptop.
    return {key: value for key, value in os.environ.items()
            if key not in ("DJANGO_SETTINGS_MODULE", "DATABASE_URL", "PYTHONPATH")}


def manage(site: Path, *args: str) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "manage.py", *args], capture_output=True, text=True,
                            cwd=site, env=clean_env(), timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def test_check_is_quiet_and_check_deploy_gives_the_production_advice(site):
    result = manage(site, "check")
    assert "twilio_convlink" not in result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout

    advice = manage(site, "check", "--deploy").stderr
    assert "twilio_convlink.W007" in advice  # no worker: Django's default immediate task backend
    assert "twilio_convlink.W008" in advice  # Django's default cache is per process
    # No credentials for the media service: the console backend talks to no Twilio yet.
    assert "twilio_convlink.W012" in advice


def test_the_sample_command_gets_a_linked_conversation(site):
    manage(site, "makemigrations", "bookings", "messaging")
    manage(site, "migrate", "-v0")
    manage(site, "shell", "-v0", "-c", A_STAY)
    out = manage(site, "send_sample_webhook").stdout
    assert "onConversationAdded from +14155550142" in out and "onMessageAdded from +14155550142" in out
    last = out.splitlines()[-1]
    assert last.startswith("Conversation CH") and 'linked to booking "Booking object (1)" (automatic)' in last
    linked = manage(site, "shell", "-v0", "-c", SHOW_CONVERSATION).stdout
    assert linked.strip() == "Harbor View 4B | Hi, the heater in Harbor View 4B is not working"
