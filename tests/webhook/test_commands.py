"""The management commands, as users type them."""

import datetime
import os
import shlex
import subprocess
import sys
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from django_twilio_convlink.models import OptOut, WaitingReceipt, WebhookDelivery
from tests.factories import ConversationFactory, GuestFactory, MessageFactory, ReservationFactory
from tests.helpers import CUSTOMER, payload, sid
from tests.testapp.models import ChatConversation

pytestmark = pytest.mark.django_db


def run(*args: str) -> str:
    out = StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


@pytest.fixture
def booking():
    return ReservationFactory(guest=GuestFactory(mobile="(415) 555-0142"))


def test_links_every_unlinked_conversation(booking):
    ConversationFactory.create_batch(2, customer_phone=CUSTOMER)
    ConversationFactory(customer_phone="+14155550199")
    out = run("update_conversation_links")
    assert "linked 2 of 3 unlinked conversation(s) to bookings; 1 without a matching booking." in out
    assert ChatConversation.objects.filter(booking=booking, apartment=booking.unit,
                                           link_method="retroactive").count() == 2


@pytest.mark.parametrize("phone", ["+14155550142", "(415) 555-0142", "415-555-0142", "whatsapp:+14155550142"])
def test_phone_in_any_format(booking, phone):
    ConversationFactory(customer_phone=CUSTOMER)
    other_booking = ReservationFactory(guest=GuestFactory(mobile="+14155550199"))
    other = ConversationFactory(customer_phone="+14155550199")
    out = run("update_conversation_links", "--phone", phone)
    assert "linked 1 of 1" in out
    other.refresh_from_db()
    assert other.booking is None and other_booking.pk


@pytest.mark.parametrize("spelling", [str, lambda sid: sid[:2] + sid[2:].upper()])
def test_one_conversation_by_sid(booking, spelling):
    # The hex digits in either case: the webhook stores them lowercased.
    target, bystander = ConversationFactory.create_batch(2, customer_phone=CUSTOMER)
    run("update_conversation_links", "--conversation-sid", spelling(target.conversation_sid))
    target.refresh_from_db()
    bystander.refresh_from_db()
    assert target.booking == booking
    assert bystander.booking is None


def test_dry_run_prints_and_changes_nothing(booking):
    conversation = ConversationFactory(customer_phone=CUSTOMER)
    out = run("update_conversation_links", "--dry-run")
    assert f"Would link {conversation.conversation_sid} ({CUSTOMER}) -> booking {booking.pk}" in out
    assert "[dry run] would link 1 of 1" in out
    conversation.refresh_from_db()
    assert conversation.booking is None


def test_manual_decisions_are_left_alone(booking):
    ConversationFactory(customer_phone=CUSTOMER, link_method="manual")
    out = run("update_conversation_links")
    assert "linked 0 of 0" in out


def test_unknown_sid_is_an_error():
    with pytest.raises(CommandError, match="No conversation with SID"):
        call_command("update_conversation_links", "--conversation-sid", "CH" + "0" * 32)


def test_unparseable_phone_is_an_error():
    with pytest.raises(CommandError, match="is not a phone number"):
        call_command("update_conversation_links", "--phone", "not-a-phone")


def test_already_linked_sid_is_reported(booking):
    conversation = ConversationFactory(customer_phone=CUSTOMER, booking=booking, link_method="automatic")
    out = run("update_conversation_links", "--conversation-sid", conversation.conversation_sid)
    assert "already linked" in out


