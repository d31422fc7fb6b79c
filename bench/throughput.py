"""Throughput: signed deliveries per second through the whole stack, against a baseline.

The stack is the one a site runs: gunicorn (sync workers, ``WORKERS`` of them) serving
``bench.wsgi`` on the test database this process created, PostgreSQL, and a load
generator on loopback. The baseline is ``bench/baseline``: a view in the same server
that checks the signature with the SDK and does one INSERT into a one-column table,
the least any Twilio webhook must do; and beside it the view a site would write by hand
from the seed (``bench/baseline/views.py``: get_or_create of the conversation and the
message, the booking by exact phone). The figures are the ratios library / bare view
and library / hand-written view.

Method:

* Load mix for the library: onMessageAdded deliveries built from tests/payloads.json,
  shuffled: mostly customers' later messages in existing conversations (a few of them
  MMS), some first messages (a new conversation and its booking lookup; three of four
  of those customers have a booking), and replies that are never forwarded (the
  assistant's, via the API, in the customer's conversation; the manager's, by SMS, in
  the group chat). Each forwarded customer message enqueues one task row
  (django-tasks-db's "database" backend, inside the event's transaction:
  ENQUEUE_IN_TRANSACTION, bench/settings.py): the group chat work is on a worker, and
  no worker runs while timing.
* Each baseline gets the same number of requests with the same fields (each with its
  own MessageSid), at the same concurrency; rounds turn the order of the three.
* Every request is distinct (a repeated MessageSid would be a redelivery, a cheaper
  path) and is built, signed and serialised to raw HTTP/1.1 bytes before the timed
  phase: the generator does no HMAC or encoding work while timing.
* The generator is ``CONCURRENCY`` threads, each sending one request at a time on a
  fresh socket (gunicorn's sync workers close every connection) and timing it from
  connect to the server's close. Two clients for two workers keep every worker busy
  without queueing, so latency is the service time, and the threads cost next to no
  CPU on a 2-core machine that also runs the server and PostgreSQL.
* Both endpoints are warmed up first (untimed): the warm-up also creates the existing
  customers' conversations through the library itself.
* Rounds alternate the order (baseline first, then library first, ...) so that drift
  (autovacuum, the tables growing) does not favour either; each figure is the median
  over the rounds.
* The workers' database connections are whatever the settings say: with Django's
  default CONN_MAX_AGE=0 each request opens one, which costs both endpoints the same
  few milliseconds and so narrows the ratio. The figure's label says which it was
  (``?conn_max_age=600`` on BENCH_POSTGRES_URL makes them persistent).
* Afterwards the database is checked: one message row per MessageSid sent, every
  delivery processed, one task per forwarded message, one baseline row per request.
  Any non-200 answer raises at once.

PostgreSQL only: on SQLite two worker processes mostly measure SQLite's write lock.
"""

from __future__ import annotations

import itertools
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlencode

from django.conf import settings
from django.db import connection, transaction
from django_tasks_db.models import DBTaskResult

from bench.baseline.models import Ping, PlainMessage
from bench.common import Row, percentile
from django_twilio_convlink.conf import convlink_settings
from django_twilio_convlink.group_chat import UNIQUE_NAME_PREFIX
from django_twilio_convlink.models import DeliveryStatus, ForwardState, WebhookDelivery
from django_twilio_convlink.phones import normalize_phone
from django_twilio_convlink.testing import signature
from tests.factories import GuestFactory, ReservationFactory
from tests.helpers import payload, sid
from tests.system.processes import children, cpu_seconds, free_port, gunicorn_command, stop
from tests.testapp.models import ChatConversation, ChatMessage

ROOT = Path(__file__).resolve().parent.parent
SECTION = "throughput"
LIBRARY_PATH = "/twilio/webhook/"
BASELINE_PATH = "/baseline/webhook/"
HAND_WRITTEN_PATH = "/baseline/hand-written/"
GOAL_HAND_RATIO = 1.0
# BENCH_WORKERS: python -m bench runs 2 and 4 (bench/__main__.py); --quick, 2.
WORKERS = int(os.environ.get("BENCH_WORKERS", "2"))
CONCURRENCY = WORKERS  # one request in flight per worker
GOAL_RATIO = 0.6
GOAL_P99_MS = 50.0

