"""A first hour on a fresh site: ``django-admin startproject``, booking models of the
site's own, and the Quickstart's steps with its own files (docs/snippets: the two
concrete models, their admin, TWILIO_CONVLINK with the laptop's placeholder token and
console backend), the URLs, migrate. ``manage.py check`` says nothing about this app; the production advice
waits for ``check --deploy``; the app's own sample command gets a linked conversation.

Each step is a ``manage.py`` in a fresh interpreter, as a developer types them, on
SQLite in the project's folder.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[2] / "docs" / "snippets"

# A site's own booking models, shaped as the Quickstart's settings name them.
BOOKINGS_MODELS = """
from django.db import models


class Tenant(models.Model):
    name = models.CharField(max_length=100)
    phone = models.CharField(max_length=30)


class Apartment(models.Model):
    name = models.CharField(max_length=100)

    def __str__(self):
        return self.name


class Booking(models.Model):
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE)
    apartment = models.ForeignKey(Apartment, on_delete=models.CASCADE)
    start_date = models.DateField()
    end_date = models.DateField()
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
from bookings.models import Apartment, Booking, Tenant
today = datetime.date.today()
Booking.objects.create(apartment=Apartment.objects.create(name="Harbor View 4B"),
                       tenant=Tenant.objects.create(name="Ana", phone="(415) 555-0142"),
                       start_date=today, end_date=today)
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
    for app in ("bookings", "messaging"):
        (root / app).mkdir()
        (root / app / "__init__.py").write_text("")
    (root / "bookings" / "models.py").write_text(BOOKINGS_MODELS)
    # The Quickstart's own files, as its pages include them.
    (root / "messaging" / "models.py").write_text((DOCS / "messaging_models.py").read_text())
    (root / "messaging" / "admin.py").write_text((DOCS / "messaging_admin.py").read_text())
    with open(root / "mysite" / "settings.py", "a") as settings:
        settings.write('\nINSTALLED_APPS += ["django_twilio_convlink", "bookings", "messaging"]\n')
        settings.write((DOCS / "settings.py").read_text())
    (root / "mysite" / "urls.py").write_text(URLS)
    return root


def clean_env() -> dict[str, str]:
    # Not the test suite's settings or database: the project's own, as on a laptop.
    return {key: value for key, value in os.environ.items()
            if key not in ("DJANGO_SETTINGS_MODULE", "DATABASE_URL", "PYTHONPATH", "TWILIO_ACCOUNT_SID",
                           "TWILIO_AUTH_TOKEN")}


def manage(site: Path, *args: str) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "manage.py", *args], capture_output=True, text=True,
                            cwd=site, env=clean_env(), timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def test_check_is_quiet_and_check_deploy_gives_the_production_advice(site):
    result = manage(site, "check")
    assert "twilio_convlink" not in result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout

    # Django's own deployment checks may be errors (6.1: mail.E001 for the console
    # backend of a new project): only the app's warnings are this test's subject.
    advice = manage(site, "check", "--deploy", "--fail-level", "CRITICAL").stderr
    assert "twilio_convlink.W007" in advice  # no worker: Django's default immediate task backend
    assert "twilio_convlink.W008" in advice  # Django's default cache is per process
    # The Quickstart's laptop settings, which a deployed site must not keep.
    assert "twilio_convlink.W013" in advice  # the console backend calls no Twilio
    assert "twilio_convlink.W014" in advice  # the placeholder is no Twilio auth token


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
