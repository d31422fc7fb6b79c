"""Play Twilio: post a signed Conversations webhook to the running site.

    python manage.py send_sample_webhook
    python manage.py send_sample_webhook --from "+12125550199" --body "When can I check in?"
    python manage.py send_sample_webhook --event onConversationAdded
    python manage.py send_sample_webhook --conversation-sid CH... --index 1   # same thread
    python manage.py send_sample_webhook --wrong-signature                   # see a 403

The payload has the fields Twilio sends (see shared/twilio-payloads.json in the app's
repository) and is signed exactly as Twilio signs it: the SDK's RequestValidator over
the URL and the form fields, keyed with TWILIO_CONVLINK["AUTH_TOKEN"].
"""

from __future__ import annotations

import datetime
import secrets
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.urls import reverse
from django.utils import timezone
from twilio.request_validator import RequestValidator

from django_twilio_convlink.conf import convlink_settings

from .load_demo_data import tenant_report

DEFAULT_URL = "http://127.0.0.1:8000/twilio/webhook/"
EVENTS = ["onMessageAdded_sms_from_customer", "onConversationAdded"]
# SIDs are made up but well formed: the app refuses a payload whose SIDs are not.
SAMPLE_ACCOUNT_SID = "AC0123456789abcdef0123456789abcdef"
SAMPLE_CHAT_SERVICE_SID = "IS88888888888888888888888888888888"
SAMPLE_MESSAGING_SERVICE_SID = "MG33333333333333333333333333333333"
SAMPLE_PARTICIPANT_SID = "MB44444444444444444444444444444444"


def new_sid(prefix: str) -> str:
    return prefix + secrets.token_hex(16)


def twilio_timestamp() -> str:
    # Twilio's format: UTC, milliseconds, "Z" suffix.
    now = timezone.now().astimezone(datetime.UTC)
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"


def build_payload(event: str, options: dict[str, Any]) -> dict[str, str]:
    """The form fields of one delivery; every value a string, as on the wire."""
    account_sid = convlink_settings.ACCOUNT_SID or SAMPLE_ACCOUNT_SID
    now = twilio_timestamp()
    if event == "onConversationAdded":
        # An SMS to the Twilio number auto-creates a conversation; its binding names
        # the customer's phone, so the app can link before the first message arrives.
        return {
            "AccountSid": account_sid,
            "EventType": "onConversationAdded",
            "Source": "SMS",
            "RetryCount": "0",
            "ConversationSid": options["conversation_sid"],
            "ChatServiceSid": SAMPLE_CHAT_SERVICE_SID,
            "MessagingServiceSid": SAMPLE_MESSAGING_SERVICE_SID,
            "DateCreated": now,
            "DateUpdated": now,
            "FriendlyName": "",
            "UniqueName": "",
            "Attributes": "{}",
            "State": "active",
            "MessagingBinding.Address": options["from"],
            "MessagingBinding.ProxyAddress": convlink_settings.TWILIO_PHONE,
        }
    return {
        "AccountSid": account_sid,
        "EventType": "onMessageAdded",
        "Source": "SMS",
        "RetryCount": "0",
        "ConversationSid": options["conversation_sid"],
        "MessageSid": options["message_sid"] or new_sid("IM"),
        "MessagingServiceSid": SAMPLE_MESSAGING_SERVICE_SID,
        "ParticipantSid": SAMPLE_PARTICIPANT_SID,
        "Index": str(options["index"]),
        "DateCreated": now,
        "Author": options["from"],
        "Body": options["body"] or tenant_report(options["from"]),
        "Attributes": "{}",
    }