# Requests per endpoint and round, rounds, existing customers (conversations created in
# the warm-up, where the later messages and replies go).
FULL = {"requests": 1500, "rounds": 3, "existing": 100}  # about 90 s on an idle 2-core machine
QUICK = {"requests": 300, "rounds": 1, "existing": 40}
# The library's mix; what is left are customers' later messages.
FIRST_SHARE = 0.10  # a customer's first message: new conversation, booking lookup
ASSISTANT_SHARE = 0.08  # the assistant's reply in the customer's conversation (Source API)
MANAGER_SHARE = 0.07  # the manager's reply by SMS in the group chat
MMS_SHARE = 0.05  # of the customers' later messages: a picture instead of text
UNBOOKED_EVERY = 4  # every 4th customer has no booking (the lookup finds nothing)

START_TIMEOUT = 30
REQUEST_TIMEOUT = 30
SEED = 20261120

TOKEN = settings.TWILIO_CONVLINK["AUTH_TOKEN"]


def run(quick: bool) -> list[Row]:
    if connection.vendor != "postgresql":
        # Two worker processes on SQLite measure its database-wide write lock, not the library.
        return [Row(SECTION, "skipped: PostgreSQL only", float("nan"), "")]
    sizes = QUICK if quick else FULL
    with gunicorn() as server:
        return Benchmark(server, **sizes).run()


# --- The customers and their deliveries ------------------------------------------------------

@dataclass
class Customer:
    number: int
    conversation_sid: str = field(default_factory=lambda: sid("CH"))
    participant_sid: str = field(default_factory=lambda: sid("MB"))
    group_sid: str = field(default_factory=lambda: sid("CH"))
    index: int = 0  # the next message's Index in the customer's conversation
    group_index: int = 0

    @property
    def phone(self) -> str:
        return f"+1415{7000000 + self.number:07d}"

    @property
    def booked(self) -> bool:
        return self.number % UNBOOKED_EVERY != UNBOOKED_EVERY - 1


def create_bookings(customers: list[Customer]) -> None:
    """A booking around today for each booked customer, phone stored as sites type it.

    Through the factories, so the library's signals index each booking's phone the way
    they do on a real site."""
    with transaction.atomic():
        for customer in customers:
            if customer.booked:
                national = customer.phone[2:]
                ReservationFactory(guest=GuestFactory(
                    mobile=f"({national[:3]}) {national[3:6]}-{national[6:]}"))


def create_group_chats(customers: list[Customer]) -> None:
    """The group chats the worker would have made for the existing customers (no worker
    runs here): the manager's replies arrive in them."""
    ChatConversation.objects.bulk_create([
        ChatConversation(conversation_sid=c.group_sid, unique_name=UNIQUE_NAME_PREFIX + c.conversation_sid,
                         friendly_name=f"Customer {c.phone}", is_group_chat=True, customer_phone=c.phone)
        for c in customers])
    groups = dict(ChatConversation.objects.filter(conversation_sid__in=[c.group_sid for c in customers])
                  .values_list("conversation_sid", "pk"))
    for customer in customers:
        ChatConversation.objects.filter(conversation_sid=customer.conversation_sid).update(
            group_chat_id=groups[customer.group_sid])


def customer_message(customer: Customer, *, mms: bool = False) -> dict[str, str]:
    data = payload("onMessageAdded_mms_with_media" if mms else "onMessageAdded_sms_from_customer",
                   ConversationSid=customer.conversation_sid, ParticipantSid=customer.participant_sid,
                   Author=customer.phone, Index=str(customer.index))
    if not mms:
        data["Body"] = f"Customer {customer.number}, message {customer.index}: the heater is not working"
    customer.index += 1
    return data