def test_errors_exit_non_zero_from_the_command_line():
    # The argument is refused before any database access, so the subprocess needs none.
    result = subprocess.run(
        [sys.executable, "-m", "django", "update_conversation_links", "--phone", "nope"],
        capture_output=True, text=True, cwd=Path(__file__).resolve().parents[2],
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings"})
    assert result.returncode != 0
    assert "is not a phone number" in result.stderr


STATUS = """=== Linkage Status ===
Conversations linked to bookings: 2/3 (66.7%)
Conversations linked to apartments: 2/3 (66.7%)

=== Message Direction ===
Inbound messages: 4 (44.4%)
Outbound messages: 5 (55.6%)
"""


def test_status_prints_exactly_the_documented_form(booking):
    linked = ConversationFactory.create_batch(2, booking=booking, apartment=booking.unit)
    ConversationFactory()
    MessageFactory.create_batch(4, conversation=linked[0], direction="inbound")
    MessageFactory.create_batch(5, conversation=linked[1], direction="outbound")
    assert run("check_twilio_status") == STATUS


def test_status_with_no_rows():
    assert run("check_twilio_status") == """=== Linkage Status ===
Conversations linked to bookings: 0/0 (0.0%)
Conversations linked to apartments: 0/0 (0.0%)

=== Message Direction ===
Inbound messages: 0 (0.0%)
Outbound messages: 0 (0.0%)
"""


@pytest.mark.parametrize("rows", [3, 60])
def test_status_is_two_queries_whatever_the_rows(django_assert_num_queries, rows):
    for conversation in ConversationFactory.create_batch(rows):
        MessageFactory(conversation=conversation)
    with django_assert_num_queries(2):
        run("check_twilio_status")


def test_detailed_status(booking, settings):
    ConversationFactory(customer_phone=CUSTOMER, conversation_sid="CH" + "a" * 32)
    ConversationFactory(booking=booking, link_method="manual")
    settings.TWILIO_CONVLINK = {**settings.TWILIO_CONVLINK, "MANAGER_PHONE": "not a phone"}
    out = run("check_twilio_status", "--detailed")
    assert out.startswith("=== Linkage Status ===")
    assert f"CH{'a' * 32}  phone={CUSTOMER}  method=-" in out
    assert "manual: 1" in out
    # Not "https://": build_absolute_uri takes the request's scheme as well as its host.
    assert ("Signatures are validated against /twilio/webhook/ at the request's own scheme "
            "and host") in out
    assert "<your host>" not in out
    assert "twilio_convlink.E008" in out


@pytest.fixture
def shared_cache(settings, tmp_path):
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
                                   "LOCATION": str(tmp_path / "cache")}}


def test_detailed_status_names_webhook_url(settings, shared_cache):
    # A worker (the database queue), a shared cache and the SDK backend (this command
    # calls no API): no deployment check has advice either.
    settings.TWILIO_CONVLINK = {**settings.TWILIO_CONVLINK, "WEBHOOK_URL": "https://x.example/t/",
                                "TASK_BACKEND": "database",
                                "API_BACKEND": "django_twilio_convlink.api.SdkBackend"}
    out = run("check_twilio_status", "--detailed")
    assert "validated against WEBHOOK_URL: https://x.example/t/" in out
    assert "No problems found." in out


def test_the_status_reports_the_deployment_checks_too(settings, shared_cache):
    # The test site's tasks run on the immediate backend: check --deploy advice (W007).
    out = run("check_twilio_status", "--detailed")
    assert "twilio_convlink.W007: The task backend \"default\" is the immediate one" in out


def test_rebuild_booking_phones_command(booking):
    assert "Indexed 1 booking phone(s)." in run("rebuild_booking_phones")


@pytest.mark.parametrize("days", ["36501", "10000000", str(10**12), "-1"])
def test_prune_refuses_a_retention_out_of_range(days):
    with pytest.raises(CommandError, match=r"--days must be between 0 and 36500 \(a century\)"):
        call_command("prune_twilio_webhooks", "--days", days, stdout=StringIO())


def test_prune_accepts_a_century_the_longest_retention():
    data = payload("onMessageAdded_sms_from_customer")
    for age, token in ((36499, "younger"), (36501, "older")):
        delivery = WebhookDelivery.objects.create(event_type=data["EventType"], params=data,
                                                  status="processed", idempotency_token=token)
        WebhookDelivery.objects.filter(pk=delivery.pk).update(
            received_at=timezone.now() - datetime.timedelta(days=age))
    assert "Deleted 1 delivery older than 36500 days." in run("prune_twilio_webhooks", "--days", "36500")
    assert list(WebhookDelivery.objects.values_list("idempotency_token", flat=True)) == ["younger"]


