"""The whole demo in one command: database, demo data, an admin login, the server.

    python manage.py rundemo                 # http://127.0.0.1:8000/
    python manage.py rundemo 127.0.0.1:8765

Then, in another terminal: python manage.py send_sample_webhook
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.urls import reverse

from .send_sample_webhook import DEFAULT_URL

DEFAULT_ADDRPORT = "127.0.0.1:8000"
DEMO_USERNAME = DEMO_PASSWORD = "admin"


def browser_origin(addrport: str) -> str:
    """``http://host:port`` for runserver's ``addrport`` ("8000", "0.0.0.0:8000", ...)."""
    host, _, port = addrport.rpartition(":")
    # A server listening on every interface is still reached through loopback here.
    if host in ("", "0.0.0.0", "[::]"):
        host = "127.0.0.1"
    return f"http://{host}:{port}"


class Command(BaseCommand):
    help = "Migrate, load the demo data, create an admin/admin login and start the server."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("addrport", nargs="?", default=DEFAULT_ADDRPORT,
                            help=f"As for runserver (default {DEFAULT_ADDRPORT}).")

    def handle(self, *args: Any, **options: Any) -> None:
        # admin/admin is a well-known password: never create it on a deployed site.
        if not settings.DEBUG:
            raise CommandError("rundemo is for local development only (DJANGO_DEBUG must be on).")
        addrport: str = options["addrport"]
        verbosity: int = options["verbosity"]

        call_command("migrate", interactive=False, verbosity=verbosity)
        call_command("load_demo_data", verbosity=verbosity)
        self._ensure_superuser()

        origin = browser_origin(addrport)
        webhook_url = origin + reverse("twilio_convlink:webhook")
        send = "python manage.py send_sample_webhook"
        if webhook_url != DEFAULT_URL:
            send += f" --url {webhook_url}"
        self.stdout.write(
            "\n"
            f"Admin:   {origin}{reverse('admin:index')}  (user {DEMO_USERNAME}, password "
            f"{DEMO_PASSWORD}; for local use only)\n"
            f"Webhook: {webhook_url}\n\n"
            "Next, in another terminal in this folder, play Twilio:\n"
            f"    {send}\n"
            "then open Twilio conversations in the admin: the conversation is linked to\n"
            "Alice Moreno's current booking at Harbor View 4B.\n"
        )
        # Without the autoreloader: it would restart this whole command in a child
        # process, migrating and loading the demo data a second time.
        call_command("runserver", addrport, use_reloader=False)

    def _ensure_superuser(self) -> None:
        User = get_user_model()
        if User._default_manager.filter(username=DEMO_USERNAME).exists():
            return
        User._default_manager.create_superuser(DEMO_USERNAME, "admin@example.com", DEMO_PASSWORD)
        self.stdout.write(self.style.WARNING(
            f"Created superuser {DEMO_USERNAME!r} with password {DEMO_PASSWORD!r}, for local use only."
        ))