def assistant_reply(customer: Customer) -> dict[str, str]:
    data = payload("onMessageAdded_from_assistant_via_api", ConversationSid=customer.conversation_sid,
                   Index=str(customer.index), Attributes="{}",
                   Body=f"Thanks, a technician will call you today (reply {customer.index}).")
    customer.index += 1
    return data


def manager_reply(customer: Customer) -> dict[str, str]:
    data = payload("onMessageAdded_sms_from_customer", ConversationSid=customer.group_sid,
                   ParticipantSid=sid("MB"), Author=normalize_phone(convlink_settings.MANAGER_PHONE),
                   Index=str(customer.group_index),
                   Body=f"On it, {customer.number}: the technician comes at 3 pm.")
    customer.group_index += 1
    return data


@dataclass
class Request:
    raw: bytes  # the whole HTTP/1.1 request, signed
    params: dict[str, str]

    @property
    def message_sid(self) -> str:
        return self.params["MessageSid"]


class Signer:
    """Builds the raw HTTP/1.1 bytes of a signed delivery to one path of the server."""

    def __init__(self, port: int, path: str) -> None:
        self.host = f"127.0.0.1:{port}"
        self.path = path
        # The URL as gunicorn's request shows it to Django: both views validate against
        # request.build_absolute_uri() (the library has no WEBHOOK_URL in these settings).
        self.url = f"http://{self.host}{path}"

    def request(self, params: dict[str, str]) -> Request:
        body = urlencode(params).encode()
        head = (
            f"POST {self.path} HTTP/1.1\r\n"
            f"Host: {self.host}\r\n"
            "Content-Type: application/x-www-form-urlencoded\r\n"
            f"Content-Length: {len(body)}\r\n"
            f"X-Twilio-Signature: {signature(self.url, params, TOKEN)}\r\n"
            f"I-Twilio-Idempotency-Token: {uuid.uuid4()}\r\n"
            "User-Agent: TwilioProxy/1.1\r\n"
            "Connection: close\r\n\r\n"
        )
        return Request(head.encode() + body, params)


# --- The load generator ------------------------------------------------------------------------

@dataclass
class Phase:
    """One timed run of requests against one endpoint."""

    seconds: float
    latencies: list[float]  # seconds, per request
    worker_cpu: float  # CPU seconds the gunicorn workers used

    @property
    def per_second(self) -> float:
        return len(self.latencies) / self.seconds

    def latency_ms(self, pct: float) -> float:
        return percentile(self.latencies, pct) * 1000

    @property
    def cpu_ms(self) -> float:
        return self.worker_cpu / len(self.latencies) * 1000

    def __str__(self) -> str:
        return (f"{self.per_second:.0f}/s, p50 {self.latency_ms(50):.1f} ms, "
                f"p99 {self.latency_ms(99):.1f} ms, worker CPU {self.cpu_ms:.2f} ms")


def send_all(requests: list[Request], port: int) -> tuple[float, list[float]]:
    """Send every request from CONCURRENCY threads; (wall seconds, latency of each).

    Raises when any answer is not 200: a failed request would flatter the figures."""
    count = len(requests)
    latencies = [0.0] * count
    answers: list[bytes | str] = [b""] * count
    order = itertools.count()  # next() on a count is atomic under the GIL
    barrier = threading.Barrier(CONCURRENCY + 1)

    def client() -> None:
        barrier.wait(timeout=10)
        while (i := next(order)) < count:
            started = time.perf_counter()
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=REQUEST_TIMEOUT) as sock:
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    sock.sendall(requests[i].raw)
                    # The status line is all we need; reading to the server's close
                    # times the whole exchange.
                    head = sock.recv(65536)
                    while sock.recv(65536):
                        pass
            except OSError as exc:
                answers[i] = f"{type(exc).__name__}: {exc}"
                continue
            latencies[i] = time.perf_counter() - started
            answers[i] = head

    threads = [threading.Thread(target=client, name=f"throughput-client-{n}", daemon=True)
               for n in range(CONCURRENCY)]
    for thread in threads:
        thread.start()
    barrier.wait(timeout=10)
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    failed = [(requests[i].message_sid, answer) for i, answer in enumerate(answers)
              if not (isinstance(answer, bytes) and answer.startswith((b"HTTP/1.1 200", b"HTTP/1.0 200")))]
    if failed:
        first = [(message_sid, answer[:300] if isinstance(answer, bytes) else answer)
                 for message_sid, answer in failed[:3]]
        raise RuntimeError(f"{len(failed)} of {count} requests not answered 200, first: {first}")
    return elapsed, latencies