def test_prune_names_the_setting_when_the_retention_setting_is_out_of_range(settings):
    settings.TWILIO_CONVLINK = {**settings.TWILIO_CONVLINK, "DELIVERY_RETENTION_DAYS": 10**7}
    with pytest.raises(CommandError, match="DELIVERY_RETENTION_DAYS must be between 0 and 36500"):
        call_command("prune_twilio_webhooks", stdout=StringIO())


def test_a_huge_retention_is_a_usage_error_not_a_traceback_from_the_command_line():
    # Refused before any database access, so the subprocess needs none.
    result = subprocess.run(
        [sys.executable, "-m", "django", "prune_twilio_webhooks", "--days", "10000000"],
        capture_output=True, text=True, cwd=Path(__file__).resolve().parents[2],
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings"})
    assert result.returncode == 1
    assert "--days must be between 0 and 36500" in result.stderr
    assert "Traceback" not in result.stderr


# What the review found: each of these crashed with a ValueError, OverflowError or
# database error traceback instead of a usage error.
IMPOSSIBLE_MOMENTS = [
    "2026-02-30",  # no such day
    "2026-13-01",  # no such month
    "0000-01-01",  # no year 0
    "2026-11-20T10:00+25:00",  # a UTC offset of a day and more
    "2026-11-20T24:00",  # no such hour
    "0001-01-01T00:00+05:00",  # before year 1 in UTC
    "9999-12-31T23:00-05:00",  # after year 9999 in UTC
    "last tuesday",
    "",
]
LARGEST = 2**63 - 1  # a bigint


def typed(option: str, value: str) -> tuple[list[str], dict[str, str]]:
    return [option, value], {}


def keyword(option: str, value: str) -> tuple[list[str], dict[str, str]]:
    # call_command() hands a keyword to handle() as it is, without the option's type=.
    return [], {option.lstrip("-").replace("-", "_"): value}


def failed_delivery() -> WebhookDelivery:
    data = payload("onMessageAdded_sms_from_customer")
    return WebhookDelivery.objects.create(event_type=data["EventType"], params=data, status="failed",
                                          idempotency_token="to-replay")


@pytest.mark.parametrize("given", [typed, keyword])
@pytest.mark.parametrize("since", IMPOSSIBLE_MOMENTS)
def test_replay_refuses_a_since_that_is_no_moment(since, given):
    delivery = failed_delivery()
    args, kwargs = given("--since", since)
    with pytest.raises(CommandError, match=r"argument --since: .+ expected YYYY-MM-DD, or YYYY-MM-DD HH:MM"):
        call_command("replay_twilio_webhooks", "--failed", *args, **kwargs, stdout=StringIO())
    delivery.refresh_from_db()
    assert delivery.status == "failed"


@pytest.mark.parametrize("given", [typed, keyword])
@pytest.mark.parametrize(("since", "selected"), [
    ("2026-11-20", True),  # midnight in New York, 05:00 UTC
    ("2026-11-21", False),
    ("2026-11-20 00:30", True),  # no offset: the site's time zone, 05:30 UTC
    ("2026-11-20T02:00", False),  # 07:00 UTC
    ("2026-11-20T06:00Z", True),
    ("2026-11-20T06:00:01+00:00", False),
    ("2026-11-20T10:00+05:30", True),  # 04:30 UTC
])
def test_replay_since_reads_a_moment_without_offset_in_the_sites_time_zone(settings, since, selected, given):
    settings.TIME_ZONE = "America/New_York"
    delivery = failed_delivery()
    WebhookDelivery.objects.filter(pk=delivery.pk).update(
        received_at=datetime.datetime(2026, 11, 20, 6, tzinfo=datetime.UTC))
    args, kwargs = given("--since", since)
    out = StringIO()
    call_command("replay_twilio_webhooks", "--failed", "--dry-run", *args, **kwargs, stdout=out)
    assert (f"Would replay delivery {delivery.pk}" in out.getvalue()) is selected


@pytest.mark.parametrize("given", [typed, keyword])
@pytest.mark.parametrize("command", [["retry_group_chats", "--include-permanent"],
                                     ["check_twilio_status", "--detailed"]])
@pytest.mark.parametrize("limit", ["-1", str(LARGEST + 1), str(10**30), "ten"])
def test_a_limit_out_of_range_is_a_usage_error(command, limit, given):
    message = MessageFactory(forward_state="permanent")
    args, kwargs = given("--limit", limit)
    with pytest.raises(CommandError, match=rf"argument --limit: .+ whole number from 0 to {LARGEST}\."):
        call_command(*command, *args, **kwargs, stdout=StringIO(), stderr=StringIO())
    message.refresh_from_db()
    assert message.forward_state == "permanent"


@pytest.mark.parametrize("command", [["retry_group_chats", "--dry-run"],
                                     ["check_twilio_status", "--detailed"]])
@pytest.mark.parametrize("limit", ["0", str(LARGEST)])
def test_the_ends_of_a_limit_are_accepted(command, limit):
    run(*command, "--limit", limit)


@pytest.mark.parametrize("pk", ["0", str(LARGEST + 1), str(10**30), "one"])
def test_replay_refuses_an_id_no_delivery_can_have(pk):
    delivery = failed_delivery()
    with pytest.raises(CommandError, match=rf"argument ids: .+ whole number from 1 to {LARGEST}\."):
        call_command("replay_twilio_webhooks", str(delivery.pk), pk, stdout=StringIO())
    delivery.refresh_from_db()
    assert delivery.status == "failed"


@pytest.mark.parametrize(("arguments", "option"), [
    *((["replay_twilio_webhooks", "--failed", "--since", since], "--since")
      for since in IMPOSSIBLE_MOMENTS[:4]),
    (["replay_twilio_webhooks", str(10**30)], "ids"),
    (["retry_group_chats", "--limit", str(10**30)], "--limit"),
])
def test_a_bad_value_is_a_usage_error_not_a_traceback_from_the_command_line(arguments, option):
    # Refused by argparse before any database access, so the subprocess needs none.
    result = subprocess.run(
        [sys.executable, "-m", "django", *arguments],
        capture_output=True, text=True, cwd=Path(__file__).resolve().parents[2],
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings"})
    assert result.returncode == 2, result.stderr
    assert f"error: argument {option}: " in result.stderr
    assert "Traceback" not in result.stderr


def forged(count: int) -> None:
    from tests.helpers import TwilioClient

    client = TwilioClient(token="forged")
    for _ in range(count):
        assert client.webhook(payload("onMessageAdded_sms_from_customer")).status_code == 403


def line_of(out: str, start: str) -> str:
    [line] = [line for line in out.splitlines() if line.startswith(start)]
    return line


def test_forged_count_names_its_shared_cache(shared_cache):
    forged(5)
    line = line_of(run("check_twilio_status", "--detailed"), "Forged or unsigned requests rejected today")
    assert line == ('Forged or unsigned requests rejected today: 5 (counted in the "default" cache, '
                    "django.core.cache.backends.filebased.FileBasedCache)")


@pytest.mark.parametrize(("backend", "why"), [
    ("django.core.cache.backends.locmem.LocMemCache", "per process"),
    ("django.core.cache.backends.dummy.DummyCache", "stores nothing"),
])
def test_forged_count_warns_when_its_cache_cannot_be_trusted(settings, backend, why):
    # The webhook's refusals happen in the web server's processes; this command is
    # another process, which a per-process cache shows none of them.
    settings.CACHES = {"default": {"BACKEND": backend}}
    out = run("check_twilio_status", "--detailed")
    line = line_of(out, "Forged or unsigned requests rejected today")
    assert f'counted in the "default" cache, {backend}' in line
    assert why in line and "not to be trusted" in line
    assert "twilio_convlink.W008" in out


def test_forward_counts_have_one_label_and_one_number_each():
    for state in ("sent", "sent", "sent", "failed", "permanent"):
        MessageFactory(forward_state=state)
    line = line_of(run("check_twilio_status", "--detailed"), "Group chat forwards: ")
    counts = line.removeprefix("Group chat forwards: ").split(", ")
    assert counts == ["pending 0", "sending 0", "sent 3", "failed (will be retried) 1",
                      "failed permanently 1", "skipped (customer opted out) 0"]


EXAMPLE = Path(__file__).resolve().parents[2] / "example_project"


def example_env(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "DJANGO_SETTINGS_MODULE": "example_site.settings", "DJANGO_DEBUG": "true",
            "DATABASE_URL": f"sqlite:///{tmp_path / 'example.sqlite3'}", "PYTHONPATH": str(EXAMPLE)}


# rundemo, as the README runs it, with runserver's serving left out (it never returns).
RUNDEMO = """
import runpy, sys
from django.core.management.commands import runserver
runserver.Command.handle = lambda self, *args, **options: None
sys.argv = [MANAGE_PY, "rundemo", "127.0.0.1:8765"]
runpy.run_path(MANAGE_PY, run_name="__main__")
"""


@pytest.mark.parametrize("where", ["repository root", "example_project"])
def test_rundemo_prints_a_send_command_that_works_from_where_it_ran(tmp_path, where):
    cwd = EXAMPLE.parent if where == "repository root" else EXAMPLE
    manage_py = os.path.relpath(EXAMPLE / "manage.py", cwd)
    env = example_env(tmp_path)
    result = subprocess.run([sys.executable, "-c", f"MANAGE_PY = {manage_py!r}" + RUNDEMO],
                            capture_output=True, text=True, cwd=cwd, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    send = lines[lines.index(next(line for line in lines if "play Twilio" in line)) + 1].strip()
    assert f"{manage_py} send_sample_webhook --url http://127.0.0.1:8765/twilio/webhook/" in send
    # The line works as printed, from the same folder (--help: no server to post to).
    shown = subprocess.run([*shlex.split(send), "--help"], capture_output=True, text=True, cwd=cwd,
                           env=env, timeout=120)
    assert shown.returncode == 0, shown.stderr
    assert "Post a signed sample Twilio Conversations webhook" in shown.stdout


@pytest.fixture
def fake_site():
    """An HTTP server that answers 200 to every POST and keeps the form it got."""
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer
    from urllib.parse import parse_qs

    forms = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers["Content-Length"])).decode()
            forms.append({key: values[0] for key, values in parse_qs(body).items()})
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/twilio/webhook/", forms
    server.shutdown()
    server.server_close()


def test_each_demo_tenant_writes_about_their_own_apartment(tmp_path, fake_site):
    # The app's send_sample_webhook names the apartment of the booking the phone links to.
    url, forms = fake_site
    env = example_env(tmp_path)

    def manage(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "manage.py", *args], capture_output=True, text=True,
                              cwd=EXAMPLE, env=env, timeout=120)

    for setup in (["migrate", "-v0"], ["load_demo_data"]):
        assert manage(*setup).returncode == 0
    for phone, apartment in [
        ("+14155550142", "Harbor View 4B"),  # Alice, staying now (her older stay is elsewhere)
        ("+12125550199", "Garden Loft 2A"),  # Ben, upcoming
        ("+16465550123", "Sunset Studio 7"),  # Chloe, past
        ("+15550001111", "my apartment"),  # nobody in the demo data
    ]:
        result = manage("send_sample_webhook", "--from", phone, "--url", url)
        assert result.returncode == 0, result.stderr
        *_, conversation_added, message_added = forms
        assert conversation_added["MessagingBinding.Address"] == message_added["Author"] == phone
        assert message_added["Body"] == f"Hi, the heater in {apartment} is not working"
        # The fake server stored nothing in this database: the command says where it went.
        assert result.stdout.splitlines()[-1] == (
            f"Conversation {message_added['ConversationSid']} stored by the server at {url}.")


