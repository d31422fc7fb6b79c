"""Statements per webhook, per scenario, and what a webhook costs in process.

Each scenario is one signed POST through Django's test client (middleware, signature,
parsing, delivery log, event transaction), counted with
``django_twilio_convlink.testing.CaptureStatements``: every statement the database
sees, BEGIN/COMMIT and savepoints included. No test transaction is open around the
requests, as in production.

Every count is exact, from ``bench/statements.py``: ``python -m bench --quick`` fails
when one differs. They are counted with the group chat task enqueued on a queue
outside the database (TASK_BACKEND "dummy"): the queue is the site's choice. A queue
table in the same database (django-tasks-db) adds one INSERT, in its own transaction
after the commit, or inside the event's transaction with ENQUEUE_IN_TRANSACTION:
both are shown in their own rows.

The in-process time of a later message is compared with the baseline view (signature
check and one INSERT, bench/baseline) through the same test client, median of rounds.
"""

from __future__ import annotations

import statistics

from django.db import connection
from django.test import Client, override_settings

from bench.common import Row, median_seconds
from bench.statements import STATEMENTS
from django_twilio_convlink.conf import convlink_settings
from django_twilio_convlink.testing import CaptureStatements, post_signed
from tests.factories import GuestFactory, ReservationFactory
from tests.helpers import payload, sid

WEBHOOK = "/twilio/webhook/"
BASELINE = "/baseline/webhook/"
HAND_WRITTEN = "/baseline/hand-written/"
SECTION = "statements per webhook"


def customer_message(conversation_sid: str, author: str, index: int) -> dict[str, str]:
    return payload("onMessageAdded_sms_from_customer", ConversationSid=conversation_sid,
                   Author=author, Index=str(index))


def task_backend(name: str, *, in_transaction: bool = False, media: bool = False) -> override_settings:
    from django.conf import settings

    return override_settings(TWILIO_CONVLINK={**settings.TWILIO_CONVLINK, "TASK_BACKEND": name,
                                              "ENQUEUE_IN_TRANSACTION": in_transaction,
                                              "MEDIA_DOWNLOAD": media})


def count(client: Client, data: dict[str, str]) -> tuple[int, list[str]]:
    with CaptureStatements(connection) as captured:
        response = post_signed(client, WEBHOOK, data)
    if response.status_code != 200:
        raise RuntimeError(f"{data['EventType']} answered {response.status_code}: {response.content!r}")
    return len(captured), captured.sql


def run(quick: bool) -> list[Row]:
    client = Client()
    manager = convlink_settings.MANAGER_PHONE
    assistant = convlink_settings.ASSISTANT_IDENTITY
    customer, other, stranger = "+14155550142", "+14155550143", "+14155550199"
    for phone in (customer, other):
        ReservationFactory(guest=GuestFactory(mobile=phone))

    rows: list[Row] = []

    def scenario(case: str, data: dict[str, str]) -> list[str]:
        statements, sql = count(client, data)
        expected = STATEMENTS[case]
        rows.append(Row(SECTION, case, statements, "statements", goal=f"= {expected}",
                        ok=statements == expected, ceiling=True))
        return sql

    conversation = sid("CH")
    with task_backend("dummy"):
        first = scenario("customer's first message, booking found",
                         customer_message(conversation, customer, 0))
        later = customer_message(conversation, customer, 1)
        scenario("customer's next message", later)
        scenario("manager reply", customer_message(conversation, manager, 2))
        reply = customer_message(conversation, assistant, 3)
        scenario("assistant message", reply)
        scenario("redelivery", {**later, "RetryCount": "1"})
        scenario("onConversationAdded, new conversation (booking found)",
                 payload("onConversationAdded_sms_autocreated", ConversationSid=sid("CH"),
                         **{"MessagingBinding.Address": other}))
        scenario("customer's first message, no booking", customer_message(sid("CH"), stranger, 0))
        scenario("ignored event (onParticipantAdded)",
                 payload("onParticipantAdded_sms", ConversationSid=conversation))
        receipt = payload("onDeliveryUpdated", ConversationSid=conversation, MessageSid=reply["MessageSid"])
        scenario("delivery receipt", receipt)
        scenario("delivery receipt, the same again", {**receipt, "RetryCount": "1"})
    with task_backend("dummy", media=True):
        scenario("customer's photo (MMS), next message, download queued",
                 payload("onMessageAdded_mms_with_media", ConversationSid=conversation, Author=customer,
                         Index="6"))
    with task_backend("database"):
        scenario("customer's next message, django-tasks-db queue, enqueued after the commit",
                 customer_message(conversation, customer, 4))
    with task_backend("database", in_transaction=True):
        scenario("customer's next message, django-tasks-db queue, ENQUEUE_IN_TRANSACTION",
                 customer_message(conversation, customer, 5))

    rows.extend(in_process_time(client, conversation, customer, rounds=3 if quick else 7,
                                requests=50 if quick else 200))
    # The sequence of the first message, for the README and for whoever changes a count.
    print("\n".join(["first customer message, statement by statement:", *(f"  {s[:110]}" for s in first)]))
    return rows


def in_process_time(client: Client, conversation: str, customer: str, *, rounds: int,
                    requests: int) -> list[Row]:
    """A customer's later message, in process, against the bare view (signature, one
    INSERT) and the hand-written one (bench/baseline/views.py), alternating."""
    index = iter(range(100, 10**9))
    plain_conversation = sid("CH")

    def library() -> None:
        for _ in range(requests):
            post_signed(client, WEBHOOK, customer_message(conversation, customer, next(index)))

    def baseline() -> None:
        for _ in range(requests):
            post_signed(client, BASELINE, {"MessageSid": sid("IM"), "Body": "hello"})

    def hand_written() -> None:
        for _ in range(requests):
            post_signed(client, HAND_WRITTEN, customer_message(plain_conversation, customer, next(index)))

    with task_backend("dummy"):
        library()  # warm up
        baseline()
        hand_written()
        # Alternate so that a noisy neighbour hurts every side alike.
        lib_times, base_times, hand_times = [], [], []
        for _ in range(rounds):
            lib_times.append(median_seconds(library, repeat=1))
            base_times.append(median_seconds(baseline, repeat=1))
            hand_times.append(median_seconds(hand_written, repeat=1))
    per_request = 1000 / requests
    section = "time per webhook, in process (test client)"
    figure = statistics.median(lib_times) * per_request
    bare, hand = (statistics.median(times) * per_request for times in (base_times, hand_times))
    return [
        Row(section, "customer's next message vs bare view (signature, one INSERT)", figure, "ms",
            baseline=bare, goal="ratio <= 2", ok=figure <= 2 * bare),
        Row(section, "customer's next message vs hand-written view", figure, "ms",
            baseline=hand, goal="ratio <= 1", ok=figure <= hand),
    ]