# --- gunicorn ----------------------------------------------------------------------------------

@dataclass
class Server:
    process: subprocess.Popen
    port: int
    log: Path

    def workers(self) -> list[int]:
        return children(self.process.pid)

    def check_alive(self) -> None:
        if self.process.poll() is not None:
            raise RuntimeError(f"gunicorn exited with {self.process.returncode}:\n{self.log_tail()}")

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def log_tail(self) -> str:
        return self.log_text()[-10000:]


@contextmanager
def gunicorn() -> Iterator[Server]:
    """gunicorn serving bench.wsgi on this process's test database, stopped on exit (before
    bench.part drops the database its workers are connected to)."""
    port = free_port()
    env = {
        **os.environ,  # BENCH_DATABASE_URL and BENCH_TASK_BACKEND, as bench.part set them
        "DJANGO_SETTINGS_MODULE": "bench.settings",
        "BENCH_TEST_DATABASE_NAME": connection.settings_dict["NAME"],
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        "PYTHONUNBUFFERED": "1",
    }
    command = gunicorn_command("bench.wsgi:application", workers=WORKERS, port=port)
    with tempfile.TemporaryDirectory(prefix="convlink-throughput-") as tmp:
        log = Path(tmp) / "gunicorn.log"
        with log.open("wb") as out:
            process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                                       stdin=subprocess.DEVNULL)
        server = Server(process, port, log)
        try:
            wait_until_serving(server)
            yield server
            server.check_alive()
        finally:
            stop(process)