# --- Delivery receipts, opt-outs and receipts waiting for their message -----------------

def ago(**delta) -> datetime.datetime:
    return timezone.now() - datetime.timedelta(**delta)


def failed(status: str, code: int | None, **delta) -> None:
    MessageFactory(direction="outbound", delivery_status=status, delivery_error_code=code,
                   delivery_updated_at=ago(**delta))


def lines_of(out: str, start: str) -> list[str]:
    return [line for line in out.splitlines() if line.startswith(start)]


def test_status_counts_the_failed_and_undelivered_messages_of_the_last_7_days():
    failed("failed", 30007, days=1)
    failed("failed", 30007, hours=2)
    failed("undelivered", 30003, days=6, hours=23)
    failed("failed", 12345, minutes=5)  # a code Twilio's meanings here do not list
    failed("failed", None, minutes=1)  # failed with no code: counted, no code line
    # Not counted: older than 7 days, or not a failure.
    failed("failed", 30007, days=8)
    failed("undelivered", 30005, days=7, hours=1)
    failed("delivered", None, minutes=1)
    failed("read", None, minutes=1)
    MessageFactory()  # no receipt at all
    out = run("check_twilio_status", "--detailed")
    assert line_of(out, "Delivery receipts, last 7 days: ") == (
        "Delivery receipts, last 7 days: failed 4, undelivered 1")
    # The most common first, each with what it means.
    assert lines_of(out, "Delivery error ") == [
        "Delivery error 30007 (2 messages): Filtered by the carrier as spam.",
        "Delivery error 12345 (1 message): see https://www.twilio.com/docs/api/errors/12345",
        "Delivery error 30003 (1 message): Unreachable: the phone is off or out of coverage.",
    ]


