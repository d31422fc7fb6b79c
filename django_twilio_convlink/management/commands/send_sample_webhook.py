"""Play Twilio: post a signed sample Conversations webhook to this site's own endpoint.

    python manage.py send_sample_webhook
    python manage.py send_sample_webhook --from "+12125550199" --body "When can I check in?"
    python manage.py send_sample_webhook --url http://127.0.0.1:8000/twilio/webhook/  # a running server
    python manage.py send_sample_webhook --event onConversationAdded
    python manage.py send_sample_webhook --conversation-sid CH... --index 1   # same conversation
    python manage.py send_sample_webhook --wrong-signature                   # see a 403

In this process it refuses a site whose API_BACKEND calls Twilio (the sample would get
a real group chat and text the manager) unless given --allow-twilio-calls; with --url
the running server's settings decide.

By default it posts what Twilio sends when a customer texts the site's number: an
``onConversationAdded`` (whose binding names the customer's phone) and the customer's
``onMessageAdded``. It posts them in this process, through Django's test client, to
the URL named ``twilio_convlink:webhook``: no server, no Twilio account, and the rows
land in the site's database as a real delivery's would. ``--url`` posts over HTTP to
a running server instead. Each delivery is signed exactly as Twilio signs it, with
``RequestValidator`` over the URL and the form fields, keyed with
``TWILIO_CONVLINK["AUTH_TOKEN"]`` (a placeholder will do on a local site), for
``WEBHOOK_URL`` when it is set, as the site validates.

The command exits non-zero when the site answers anything but 200 (403 with
``--wrong-signature``), naming the status and the reason the app logged.
"""

from __future__ import annotations

import datetime
import logging
import secrets
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import DatabaseError
from django.db.models import Model
from django.test import Client
from django.urls import NoReverseMatch, reverse
from django.utils import timezone

from ...api import calls_twilio
from ...conf import SETTINGS_NAME, convlink_settings
from ...linking.lookup import get_booking_from_phone
from ...swappable import get_conversation_model
from ...testing import post_signed, sample_delivery, signature, signing_token

DEFAULT_PHONE = "+14155550142"
BOTH = "both"
EVENTS = [BOTH, "onConversationAdded", "onMessageAdded"]
# Made up but well formed: the app rejects a payload whose SIDs are not.
SAMPLE_ACCOUNT_SID = "AC0123456789abcdef0123456789abcdef"
SAMPLE_CHAT_SERVICE_SID = "IS88888888888888888888888888888888"
SAMPLE_MESSAGING_SERVICE_SID = "MG33333333333333333333333333333333"
SAMPLE_PARTICIPANT_SID = "MB44444444444444444444444444444444"
WRONG_TOKEN = "not-the-auth-token"


def new_sid(prefix: str) -> str:
    return prefix + secrets.token_hex(16)


def twilio_timestamp() -> str:
    # Twilio's format: UTC, milliseconds, "Z" suffix.
    now = timezone.now().astimezone(datetime.UTC)
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"


def conversation_added(conversation_sid: str, phone: str) -> dict[str, str]:
    """An SMS to the site's number auto-creates a conversation; its binding names the
    customer's phone, so the app links before the first message arrives."""
    now = twilio_timestamp()
    data = {
        "AccountSid": convlink_settings.ACCOUNT_SID or SAMPLE_ACCOUNT_SID,
        "EventType": "onConversationAdded",
        "Source": "SMS",
        "RetryCount": "0",
        "ConversationSid": conversation_sid,
        "ChatServiceSid": SAMPLE_CHAT_SERVICE_SID,
        "MessagingServiceSid": SAMPLE_MESSAGING_SERVICE_SID,
        "DateCreated": now,
        "DateUpdated": now,
        "FriendlyName": "",
        "UniqueName": "",
        "Attributes": "{}",
        "State": "active",
        "MessagingBinding.Address": phone,
    }
    if convlink_settings.TWILIO_PHONE:
        data["MessagingBinding.ProxyAddress"] = convlink_settings.TWILIO_PHONE
    return data


def message_added(conversation_sid: str, phone: str, body: str, *, index: int = 0,
                  message_sid: str | None = None) -> dict[str, str]:
    """The customer's SMS, as its conversation's message number ``index``."""
    return sample_delivery(
        AccountSid=convlink_settings.ACCOUNT_SID or SAMPLE_ACCOUNT_SID, ConversationSid=conversation_sid,
        MessageSid=message_sid or new_sid("IM"), MessagingServiceSid=SAMPLE_MESSAGING_SERVICE_SID,
        ParticipantSid=SAMPLE_PARTICIPANT_SID, Index=str(index), DateCreated=twilio_timestamp(),
        Author=phone, Body=body)


def sample_body(phone: str) -> str:
    """A customer's report about the apartment of the booking the app would link
    ``phone`` to ("my apartment" when none, or when this database cannot say)."""
    try:
        booking = get_booking_from_phone(phone)
        apartment = booking and getattr(booking, convlink_settings.BOOKING_APARTMENT_FIELD)
    except DatabaseError:  # not migrated, or --url to a server on another database
        apartment = None
    return f"Hi, the heater in {apartment or 'my apartment'} is not working"


