"""Load: a multi-worker server takes at least 2,000 signed deliveries from at least 16
concurrent clients, for at least 200 customers, 20% of them redeliveries and with
conversation events out of order; afterwards exactly one conversation per SID, one
message per MessageSid, one group chat per customer, every delivery processed, zero
5xx. The test prints the figures (run pytest with -s to see them).

The server is gunicorn with four sync worker processes (tests/wsgi.py, settings
tests/settings_load.py) on the pytest run's test database. The group chat work runs
inside each request (ImmediateBackend) through the real SDK backend, against a fake
Twilio Conversations API served from this process, so that all four workers create
their group chats at one Twilio that keeps unique names unique and counts.

Everything stays on 127.0.0.1; every loop and wait is bounded in count and time.
LOAD_SEED=<n> replays one shuffle.
"""

import http.client
import importlib.util
import itertools
import json
import os
import random
import re
import secrets
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from urllib.parse import urlencode

import pytest
from django.conf import settings
from django.db import connection
from django.db.models import Count

from django_twilio_convlink.group_chat import UNIQUE_NAME_PREFIX
from django_twilio_convlink.models import WebhookDelivery
from django_twilio_convlink.testing import signature
from tests.factories import GuestFactory, ReservationFactory
from tests.fake_twilio import fake_twilio
from tests.helpers import WEBHOOK_PATH, payload, sid
from tests.system.processes import children, cpu_seconds, gunicorn, site_environment
from tests.testapp.models import ChatConversation, ChatMessage

pytestmark = [pytest.mark.concurrency, pytest.mark.django_db(transaction=True)]

WORKERS = 4
CLIENTS = 16
CUSTOMERS = 200
CUSTOMER_MESSAGES = 6  # per customer, each forwarded to the group chat
REPLIES = 1  # per customer, by the assistant: outbound, never forwarded
REDELIVERY_SHARE = 0.2  # of all deliveries sent
BATCH = 2  # customers whose events are shuffled together (so they race each other)
REDELIVERY_SPREAD = 48  # a redelivery goes out at most this many places after its original
REQUEST_TIMEOUT = 30
LOAD_TIMEOUT = 240  # the whole run of deliveries: 30-50 s on an idle 2-core machine


# --- The deliveries --------------------------------------------------------------------------

@dataclass
class Delivery:
    params: dict[str, str]
    token: str  # I-Twilio-Idempotency-Token, the same across redeliveries
    customer: int
    redelivery: bool = False
    body: bytes = b""
    signature: str = ""

    @property
    def event_type(self) -> str:
        return self.params["EventType"]

    def sign(self, url: str) -> "Delivery":
        self.body = urlencode(self.params).encode()
        self.signature = signature(url, self.params, settings.AUTH_TOKEN)
        return self

    def again(self) -> "Delivery":
        """Twilio's retry: the same fields and token, RetryCount one up."""
        params = {**self.params, "RetryCount": str(int(self.params["RetryCount"]) + 1)}
        return Delivery(params, self.token, self.customer, redelivery=True)


def new_token() -> str:
    return str(uuid.uuid4())


@dataclass
class Customer:
    phone: str
    conversation_sid: str
    inbound: list[str]  # message SIDs to be forwarded
    replies: list[str]


def customer_events(number: int) -> tuple[Customer, list[Delivery]]:
    """One customer's 1:1 SMS conversation: onConversationAdded, CUSTOMER_MESSAGES messages
    from the customer and REPLIES by the assistant, each with its own idempotency token."""
    phone = f"+1415555{1000 + number:04d}"
    conversation_sid = sid("CH")
    participant = sid("MB")
    events = [Delivery(payload("onConversationAdded_sms_autocreated", ConversationSid=conversation_sid,
                               RetryCount="0", **{"MessagingBinding.Address": phone}), new_token(), number)]
    inbound, replies = [], []
    for index in range(CUSTOMER_MESSAGES + REPLIES):
        if index < CUSTOMER_MESSAGES:
            data = payload("onMessageAdded_sms_from_customer", ConversationSid=conversation_sid,
                           Author=phone, ParticipantSid=participant, Index=str(index),
                           Body=f"Customer {number}, message {index}")
            inbound.append(data["MessageSid"])
        else:
            data = payload("onMessageAdded_from_assistant_via_api", ConversationSid=conversation_sid,
                           Index=str(index), Body=f"Reply {index} to customer {number}", Attributes="{}",
                           RetryCount="0")
            replies.append(data["MessageSid"])
        events.append(Delivery(data, new_token(), number))
    return Customer(phone, conversation_sid, inbound, replies), events