def test_status_lists_the_five_most_common_delivery_errors():
    for code, count in ((30001, 1), (30002, 2), (30003, 3), (30004, 1), (30005, 5), (30006, 1)):
        for _ in range(count):
            failed("undelivered", code, hours=1)
    out = run("check_twilio_status", "--detailed")
    assert line_of(out, "Delivery receipts, last 7 days: ") == (
        "Delivery receipts, last 7 days: failed 0, undelivered 13")
    assert [line.split(":")[0] for line in lines_of(out, "Delivery error ")] == [
        "Delivery error 30005 (5 messages)", "Delivery error 30003 (3 messages)",
        "Delivery error 30002 (2 messages)", "Delivery error 30001 (1 message)",
        "Delivery error 30004 (1 message)"]


def test_status_with_no_receipts_no_opt_outs_and_nothing_waiting():
    out = run("check_twilio_status", "--detailed")
    assert "=== Delivery Receipts and Opt-Outs ===" in out
    assert line_of(out, "Delivery receipts, last 7 days: ") == (
        "Delivery receipts, last 7 days: failed 0, undelivered 0")
    assert lines_of(out, "Delivery error ") == []
    assert line_of(out, "Customers opted out now: ") == (
        "Customers opted out now: 0 (keyword 0, error 0, admin 0)")
    assert line_of(out, "Receipts waiting for their message: ") == "Receipts waiting for their message: 0"


