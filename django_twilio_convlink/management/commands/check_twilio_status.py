"""Print how many conversations are linked and how messages split by direction.

Usage examples::

    manage.py check_twilio_status
    manage.py check_twilio_status --detailed    # + unlinked conversations, receipts, opt-outs,
                                                # webhook URL, settings problems

Counts come from two aggregate queries whatever the table sizes; --detailed adds one
query for the link methods and one for the unlinked list (capped by --limit), and a
constant number of aggregates for the rest.
"""

from __future__ import annotations

import datetime
from typing import Any

from django.core import checks
from django.core.exceptions import FieldDoesNotExist, ImproperlyConfigured
from django.core.management.base import BaseCommand, CommandParser
from django.db.models import Count, Min, Q
from django.urls import NoReverseMatch, reverse
from django.utils import timezone

from ... import get_conversation_model, get_message_model
from ...choices import DeliveryStatus, Direction, ForwardState, MediaState, OptOutMethod
from ...conf import convlink_settings
from ...linking import unindexed_bookings
from ...models import OptOut, StoredMedia, WaitingReceipt, WebhookDelivery, incomplete
from ...receipts import FAILURES, error_meaning
from ...signature import forged_today
from ..options import from_keyword, row_limit

# "received 0" would read as "nothing arrived".
DELIVERY_LABELS = {DeliveryStatus.RECEIVED.value: "waiting to be processed"}
# The counts are a comma-separated list: no label may hold a comma ("Failed, will be
# retried" is the model's label, made for the admin).
FORWARD_LABELS = {ForwardState.FAILED.value: "failed (will be retried)"}
# How far back the failed and undelivered messages are counted: recent enough to be
# today's problem, long enough to cover a weekend nobody looked.
RECEIPT_DAYS = 7
# As FORWARD_LABELS: no comma in a label of a comma-separated list.
MEDIA_LABELS = {MediaState.PENDING.value: "waiting", MediaState.FAILED.value: "failed (will be retried)",
                MediaState.PERMANENT.value: "given up", MediaState.REFUSED.value: "refused (too large)"}
# How many of the most common delivery error codes are listed.
RECEIPT_ERRORS = 5


def percent(part: int, whole: int) -> str:
    return f"{(100.0 * part / whole) if whole else 0.0:.1f}%"