class Command(BaseCommand):
    help = "Post a signed sample Twilio Conversations webhook to the running site."
    # Nothing here reads the database, and the checks already ran in the server.
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--url", default=DEFAULT_URL, help=f"Webhook URL (default {DEFAULT_URL}).")
        parser.add_argument("--event", choices=EVENTS, default=EVENTS[0],
                            help=f"Which delivery to send (default {EVENTS[0]}).")
        parser.add_argument("--from", dest="from", default="+14155550142",
                            help="The customer's phone (default +14155550142, Alice in the demo data).")
        parser.add_argument("--body", default=None,
                            help="The message text (default: a problem in the apartment of the "
                                 "demo tenant with that phone).")
        parser.add_argument("--conversation-sid", default=None,
                            help="CH + 32 hex digits; default a new conversation each run.")
        parser.add_argument("--message-sid", default=None,
                            help="IM + 32 hex digits; default a new one each run. Reuse one to see "
                                 "a redelivery stored once.")
        parser.add_argument("--index", type=int, default=0,
                            help="The message's position in its conversation (default 0).")
        parser.add_argument("--wrong-signature", action="store_true",
                            help="Sign with a wrong token, to see the site refuse it with 403.")

    def handle(self, *args: Any, **options: Any) -> None:
        url: str = options["url"]
        options["conversation_sid"] = options["conversation_sid"] or new_sid("CH")
        params = build_payload(options["event"], options)

        # The site validates against WEBHOOK_URL when it is set (a tunnel's public URL),
        # so that is the URL Twilio would have signed, whatever address we post to.
        signed_url = convlink_settings.WEBHOOK_URL or url
        token = "not-the-auth-token" if options["wrong_signature"] else convlink_settings.AUTH_TOKEN
        if not token:
            raise CommandError('TWILIO_CONVLINK["AUTH_TOKEN"] is empty: set TWILIO_AUTH_TOKEN.')
        signature = RequestValidator(token).compute_signature(signed_url, params)

        request = urllib.request.Request(
            url,
            data=urllib.parse.urlencode(params).encode(),
            headers={
                "Content-Type": "application/x-www-form-urlencoded",
                "X-Twilio-Signature": signature,
                "User-Agent": "TwilioProxy/1.1",
            },
            method="POST",
        )
        sids = ", ".join(params[key] for key in ("ConversationSid", "MessageSid") if key in params)
        self.stdout.write(f"POST {url}\n  {params['EventType']} from {options['from']} ({sids})")
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                status, reason, body = response.status, response.reason, response.read()
        except urllib.error.HTTPError as exc:
            status, reason, body = exc.code, exc.reason, exc.read()
        except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
            reason = getattr(exc, "reason", exc)
            raise CommandError(
                f"Could not reach {url} ({reason}). Is the site running? Start it in another "
                "terminal with: python manage.py rundemo"
            ) from None

        text = body.decode(errors="replace").strip()
        self.stdout.write(f"HTTP {status} {reason}" + (f": {text}" if text else ""))
        if options["wrong_signature"] and status != 403:
            raise CommandError(f"The site answered {status} to a forged signature; it must answer 403.")
        if status == 200:
            self.stdout.write(self.style.SUCCESS(
                f"Stored. Open {self._admin_url(url)} to see the conversation and its booking."
            ))
        elif status == 403 and options["wrong_signature"]:
            self.stdout.write(self.style.SUCCESS(
                "Refused, as it should be; the server's console logs why."
            ))
        elif status == 403:
            raise CommandError(
                f"The site refused the signature. It was computed for {signed_url} with "
                'TWILIO_CONVLINK["AUTH_TOKEN"]; the server must use the same token and '
                "WEBHOOK_URL (the server's console logs the URL it validated against)."
            )
        else:
            raise CommandError(f"Unexpected response {status}; see the server's console.")

    def _admin_url(self, webhook_url: str) -> str:
        # Same host and port as the webhook: that is where the site is running.
        parts = urllib.parse.urlsplit(webhook_url)
        path = reverse("admin:messaging_twilioconversation_changelist")
        return urllib.parse.urlunsplit((parts.scheme, parts.netloc, path, "", ""))