def test_status_counts_the_customers_opted_out_now():
    OptOut.objects.create(phone="+14155550101", opted_out_at=ago(days=3), method="keyword", detail="STOP")
    OptOut.objects.create(phone="+14155550102", opted_out_at=ago(days=2), method="keyword", detail="QUIT")
    OptOut.objects.create(phone="+14155550103", opted_out_at=ago(days=1), method="error", detail="21610")
    # Opted back in: on record, not opted out.
    OptOut.objects.create(phone="+14155550104", opted_out_at=ago(days=9), method="admin",
                          opted_in_at=ago(days=8), opted_in_method="keyword", opted_in_detail="START")
    out = run("check_twilio_status", "--detailed")
    assert line_of(out, "Customers opted out now: ") == (
        "Customers opted out now: 3 (keyword 2, error 1, admin 0)")


def waiting_receipt(**age) -> WaitingReceipt:
    receipt = WaitingReceipt.objects.create(
        message_sid=sid("IM"), participant_sid=sid("MB"), account_sid="AC0123456789abcdef0123456789abcdef",
        receipt={"status": "delivered", "error_code": None, "updated": timezone.now().isoformat(),
                 "receipt_sid": sid("DY")})
    WaitingReceipt.objects.filter(pk=receipt.pk).update(received_at=ago(**age))
    receipt.refresh_from_db()  # read back, not recomputed: a minute may turn between the two
    return receipt