def plan(rng: random.Random, url: str) -> tuple[list[Customer], list[Delivery]]:
    """Every customer's events, shuffled in batches of BATCH customers (their events race
    each other, conversation events land anywhere among the messages), and one delivery in
    five a redelivery, sent right behind its original or up to REDELIVERY_SPREAD later."""
    customers, originals = [], []
    for start in range(0, CUSTOMERS, BATCH):
        batch = []
        for number in range(start, min(start + BATCH, CUSTOMERS)):
            customer, events = customer_events(number)
            customers.append(customer)
            batch.extend(events)
        rng.shuffle(batch)
        originals.extend(batch)
    # redeliveries / (originals + redeliveries) == REDELIVERY_SHARE
    count = round(len(originals) * REDELIVERY_SHARE / (1 - REDELIVERY_SHARE))
    keyed = [(float(position), delivery) for position, delivery in enumerate(originals)]
    for position in rng.sample(range(len(originals)), count):
        keyed.append((position + rng.uniform(0.1, REDELIVERY_SPREAD), originals[position].again()))
    keyed.sort(key=lambda pair: pair[0])
    return customers, [delivery.sign(url) for _, delivery in keyed]


# --- The clients -----------------------------------------------------------------------------

@dataclass
class Result:
    status: int | None = None
    seconds: float = 0.0
    error: str = ""


def send_all(deliveries: list[Delivery], port: int) -> tuple[list[Result | None], float]:
    """CLIENTS threads, one keep-alive connection each, take the deliveries in order."""
    results: list[Result | None] = [None] * len(deliveries)
    order = iter(range(len(deliveries)))
    order_lock = threading.Lock()
    barrier = threading.Barrier(CLIENTS + 1)
    deadline = time.monotonic() + LOAD_TIMEOUT

    def client() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=REQUEST_TIMEOUT)
        barrier.wait(timeout=10)
        try:
            while time.monotonic() < deadline:
                with order_lock:
                    i = next(order, None)
                if i is None:
                    return
                delivery = deliveries[i]
                headers = {"Content-Type": "application/x-www-form-urlencoded",
                           "X-Twilio-Signature": delivery.signature,
                           "I-Twilio-Idempotency-Token": delivery.token,
                           "User-Agent": "TwilioProxy/1.1"}
                started = time.perf_counter()
                try:
                    conn.request("POST", WEBHOOK_PATH, body=delivery.body, headers=headers)
                    response = conn.getresponse()
                    text = response.read()
                    results[i] = Result(response.status, time.perf_counter() - started,
                                        "" if response.status == 200 else text[:300].decode(errors="replace"))
                except (OSError, http.client.HTTPException) as exc:
                    results[i] = Result(None, time.perf_counter() - started, f"{type(exc).__name__}: {exc}")
                    conn.close()
        finally:
            conn.close()

    threads = [threading.Thread(target=client, daemon=True, name=f"load-client-{n}") for n in range(CLIENTS)]
    for thread in threads:
        thread.start()
    barrier.wait(timeout=10)
    started = time.perf_counter()
    for thread in threads:
        thread.join(timeout=max(0.1, deadline - time.monotonic() + REQUEST_TIMEOUT))
    elapsed = time.perf_counter() - started
    assert not any(thread.is_alive() for thread in threads), "load clients still running past the deadline"
    return results, elapsed