def age(seconds: float) -> str:
    """A duration in its largest whole unit: "3 days", "1 hour", "0 minutes"."""
    unit, size = next(((unit, size) for unit, size in (("day", 86400), ("hour", 3600)) if seconds >= size),
                      ("minute", 60))
    count = int(seconds // size)
    return f"{count} {unit}{'' if count == 1 else 's'}"


class Command(BaseCommand):
    help = "Show linkage and message-direction statistics of the Twilio conversations."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--detailed", action="store_true",
                            help="Also list unlinked conversations, link methods, the webhook URL "
                                 "and settings problems.")
        parser.add_argument("--limit", type=row_limit, default=50,
                            help="How many unlinked conversations --detailed lists (default 50).")

    def handle(self, *args: Any, detailed: bool, limit: int, **options: Any) -> None:
        limit = from_keyword(row_limit, limit, "--limit")
        Conversation, Message = get_conversation_model(), get_message_model()
        conv = Conversation._default_manager.aggregate(
            total=Count("pk"), bookings=Count("booking"), apartments=Count("apartment"))
        msg = Message._default_manager.aggregate(
            inbound=Count("pk", filter=Q(direction=Direction.INBOUND)),
            outbound=Count("pk", filter=Q(direction=Direction.OUTBOUND)))
        total, messages = conv["total"], msg["inbound"] + msg["outbound"]
        write = self.stdout.write
        write("=== Linkage Status ===")
        write(f"Conversations linked to bookings: {conv['bookings']}/{total} "
              f"({percent(conv['bookings'], total)})")
        write(f"Conversations linked to apartments: {conv['apartments']}/{total} "
              f"({percent(conv['apartments'], total)})")
        write("")
        write("=== Message Direction ===")
        write(f"Inbound messages: {msg['inbound']} ({percent(msg['inbound'], messages)})")
        write(f"Outbound messages: {msg['outbound']} ({percent(msg['outbound'], messages)})")
        if detailed:
            self.write_details(Conversation, limit)

    def forged_line(self) -> str:
        # The view counts rejections in the default cache (signature.count_forged): say
        # which, and when this process cannot see the web server's count (W008).
        from ...checks import forged_counter_cache

        alias, backend, problem = forged_counter_cache()
        line = (f"Forged or unsigned requests rejected today: {forged_today()} "
                f'(counted in the "{alias}" cache, {backend})')
        return f"{line}; not to be trusted: {problem}" if problem else line

    def write_receipts_and_opt_outs(self) -> None:
        """Three aggregate queries, whatever the table sizes."""
        write = self.stdout.write
        write("")
        write("=== Delivery Receipts and Opt-Outs ===")
        now = timezone.now()
        # One row per (status, error code): a handful, however many messages failed.
        failures = list(get_message_model()._default_manager
                        .filter(delivery_status__in=FAILURES,
                                delivery_updated_at__gte=now - datetime.timedelta(days=RECEIPT_DAYS))
                        .values_list("delivery_status", "delivery_error_code")
                        .annotate(n=Count("pk")).order_by())
        by_status = {status.value: sum(n for s, _, n in failures if s == status) for status in FAILURES}
        by_code: dict[int, int] = {}
        for _, code, n in failures:
            if code is not None:
                by_code[code] = by_code.get(code, 0) + n
        write(f"Delivery receipts, last {RECEIPT_DAYS} days: "
              + ", ".join(f"{status} {n}" for status, n in by_status.items()))
        # Each on its own line: Twilio's meanings hold commas and colons.
        for code, n in sorted(by_code.items(), key=lambda item: (-item[1], item[0]))[:RECEIPT_ERRORS]:
            write(f"Delivery error {code} ({n} message{'' if n == 1 else 's'}): "
                  + (error_meaning(code) or f"see https://www.twilio.com/docs/api/errors/{code}"))

        opted_out = Q(opted_in_at__isnull=True)
        optouts = OptOut.objects.aggregate(total=Count("pk", filter=opted_out), **{
            method.value: Count("pk", filter=opted_out & Q(method=method.value)) for method in OptOutMethod})
        write(f"Customers opted out now: {optouts['total']} ("
              + ", ".join(f"{method.value} {optouts[method.value]}" for method in OptOutMethod) + ")")

        waiting = WaitingReceipt.objects.aggregate(n=Count("pk"), oldest=Min("received_at"))
        line = f"Receipts waiting for their message: {waiting['n']}"
        if waiting["oldest"]:
            waited = (now - waiting["oldest"]).total_seconds()
            line += f", the oldest for {age(waited)} (since {waiting['oldest']:%Y-%m-%d %H:%M})"
            # A receipt waits for the moment between Twilio's send and the message's
            # commit; one still waiting after a delivery would be called unfinished
            # waits for a row that is not coming.
            if waited > convlink_settings.DELIVERY_UNFINISHED_AFTER:
                line += ("; its message was never stored: its delivery failed, never finished or "
                         "never came (see the deliveries below), or it was sent through the REST API, "
                         "which fires no webhook")
        write(line)

    def write_media(self) -> None:
        """Customers' files by state (one aggregate query), how long the oldest one has
        waited, and whether the media service refuses the credentials."""
        write = self.stdout.write
        write("")
        write("=== Customer Files ===")
        waiting = Q(state__in=[MediaState.PENDING, MediaState.DOWNLOADING, MediaState.FAILED])
        refused = Q(state=MediaState.PERMANENT, last_error_status__in=[401, 403])
        counts = StoredMedia.objects.aggregate(
            oldest=Min("created_at", filter=waiting), credentials_refused=Count("pk", filter=refused),
            **{state.value: Count("pk", filter=Q(state=state.value)) for state in MediaState})
        download = "on" if convlink_settings.MEDIA_DOWNLOAD else "off (MEDIA_DOWNLOAD)"
        write(f"Downloading is {download}; files "
              + ", ".join(f"{MEDIA_LABELS.get(state.value, state.value)} {counts[state.value]}"
                          for state in MediaState))
        if counts["oldest"]:
            waited = age((timezone.now() - counts["oldest"]).total_seconds())
            write(f"The oldest file not stored yet has waited {waited} "
                  "(fetch_twilio_media takes up what a task left)")
        if counts["credentials_refused"]:
            write(f"{counts['credentials_refused']} file(s) given up because the media service refused "
                  "the credentials (HTTP 401/403): check ACCOUNT_SID and AUTH_TOKEN (or API_KEY_SID "
                  "and API_KEY_SECRET), then run fetch_twilio_media --include-permanent")

    def write_details(self, Conversation: Any, limit: int) -> None:
        write = self.stdout.write
        write("")
        write("=== Link Methods ===")
        methods = (Conversation._default_manager.values("link_method")
                   .annotate(n=Count("pk")).order_by("link_method"))
        for row in methods:
            write(f"{row['link_method'] or 'not linked'}: {row['n']}")

        write("")
        write("=== Unlinked Conversations ===")
        unlinked = (Conversation._default_manager.filter(booking__isnull=True)
                    .order_by("-created_at")
                    .values_list("conversation_sid", "customer_phone", "link_method")[:limit])
        rows = list(unlinked)
        for sid, phone, method in rows:
            write(f"{sid}  phone={phone or '(unknown)'}  method={method or '-'}")
        if not rows:
            write("(none)")
        # Why a customer whose booking is right there stays unlinked: bookings saved
        # without post_save are not in the phone index. One aggregate anti-join.
        try:
            missing = unindexed_bookings().count()
        except (ImproperlyConfigured, FieldDoesNotExist):
            write("Bookings missing from the phone index: unknown (see the booking settings below)")
        else:
            write(f"Bookings missing from the phone index: {missing}" + (
                " (index them with: manage.py update_conversation_links; for phones changed behind "
                "the app's back: manage.py rebuild_booking_phones, or update_conversation_links "
                "--reindex)" if missing else ""))

        write("")
        write("=== Group Chats ===")
        Message = get_message_model()
        states = dict(Message._default_manager.exclude(forward_state="")
                      .values_list("forward_state").annotate(n=Count("pk")).order_by())
        groups = Conversation._default_manager.filter(is_group_chat=True).count()
        write(f"Group chats: {groups}")
        write("Group chat forwards: " + ", ".join(
            f"{FORWARD_LABELS.get(state.value, state.label.lower())} {states.get(state.value, 0)}"
            for state in ForwardState))
        failing = (Conversation._default_manager.exclude(group_chat_error="")
                   .order_by("-updated_at")
                   .values_list("conversation_sid", "customer_phone", "group_chat_error_code",
                                "group_chat_attempts", "group_chat_retry_at", "group_chat_error")[:limit])
        for sid, phone, code, attempts, retry_at, error in failing:
            when = f"retry at {retry_at:%Y-%m-%d %H:%M}" if retry_at else "not retried"
            write(f"{sid}  phone={phone or '(unknown)'}  code={code or '-'}  attempts={attempts}  "
                  f"{when}: {error}")

        self.write_receipts_and_opt_outs()
        self.write_media()

        write("")
        write("=== Webhook ===")
        configured = convlink_settings.WEBHOOK_URL
        try:
            path = reverse("twilio_convlink:webhook")
        except NoReverseMatch:
            path = None
        if configured:
            write(f"Signatures are validated against WEBHOOK_URL: {configured}")
        elif path:
            # build_absolute_uri: the scheme is the request's too (https only behind a
            # proxy that says so through SECURE_PROXY_SSL_HEADER).
            write(f"Signatures are validated against {path} at the request's own scheme and host "
                  "(set WEBHOOK_URL if a proxy changes either)")
        else:
            write("The webhook URL is not included in the URLconf "
                  '(add path("twilio/", include("django_twilio_convlink.urls"))).')
        write(f"Signature validation: {'on' if convlink_settings.VALIDATE_SIGNATURE else 'OFF'}")
        unfinished = incomplete(failed=False)
        log = WebhookDelivery.objects.aggregate(
            **{state.value: Count("pk", filter=Q(status=state.value)) for state in DeliveryStatus},
            oldest_failed=Min("received_at", filter=Q(status=DeliveryStatus.FAILED)),
            unfinished=Count("pk", filter=unfinished),
            oldest_unfinished=Min("received_at", filter=unfinished))
        counts = ", ".join(f"{DELIVERY_LABELS.get(state.value, state.value)} {log[state.value]}"
                           for state in DeliveryStatus)
        write(f"Deliveries logged: {counts}")
        if log["oldest_failed"]:
            write(f"Oldest failed delivery: {log['oldest_failed']:%Y-%m-%d %H:%M} "
                  "(replay with: manage.py replay_twilio_webhooks --failed)")
        grace = convlink_settings.DELIVERY_UNFINISHED_AFTER
        oldest = (f", oldest {log['oldest_unfinished']:%Y-%m-%d %H:%M} (replay with: "
                  "manage.py replay_twilio_webhooks --unfinished)" if log["unfinished"] else "")
        write(f"Unfinished deliveries (still waiting {grace} s after they arrived"
              f"{'; their worker died' if log['unfinished'] else ''}): {log['unfinished']}{oldest}")
        write(self.forged_line())

        write("")
        write("=== Settings ===")
        from ...checks import TAG

        # With the deployment checks (W007, W008, ...): this command reports on a site
        # that is running, where production advice is what matters.
        problems = [m for m in checks.run_checks(tags=[TAG], include_deployment_checks=True)
                    if m.level >= checks.WARNING and not m.is_silenced()]
        for message in problems:
            write(f"{message.id}: {message.msg}" + (f" HINT: {message.hint}" if message.hint else ""))
        if not problems:
            write("No problems found.")