def test_status_counts_the_receipts_waiting_for_their_message_with_the_oldest():
    oldest = waiting_receipt(days=3, hours=1)
    waiting_receipt(hours=5)
    waiting_receipt(seconds=1)
    line = line_of(run("check_twilio_status", "--detailed"), "Receipts waiting for their message: ")
    assert line.startswith(f"Receipts waiting for their message: 3, the oldest for 3 days "
                           f"(since {oldest.received_at:%Y-%m-%d %H:%M}); its message was never stored")
    assert "REST API" in line


def test_a_receipt_waiting_a_moment_is_not_called_lost():
    waiting = waiting_receipt(seconds=30)
    line = line_of(run("check_twilio_status", "--detailed"), "Receipts waiting for their message: ")
    assert line == (f"Receipts waiting for their message: 1, the oldest for 0 minutes "
                    f"(since {waiting.received_at:%Y-%m-%d %H:%M})")


def test_detailed_status_queries_do_not_grow_with_the_rows():
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    def queries() -> int:
        with CaptureQueriesContext(connection) as captured:
            run("check_twilio_status", "--detailed")
        return len(captured)

    def add(first: int, last: int) -> None:
        for i in range(first, last):
            failed("failed" if i % 2 else "undelivered", 30000 + i, hours=1)
            OptOut.objects.create(phone=f"+1415555{i:04d}", opted_out_at=ago(days=1),
                                  method=("keyword", "error", "admin")[i % 3])
            waiting_receipt(hours=i)

    add(0, 1)
    few = queries()
    add(1, 30)
    assert queries() == few


def test_prune_deletes_receipts_waiting_longer_than_the_retention():
    waiting_receipt(days=29, hours=23)
    waiting_receipt(days=30, hours=1)
    waiting_receipt(days=400)
    out = run("prune_twilio_webhooks", "--dry-run")
    assert "Would delete 0 deliveries older than 30 days." in out
    assert "Would delete 2 waiting receipts older than 30 days." in out
    assert WaitingReceipt.objects.count() == 3
    assert "Deleted 2 waiting receipts older than 30 days." in run("prune_twilio_webhooks")
    [kept] = WaitingReceipt.objects.all()
    assert timezone.now() - kept.received_at < datetime.timedelta(days=30)


def test_prune_keeps_waiting_receipts_as_long_as_the_retention_setting(settings):
    waiting_receipt(days=3)
    waiting_receipt(days=1)
    settings.TWILIO_CONVLINK = {**settings.TWILIO_CONVLINK, "DELIVERY_RETENTION_DAYS": 2}
    assert "Deleted 1 waiting receipt older than 2 days." in run("prune_twilio_webhooks")
    assert WaitingReceipt.objects.count() == 1
    assert "Deleted 1 waiting receipt older than 0 days." in run("prune_twilio_webhooks", "--days", "0")
    assert not WaitingReceipt.objects.exists()


def test_prune_days_0_spares_a_receipt_whose_message_may_be_committing_now():
    waiting_receipt(seconds=5)
    waiting_receipt(minutes=10)
    assert "Deleted 1 waiting receipt older than 0 days." in run("prune_twilio_webhooks", "--days", "0")
    [kept] = WaitingReceipt.objects.all()
    assert timezone.now() - kept.received_at < datetime.timedelta(minutes=1)
