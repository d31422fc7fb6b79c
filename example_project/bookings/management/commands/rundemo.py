"""The whole demo in one command: database, demo data, an admin login, the server.

    python manage.py rundemo                 # http://127.0.0.1:8000/
    python manage.py rundemo 127.0.0.1:8765

Then, in another terminal, the command it prints (the app's send_sample_webhook, with
--url so that the running server takes the delivery and its console logs it), which
works from the folder rundemo ran in.
"""

from __future__ import annotations

import os
import shlex
import shutil
import sys
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.urls import reverse

DEFAULT_ADDRPORT = "127.0.0.1:8000"
DEMO_USERNAME = DEMO_PASSWORD = "admin"
MANAGE_PY = Path(__file__).resolve().parents[3] / "manage.py"


def manage_py_command(*args: str) -> str:
    """The command line that runs this site's manage.py with ``args`` from the current
    directory, with the interpreter running now.

    README.rst runs ``.venv/bin/python example_project/manage.py rundemo`` from the
    repository root, without an activated virtualenv: "python manage.py ..." works
    from neither the folder nor the interpreter the user is in.
    """
    here = os.getcwd()
    python = sys.executable or "python"
    if shutil.which("python") == python:
        python = "python"  # the virtualenv is active
    else:
        relative = os.path.relpath(python, here)
        if not relative.startswith(os.pardir):
            python = relative if os.sep in relative else os.path.join(os.curdir, relative)
    try:
        manage_py = os.path.relpath(MANAGE_PY, here)
    except ValueError:  # Windows: another drive
        manage_py = str(MANAGE_PY)
    return shlex.join([python, manage_py, *args])


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
        call_command("load_demo_inbox", verbosity=verbosity)
        self._ensure_superuser()

        origin = browser_origin(addrport)
        webhook_url = origin + reverse("twilio_convlink:webhook")
        send = manage_py_command("send_sample_webhook", "--url", webhook_url)
        self.stdout.write(
            "\n"
            f"Admin:   {origin}{reverse('admin:index')}  (user {DEMO_USERNAME}, password "
            f"{DEMO_PASSWORD}; for local use only)\n"
            f"Webhook: {webhook_url}\n\n"
            "Next, in another terminal, from this same folder, play Twilio:\n"
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