@dataclass
class Answer:
    status: int
    text: str  # the body of a 4xx/5xx: the reason the view gives Twilio
    logged: list[str]  # what the app logged at WARNING or above (in this process only)
    signed_url: str  # the URL the signature was computed for


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@contextmanager
def app_warnings() -> Iterator[list[str]]:
    """The app's WARNING (and worse) log lines while the block runs."""
    handler = _Collect()
    logger = logging.getLogger("django_twilio_convlink")
    logger.addHandler(handler)
    try:
        yield handler.messages
    finally:
        logger.removeHandler(handler)


def _start(text: str) -> str:
    # A DEBUG error page is HTML of many kilobytes: its start says enough.
    text = text.strip()
    return text[:300] + ("..." if len(text) > 300 else "")


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # urllib then raises HTTPError with the 3xx


def allowed_host() -> str:
    """A Host the site accepts (ALLOWED_HOSTS; with DEBUG and none set, "localhost"):
    the test client's "testserver" is allowed only inside a test run."""
    for pattern in settings.ALLOWED_HOSTS:
        host = pattern.lstrip(".")  # ".example.com" matches example.com itself too
        if host and host != "*":
            return host
    return "localhost"


def public_url() -> str:
    """WEBHOOK_URL, or "": the site validates signatures against it when it is set,
    whatever address the request came to, so that is the URL Twilio signs."""
    return convlink_settings.WEBHOOK_URL or ""