def trouble(log: str) -> str:
    """The server log without its INFO lines (a group chat made, a deadlock retried)."""
    return "\n".join(line for line in log.splitlines() if not line.startswith("INFO "))[-20000:]


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))] if ordered else 0.0


# --- The test --------------------------------------------------------------------------------

def test_two_thousand_deliveries_on_four_workers(tmp_path):
    if importlib.util.find_spec("gunicorn") is None:
        pytest.fail("The load test needs gunicorn: pip install -e '.[test]'")
    seed = int(os.environ.get("LOAD_SEED") or secrets.randbits(32))
    rng = random.Random(seed)
    # Every other customer has a booking, so half the conversations link on the way.
    for number in range(0, CUSTOMERS, 2):
        ReservationFactory(guest=GuestFactory(mobile=f"(415) 555-{1000 + number:04d}"))

    with fake_twilio() as twilio:
        env = site_environment("tests.settings_load", FAKE_TWILIO_URL=twilio.url)
        with gunicorn("tests.wsgi:application", env, tmp_path / "gunicorn.log", workers=WORKERS,
                      path=WEBHOOK_PATH) as server:
            customers, deliveries = plan(rng, server.url)
            workers = children(server.process.pid)
            cpu_before = cpu_seconds(workers)
            results, elapsed = send_all(deliveries, server.port)
            server.check_alive()
            worker_cpu = cpu_seconds(workers) - cpu_before
        log = server.log_text()

    # --- The figures ---
    done = [r for r in results if r is not None]
    statuses = Counter(r.status for r in done)
    latencies = [r.seconds for r in done]
    slowest = max(range(len(results)), key=lambda i: results[i].seconds if results[i] else 0)
    redeliveries = sum(d.redelivery for d in deliveries)
    first_seen: dict[tuple[int, str], int] = {}
    for position, delivery in enumerate(deliveries):
        first_seen.setdefault((delivery.customer, delivery.event_type), position)
    late_conversation_events = sum(
        first_seen[(n, "onConversationAdded")] > first_seen[(n, "onMessageAdded")] for n in range(CUSTOMERS))
    group_pids = set(re.findall(r"^INFO (\d+) django_twilio_convlink\.group_chat: Group chat", log, re.M))
    retries = len(re.findall(r"Retrying on\w+ after", log))
    problems = re.findall(r"^(?:WARNING|ERROR|CRITICAL) .*$", log, re.M)
    print(
        f"\nload (seed {seed}, {connection.vendor}): {len(deliveries)} deliveries for {CUSTOMERS} customers "
        f"from {CLIENTS} clients to {WORKERS} gunicorn workers; {redeliveries} redeliveries "
        f"({redeliveries / len(deliveries):.0%}); onConversationAdded after a message of its conversation "
        f"for {late_conversation_events} of {CUSTOMERS} customers\n"
        f"  wall {elapsed:.1f} s, {len(done) / elapsed:.0f} deliveries/s, latency p50 "
        f"{percentile(latencies, 0.5) * 1000:.0f} ms, p99 {percentile(latencies, 0.99) * 1000:.0f} ms, "
        f"max {max(latencies, default=0) * 1000:.0f} ms ({deliveries[slowest].event_type}"
        f"{', a redelivery' if deliveries[slowest].redelivery else ''}), "
        f"{sum(t > 5 for t in latencies)} over Twilio's 5 s; worker CPU {worker_cpu:.1f} s "
        f"({worker_cpu / len(deliveries) * 1000:.0f} ms a delivery)\n"
        f"  statuses {dict(statuses)}, unanswered {len(results) - len(done)}; "
        f"deadlock retries logged: {retries}, warnings and errors logged: {len(problems)}\n"
        f"  group chats: {sum(twilio.created.values())} created at Twilio, "
        f"{sum(twilio.conflicts.values())} creations refused with 409 "
        f"(for {len(twilio.conflicts)} customers), {twilio.fetches} fetches, made by "
        f"{len(group_pids)} worker processes; {sum(map(len, twilio.messages.values()))} messages posted, "
        f"{twilio.listings} message listings"
    )

    # --- The checks ---
    errors = [f"{deliveries[i].event_type} {deliveries[i].params.get('MessageSid', '')}: {r}"
              for i, r in enumerate(results) if r is None or r.status != 200]
    assert not errors, f"{len(errors)} deliveries not answered 200, first: {errors[:5]}\n{trouble(log)}"
    assert not problems and "Traceback" not in log, trouble(log)
    assert twilio.unexpected == []

    # Every delivery recorded and processed; each redelivery beside its original.
    assert WebhookDelivery.objects.count() == len(deliveries)
    assert dict(WebhookDelivery.objects.values_list("status").annotate(n=Count("pk"))) == {
        "processed": len(deliveries)}
    assert WebhookDelivery.objects.filter(retry_count__gt=0).count() == redeliveries
    tokens = Counter(d.token for d in deliveries)
    stored_tokens = Counter(dict(WebhookDelivery.objects.values_list("idempotency_token")
                                 .annotate(n=Count("pk"))))
    assert stored_tokens == tokens

    # One conversation per SID: each customer's, and one group chat per customer.
    customer_sids = {c.conversation_sid for c in customers}
    per_sid = Counter(dict(ChatConversation.objects.values_list("conversation_sid").annotate(n=Count("pk"))))
    assert set(per_sid.values()) == {1}
    assert set(ChatConversation.objects.filter(is_group_chat=False)
               .values_list("conversation_sid", flat=True)) == customer_sids
    assert ChatConversation.objects.filter(is_group_chat=True).count() == CUSTOMERS
    assert ChatConversation.objects.count() == 2 * CUSTOMERS
    assert len(twilio.created) == CUSTOMERS and set(twilio.created.values()) == {1}

    # One message per MessageSid: every message sent, and one forwarded copy of each
    # customer message, posted once at Twilio.
    per_message = Counter(dict(ChatMessage.objects.values_list("message_sid").annotate(n=Count("pk"))))
    assert set(per_message.values()) == {1}
    sent_messages = {m for c in customers for m in (*c.inbound, *c.replies)}
    assert set(ChatMessage.objects.filter(conversation__is_group_chat=False)
               .values_list("message_sid", flat=True)) == sent_messages
    posted = {m["sid"]: m for messages in twilio.messages.values() for m in messages}
    assert len(posted) == CUSTOMERS * CUSTOMER_MESSAGES

    conversations = {c.conversation_sid: c for c in
                     ChatConversation.objects.filter(is_group_chat=False).select_related("group_chat")}
    inbound = {m.message_sid: m for m in ChatMessage.objects.filter(direction="inbound")}
    for number, customer in enumerate(customers):
        conversation = conversations[customer.conversation_sid]
        group = conversation.group_chat
        assert group is not None and group.is_group_chat, customer
        assert twilio.by_unique_name[group.unique_name] == group.conversation_sid
        assert group.unique_name == UNIQUE_NAME_PREFIX + customer.conversation_sid
        assert conversation.customer_phone == group.customer_phone == customer.phone
        booked = number % 2 == 0
        assert (conversation.booking_id is not None) is booked, customer
        assert group.booking_id == conversation.booking_id
        forwarded = [inbound[m] for m in customer.inbound]
        assert {m.forward_state for m in forwarded} == {"sent"}, customer
        copies = twilio.messages[group.conversation_sid]
        assert sorted(c["sid"] for c in copies) == sorted(m.forwarded_sid for m in forwarded)
        sources = sorted(json.loads(c["attributes"])["forwarded_from"] for c in copies)
        assert sources == sorted(customer.inbound)
        assert group.messages.count() == CUSTOMER_MESSAGES
    assert ChatMessage.objects.filter(direction="inbound").count() == CUSTOMERS * CUSTOMER_MESSAGES
    assert not ChatMessage.objects.exclude(forward_state="").exclude(forward_state="sent").exists()
    assert set(itertools.chain.from_iterable(c.replies for c in customers)) == set(
        ChatMessage.objects.filter(direction="outbound", conversation__is_group_chat=False)
        .values_list("message_sid", flat=True))