def wait_until_serving(server: Server) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        server.check_alive()
        try:
            with socket.create_connection(("127.0.0.1", server.port), timeout=2) as sock:
                sock.sendall(f"HEAD {LIBRARY_PATH} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                             "Connection: close\r\n\r\n".encode())
                answer = sock.recv(1024)
            if answer.startswith(b"HTTP/1.1 200") and len(server.workers()) == WORKERS:
                return
        except OSError:
            pass
        time.sleep(0.2)
    server.check_alive()
    raise RuntimeError(f"gunicorn did not serve within {START_TIMEOUT} s:\n{server.log_tail()}")


# --- The benchmark -----------------------------------------------------------------------------

class Benchmark:
    def __init__(self, server: Server, *, requests: int, rounds: int, existing: int) -> None:
        self.server = server
        self.requests = requests
        self.rounds = rounds
        self.rng = random.Random(SEED)
        self.library = Signer(server.port, LIBRARY_PATH)
        self.baseline = Signer(server.port, BASELINE_PATH)
        self.hand_written = Signer(server.port, HAND_WRITTEN_PATH)
        numbers = itertools.count()
        self.existing = [Customer(next(numbers)) for _ in range(existing)]
        first_per_round = round(requests * FIRST_SHARE)
        self.new = [[Customer(next(numbers)) for _ in range(first_per_round)] for _ in range(rounds)]
        self.customers = self.existing + [c for customers in self.new for c in customers]
        # What was sent, for the checks afterwards.
        self.library_sids: list[str] = []
        self.baseline_sids: list[str] = []
        self.hand_sids: list[str] = []
        self.forwarded = 0

    def run(self) -> list[Row]:
        create_bookings(self.customers)
        # Each customer's first message, through the library: the existing conversations
        # are what the library itself makes of them (linked, a task enqueued).
        warm_library = [self.sign_library(customer_message(c), forwarded=True) for c in self.existing]
        self.send(warm_library, self.baseline_twins(warm_library), self.hand_twins(warm_library))
        create_group_chats(self.existing)
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE")  # planner statistics, as a site's autovacuum keeps them

        rounds: list[tuple[Phase, Phase, Phase]] = []
        for number in range(self.rounds):
            library = self.library_round(self.new[number])
            sides = {"library": library, "baseline": self.baseline_twins(library),
                     "hand": self.hand_twins(library)}
            self.server.check_alive()
            # The order turns each round, so that drift favours no side.
            order = list(sides)[number % 3:] + list(sides)[:number % 3]
            measured = {name: self.phase(sides[name]) for name in order}
            lib, base, hand = measured["library"], measured["baseline"], measured["hand"]
            rounds.append((lib, base, hand))
            # Per round on stderr, so the spread behind the medians can be judged.
            print(f"throughput round {number + 1}/{self.rounds}: library {lib}; baseline {base}; "
                  f"hand-written {hand}; ratios {lib.per_second / base.per_second:.2f} (bare), "
                  f"{lib.per_second / hand.per_second:.2f} (hand-written)", file=sys.stderr)
        self.server.check_alive()
        self.check()
        return self.rows(rounds)

    def sign_library(self, params: dict[str, str], *, forwarded: bool = False) -> Request:
        request = self.library.request(params)
        self.library_sids.append(request.message_sid)
        self.forwarded += forwarded
        return request

    def baseline_twins(self, library: list[Request]) -> list[Request]:
        """The same fields to the baseline, each with a MessageSid of its own."""
        twins = []
        for request in library:
            twin = self.baseline.request({**request.params, "MessageSid": sid("IM")})
            twins.append(twin)
            self.baseline_sids.append(twin.message_sid)
        return twins

    def hand_twins(self, library: list[Request]) -> list[Request]:
        """The same fields to the hand-written view, each with a MessageSid of its own
        (its own tables: the same conversation SIDs are its own conversations)."""
        twins = []
        for request in library:
            twin = self.hand_written.request({**request.params, "MessageSid": sid("IM")})
            twins.append(twin)
            self.hand_sids.append(twin.message_sid)
        return twins

    def library_round(self, new_customers: list[Customer]) -> list[Request]:
        """One round's deliveries in a random order; Index counts up in sending order."""
        replies = round(self.requests * (ASSISTANT_SHARE + MANAGER_SHARE))
        assistant = round(self.requests * ASSISTANT_SHARE)
        kinds = (["first"] * len(new_customers) + ["assistant"] * assistant
                 + ["manager"] * (replies - assistant)
                 + ["later"] * (self.requests - len(new_customers) - replies))
        self.rng.shuffle(kinds)
        firsts = iter(new_customers)
        requests = []
        for kind in kinds:
            if kind == "first":
                requests.append(self.sign_library(customer_message(next(firsts)), forwarded=True))
                continue
            customer = self.rng.choice(self.existing)
            if kind == "assistant":
                requests.append(self.sign_library(assistant_reply(customer)))
            elif kind == "manager":
                requests.append(self.sign_library(manager_reply(customer)))
            else:
                mms = self.rng.random() < MMS_SHARE
                requests.append(self.sign_library(customer_message(customer, mms=mms), forwarded=True))
        return requests

    def send(self, *phases: list[Request]) -> None:
        for requests in phases:
            send_all(requests, self.server.port)

    def phase(self, requests: list[Request]) -> Phase:
        workers = self.server.workers()
        cpu_before = cpu_seconds(workers)
        elapsed, latencies = send_all(requests, self.server.port)
        return Phase(elapsed, latencies, cpu_seconds(workers) - cpu_before)

    def check(self) -> None:
        """Cheap proof that the library did the whole job for every delivery."""
        problems = []
        stored = set(ChatMessage.objects.values_list("message_sid", flat=True))
        if len(self.library_sids) != len(set(self.library_sids)) or stored != set(self.library_sids):
            problems.append(f"{len(stored)} message rows for {len(self.library_sids)} MessageSids sent "
                            f"({len(set(self.library_sids) - stored)} missing, "
                            f"{len(stored - set(self.library_sids))} unexpected)")
        statuses = Counter(WebhookDelivery.objects.values_list("status", flat=True))
        if statuses != {DeliveryStatus.PROCESSED: len(self.library_sids)}:
            problems.append(f"deliveries {dict(statuses)}, expected {len(self.library_sids)} processed")
        tasks = DBTaskResult.objects.count()
        pending = ChatMessage.objects.filter(forward_state=ForwardState.PENDING).count()
        if tasks != self.forwarded or pending != self.forwarded:
            problems.append(f"{tasks} tasks enqueued and {pending} messages pending for "
                            f"{self.forwarded} customer messages")
        linked = set(ChatConversation.objects.filter(booking__isnull=False)
                     .values_list("conversation_sid", flat=True))
        booked = {c.conversation_sid for c in self.customers if c.booked}
        if linked != booked:
            problems.append(f"{len(linked)} conversations linked to a booking, expected {len(booked)}")
        pings = list(Ping.objects.values_list("message_sid", flat=True))
        if len(pings) != len(self.baseline_sids) or set(pings) != set(self.baseline_sids):
            problems.append(f"{len(pings)} baseline rows for {len(self.baseline_sids)} requests")
        hand = PlainMessage.objects.count()
        if hand != len(self.hand_sids):
            problems.append(f"{hand} hand-written messages for {len(self.hand_sids)} requests")
        # Work after the answer (the task enqueued on commit, a relink) only logs its failures.
        log = self.server.log_text()
        if "Traceback" in log or "ERROR" in log:
            problems.append(f"errors in the server log:\n{log[-10000:]}")
        if problems:
            raise RuntimeError("throughput: the server did not do the job: " + "; ".join(problems))

    def rows(self, rounds: list[tuple[Phase, Phase, Phase]]) -> list[Row]:
        def median(figure, phases: list[Phase]) -> float:
            return statistics.median(figure(p) for p in phases)

        library = [lib for lib, _, _ in rounds]
        baseline = [base for _, base, _ in rounds]
        hand = [hand for _, _, hand in rounds]
        hand_per_second = median(lambda p: p.per_second, hand)
        per_second = median(lambda p: p.per_second, library)
        base_per_second = median(lambda p: p.per_second, baseline)
        p50 = median(lambda p: p.latency_ms(50), library)
        p99 = median(lambda p: p.latency_ms(99), library)
        # Django's default CONN_MAX_AGE=0 opens a database connection per request, which
        # costs both endpoints the same few milliseconds and so narrows the gap: say which.
        persistent = connection.settings_dict["CONN_MAX_AGE"] != 0
        mode = "persistent connections" if persistent else "a connection per request"
        return [
            Row(SECTION, f"signed deliveries/s ({WORKERS} gunicorn workers, {CONCURRENCY} clients, {mode})",
                per_second, "deliveries/s", baseline=base_per_second, goal=f"ratio >= {GOAL_RATIO}",
                ok=per_second / base_per_second >= GOAL_RATIO),
            Row(SECTION, f"signed deliveries/s vs the hand-written view ({WORKERS} workers, {mode})",
                per_second, "deliveries/s",
                baseline=hand_per_second, goal=f"ratio >= {GOAL_HAND_RATIO}",
                ok=per_second / hand_per_second >= GOAL_HAND_RATIO),
            Row(SECTION, f"latency p50 ({WORKERS} workers, {mode})", p50, "ms",
                baseline=median(lambda p: p.latency_ms(50), baseline)),
            Row(SECTION, f"latency p99 ({WORKERS} workers, {mode})", p99, "ms",
                baseline=median(lambda p: p.latency_ms(99), baseline),
                goal=f"< {GOAL_P99_MS:.0f} ms", ok=p99 < GOAL_P99_MS),
            Row(SECTION, f"gunicorn worker CPU per delivery ({WORKERS} workers, {mode})",
                median(lambda p: p.cpu_ms, library), "ms", baseline=median(lambda p: p.cpu_ms, baseline)),
        ]