class Command(BaseCommand):
    help = ("Post a signed sample Twilio Conversations webhook to this site's own endpoint: in this "
            "process by default, or over HTTP to --url.")

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--from", dest="phone", default=DEFAULT_PHONE,
                            help=f"The customer's phone, any format (default {DEFAULT_PHONE}).")
        parser.add_argument("--body", default=None,
                            help="The message text (default: a report about the apartment of the "
                                 "booking that phone links to).")
        parser.add_argument("--url", default=None,
                            help="Post over HTTP to this webhook URL of a running server, e.g. "
                                 "http://127.0.0.1:8000/twilio/webhook/ (default: in this process, "
                                 "no server needed).")
        parser.add_argument("--event", choices=EVENTS, default=None,
                            help="What to post (default: both, onConversationAdded then onMessageAdded; "
                                 "only onMessageAdded with --conversation-sid).")
        parser.add_argument("--conversation-sid", default=None,
                            help="CH + 32 hex digits, to continue a conversation; default a new one.")
        parser.add_argument("--message-sid", default=None,
                            help="IM + 32 hex digits; default a new one each run. Reuse one to see a "
                                 "redelivery stored once.")
        parser.add_argument("--index", type=int, default=0,
                            help="The message's position in its conversation (default 0).")
        parser.add_argument("--wrong-signature", action="store_true",
                            help="Sign with a wrong token, to see the site reject it with 403.")
        parser.add_argument("--allow-twilio-calls", action="store_true",
                            help="Post in this process although API_BACKEND calls Twilio: the sample "
                                 "then makes a real group chat and texts the manager (default: refused).")

    def handle(self, *args: Any, **options: Any) -> None:
        if not convlink_settings.AUTH_TOKEN:
            raise CommandError(
                f'{SETTINGS_NAME}["AUTH_TOKEN"] is not set: this command signs as Twilio does, with '
                "the site's token. On a local site without a Twilio account any placeholder will do.")
        phone: str = options["phone"]
        conversation_sid = options["conversation_sid"] or new_sid("CH")
        event = options["event"] or ("onMessageAdded" if options["conversation_sid"] else BOTH)
        deliveries = []
        if event in (BOTH, "onConversationAdded"):
            deliveries.append(conversation_added(conversation_sid, phone))
        if event in (BOTH, "onMessageAdded"):
            body = options["body"] if options["body"] is not None else sample_body(phone)
            deliveries.append(message_added(conversation_sid, phone, body, index=options["index"],
                                            message_sid=options["message_sid"]))

        url: str | None = options["url"]
        wrong = options["wrong_signature"]
        # Only the group chat calls Twilio for a sample (it has no files): its forward.
        forwarded = convlink_settings.GROUP_CHAT and any(
            data["EventType"] == "onMessageAdded" for data in deliveries)
        if not url and not wrong and forwarded and calls_twilio() and not options["allow_twilio_calls"]:
            # A sample is a made-up customer: on a site with a real account it would get a
            # real group chat, and its text would reach the manager's (and its own) phone.
            raise CommandError(
                "API_BACKEND calls Twilio (the SDK backend): posted here, the sample would create a real "
                "group chat and text the manager. Use it on a site with the console backend, or give "
                "--allow-twilio-calls if that is what you want.")
        for data in deliveries:
            answer = self.post_http(url, data, wrong) if url else self.post_here(data, wrong)
            sids = ", ".join(data[key] for key in ("ConversationSid", "MessageSid") if key in data)
            self.stdout.write(f"{data['EventType']} from {phone} ({sids}): HTTP {answer.status}")
            expected = 403 if wrong else 200
            if answer.status != expected:
                raise CommandError(self.failure(answer, expected, url))
            if wrong:
                why = (f"The app logged: {answer.logged[-1]}" if answer.logged
                       else "The server's log says why.")
                self.stdout.write(self.style.SUCCESS(f"Rejected with 403, as it should be. {why}"))
                return
        self.stdout.write(self.style.SUCCESS(self.outcome(conversation_sid, phone, url)))

    def post_here(self, data: dict[str, str], wrong: bool) -> Answer:
        try:
            path = reverse("twilio_convlink:webhook")
        except NoReverseMatch:
            raise CommandError(
                "The webhook is not in the site's URLconf: add "
                'path("twilio/", include("django_twilio_convlink.urls")) to its urlpatterns, or give '
                "--url.") from None
        host = allowed_host()
        # A site that redirects http to https would answer the plain request 301.
        secure = bool(settings.SECURE_SSL_REDIRECT)
        url = public_url() or f"{'https' if secure else 'http'}://{host}{path}"
        token = WRONG_TOKEN if wrong else signing_token()
        with app_warnings() as logged:
            # A site's middleware that raises must read as "answered 500", not as a traceback.
            response = post_signed(Client(raise_request_exception=False), path, data, secret=token, url=url,
                                   secure=secure, HTTP_HOST=host)
        text = _start(response.content.decode(errors="replace")) if response.status_code >= 400 else ""
        return Answer(response.status_code, text, logged, url)

    def post_http(self, url: str, data: dict[str, str], wrong: bool) -> Answer:
        token = WRONG_TOKEN if wrong else signing_token()
        try:
            scheme = urllib.parse.urlsplit(url).scheme
        except ValueError:  # "http://[::1": a bracket never closed
            scheme = ""
        if scheme not in ("http", "https"):
            raise CommandError(f"--url must be an http:// or https:// URL, not {url!r}.")
        request = urllib.request.Request(
            url, data=urllib.parse.urlencode(data).encode(), method="POST",
            headers={"Content-Type": "application/x-www-form-urlencoded", "User-Agent": "TwilioProxy/1.1",
                     "X-Twilio-Signature": signature(public_url() or url, data, token)})
        try:
            # Not following redirects: urllib would follow a 301 (APPEND_SLASH,
            # SECURE_SSL_REDIRECT) with a GET, and Twilio does not follow them either.
            with urllib.request.build_opener(_NoRedirects).open(request, timeout=10) as response:
                status, body = response.status, response.read()
        except urllib.error.HTTPError as exc:
            status, body = exc.code, exc.read()
            if 300 <= status < 400:
                body = f"a redirect to {exc.headers.get('Location')}: give that URL".encode()
        except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
            raise CommandError(f"Could not reach {url} ({getattr(exc, 'reason', exc)}). Is the site "
                               "running? Without --url the command posts in this process.") from None
        return Answer(status, _start(body.decode(errors="replace")), [], public_url() or url)

    def failure(self, answer: Answer, expected: int, url: str | None) -> str:
        where = url or "the webhook (in this process)"
        reason = "; ".join(answer.logged) or answer.text or "no reason given"
        message = f"{where} answered {answer.status}, not {expected}: {reason}"
        if answer.status == 403 and expected == 200:
            message += (f". The signature was computed for {answer.signed_url} "
                        f'with {SETTINGS_NAME}["AUTH_TOKEN"]: the site must validate with the same token '
                        "and URL (WEBHOOK_URL).")
        elif url and not answer.logged:
            message += " (the server's log says more)"
        return message

    def outcome(self, conversation_sid: str, phone: str, url: str | None) -> str:
        """The success line: the conversation, whether it is linked to a booking, and its
        page in the admin (absolute on the server --url names)."""
        Conversation = get_conversation_model()
        try:
            conversation = Conversation._base_manager.select_related("booking").filter(
                conversation_sid=conversation_sid).first()
        except DatabaseError:
            conversation = None
        if conversation is None:  # --url to a server on another database
            return f"Conversation {conversation_sid} stored by the server at {url}."
        booking: Model | None = conversation.booking
        linked = (f'linked to booking "{booking}" ({conversation.link_method})' if booking is not None
                  else f"not linked to a booking (none found for {phone})")
        line = f"Conversation {conversation_sid} {linked}"
        opts = Conversation._meta
        try:
            path = reverse(f"admin:{opts.app_label}_{opts.model_name}_change", args=[conversation.pk])
        except NoReverseMatch:  # the site has not registered the model in the admin
            return line + "."
        if url:
            parts = urllib.parse.urlsplit(url)
            path = urllib.parse.urlunsplit((parts.scheme, parts.netloc, path, "", ""))
        return f"{line}: {path}"
