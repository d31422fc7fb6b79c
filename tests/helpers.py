"""What more than one test module uses: the realistic payloads, SIDs, the customer's phone,
a test client that signs as Twilio does, deliveries from several threads at once, and a
recorder of the public signals. Fixtures live in the conftest.py files, which import
from here; test modules import from here, never from each other or from a conftest."""

import json
import secrets
import threading
from functools import partial
from pathlib import Path

from django.conf import settings
from django.db import connections
from django.test import Client

from django_twilio_convlink import testing
from django_twilio_convlink.signature import SIGNATURE_HEADER
from tests.testapp.models import ChatMessage

WEBHOOK_PATH = "/twilio/webhook/"
CUSTOMER = "+14155550142"

# One realistic Twilio form payload per webhook event.
PAYLOADS = json.loads((Path(__file__).parent / "payloads.json").read_text())


def sid(prefix: str) -> str:
    return prefix + secrets.token_hex(16)


def payload(name: str, **overrides: str) -> dict[str, str]:
    """A realistic Twilio form payload from payloads.json, with fresh SIDs unless given."""
    data = dict(PAYLOADS[name])
    if "MessageSid" in data:
        data["MessageSid"] = sid("IM")
    data.update(overrides)
    return data


class TwilioClient(Client):
    """A test client that signs its POSTs exactly as Twilio does, with the SDK."""

    def __init__(self, *args, token: str | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.token = token or settings.AUTH_TOKEN

    def webhook(self, data: dict[str, str], *, path: str = WEBHOOK_PATH,
                signed_url: str | None = None, signature: str | None = None,
                secure: bool = False, headers: dict[str, str] | None = None, **extra):
        # A given signature (a forged one) goes over the one post_signed computes.
        forced = {SIGNATURE_HEADER: signature} if signature is not None else {}
        return testing.post_signed(self, path, data, secret=self.token, url=signed_url, secure=secure,
                                   headers={**forced, **(headers or {})}, **extra)


THREADS = 8


def deliver_at_once(deliveries: list[dict[str, str]]) -> list[int]:
    """Each delivery signed and posted from its own thread, all released at once; the
    HTTP statuses."""
    return at_once([partial(_deliver, data) for data in deliveries])


def _deliver(data: dict[str, str]) -> int:
    return TwilioClient().webhook(data).status_code


def at_once(calls: list) -> list:
    """Run ``calls`` in threads released together by a barrier; their results (in the
    order they finished). An exception in a thread fails the caller's test."""
    barrier = threading.Barrier(len(calls))
    results: list = []
    errors: list[BaseException] = []

    def run(call) -> None:
        try:
            barrier.wait(timeout=10)
            results.append(call())
        except BaseException as exc:  # reported by the test, not lost in the thread
            errors.append(exc)
        finally:
            connections.close_all()  # each thread opened its own connection

    threads = [threading.Thread(target=run, args=(call,)) for call in calls]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    return results


MESSAGE_SIGNALS = ("message_received", "message_updated", "message_removed")


class Recorder:
    """A site's receiver: records each signal with its sender and arguments, and
    whether the change it announces is visible in the database (committed)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, type, dict]] = []

    def receiver(self, name: str):
        def receive(sender, signal, **kwargs):
            committed = None
            if "media" in kwargs:
                from django_twilio_convlink.models import StoredMedia

                committed = StoredMedia.objects.filter(pk=kwargs["media"].pk, state="stored").exists()
            elif kwargs.get("message") is not None:
                committed = ChatMessage.objects.filter(pk=kwargs["message"].pk).exists()
            self.calls.append((name, sender, {**kwargs, "committed": committed}))
        return receive

    def names(self) -> list[str]:
        """The signals received, but message_received for the group chat's copies of
        customer messages (their own test checks those)."""
        return [name for name, _, kwargs in self.calls if kwargs.get("origin") != "group_chat"]
