"""What one webhook costs in SQL statements, per scenario: a regression guard whose
expected numbers are the bench's table (bench/statements.py), so the two cannot
disagree.

Counted as the database sees them (``CaptureStatements``): every statement,
transaction control, savepoints and the delivery log included. Run as in production:
no test transaction around the request, and the group chat task on a worker backend
(here one that runs nothing), since that work is not the webhook's.
"""

import pytest
from django.db import connection

from bench.statements import STATEMENTS
from django_twilio_convlink.testing import CaptureStatements
from tests.factories import GuestFactory, ReservationFactory
from tests.helpers import TwilioClient, payload

pytestmark = pytest.mark.django_db(transaction=True)

FIRST = "onMessageAdded_sms_from_customer"


class Statements(CaptureStatements):
    """Exactly as many statements as the bench's scenario ``case`` takes."""

    def __init__(self, case: str) -> None:
        super().__init__(connection)
        self.expected = STATEMENTS[case]

    def __exit__(self, *exc_info) -> None:
        super().__exit__(*exc_info)
        assert len(self) == self.expected, "\n".join(self.sql)


@pytest.fixture
def client(settings):
    settings.TWILIO_CONVLINK = {**settings.TWILIO_CONVLINK, "TASK_BACKEND": "dummy"}
    ReservationFactory(guest=GuestFactory(mobile="(415) 555-0142"))
    return TwilioClient()


def test_first_customer_message_with_booking_found(client):
    # delivery INSERT; conversation + "message stored?" SELECT; BEGIN; conversation
    # upsert and read back; message INSERT; booking lookup; link UPDATE; delivery
    # UPDATE; COMMIT.
    with Statements("customer's first message, booking found") as captured:
        assert client.webhook(payload(FIRST)).status_code == 200
    assert captured.sql[2] == "BEGIN" and captured.sql[-1] == "COMMIT"


@pytest.mark.parametrize("author, case", [
    ("+14155550142", "customer's next message"), ("+15612205252", "manager reply"),
    ("ASSISTANT", "assistant message")])
def test_later_message(client, author, case):
    # delivery INSERT; SELECT; BEGIN; message INSERT; delivery UPDATE; COMMIT; and for
    # the system side's messages, which get delivery receipts, the SELECT of receipts
    # that arrived meanwhile.
    client.webhook(payload(FIRST))
    with Statements(case):
        assert client.webhook(payload(FIRST, Author=author, Index="1")).status_code == 200


def test_redelivery(client):
    # delivery INSERT; SELECT finds the message; delivery UPDATE. No transaction.
    data = payload(FIRST)
    client.webhook(data)
    with Statements("redelivery") as captured:
        assert client.webhook({**data, "RetryCount": "1"}).status_code == 200
    assert "BEGIN" not in captured.sql


def test_conversation_added_first(client):
    with Statements("onConversationAdded, new conversation (booking found)"):
        assert client.webhook(payload("onConversationAdded_sms_autocreated")).status_code == 200


def test_first_message_without_a_booking(client):
    with Statements("customer's first message, no booking"):
        assert client.webhook(payload(FIRST, Author="+14155550199")).status_code == 200


@pytest.mark.parametrize("in_transaction, case", [
    (False, "customer's next message, django-tasks-db queue, enqueued after the commit"),
    (True, "customer's next message, django-tasks-db queue, ENQUEUE_IN_TRANSACTION")])
def test_a_queue_table_in_the_same_database(client, settings, in_transaction, case):
    client.webhook(payload(FIRST))
    settings.TWILIO_CONVLINK = {**settings.TWILIO_CONVLINK, "TASK_BACKEND": "database",
                                "ENQUEUE_IN_TRANSACTION": in_transaction}
    with Statements(case):
        assert client.webhook(payload(FIRST, Index="1")).status_code == 200


def test_a_photo_costs_what_a_text_costs(client, settings):
    # The download is the task's work: the webhook only enqueues it.
    client.webhook(payload(FIRST))
    settings.TWILIO_CONVLINK = {**settings.TWILIO_CONVLINK, "MEDIA_DOWNLOAD": True}
    photo = payload("onMessageAdded_mms_with_media", Author="+14155550142", Index="1")
    with Statements("customer's photo (MMS), next message, download queued") as captured:
        assert client.webhook(photo).status_code == 200
    assert STATEMENTS["customer's photo (MMS), next message, download queued"] == \
        STATEMENTS["customer's next message"]
    assert not any("stored_media" in sql.lower() for sql in captured.sql)


def test_acknowledged_event_is_only_logged(client):
    with Statements("ignored event (onParticipantAdded)"):
        assert client.webhook(payload("onParticipantAdded_sms")).status_code == 200


def test_delivery_receipt_costs_no_more_than_a_later_message(client):
    # delivery INSERT; BEGIN; message SELECT ... FOR UPDATE; message UPDATE; delivery
    # UPDATE; COMMIT. The same receipt again: no message UPDATE.
    message = payload(FIRST, Author="ASSISTANT")
    client.webhook(message)
    receipt = payload("onDeliveryUpdated", ConversationSid=message["ConversationSid"],
                      MessageSid=message["MessageSid"])
    assert STATEMENTS["delivery receipt"] <= STATEMENTS["customer's next message"]
    with Statements("delivery receipt"):
        assert client.webhook(receipt).status_code == 200
    with Statements("delivery receipt, the same again"):
        assert client.webhook({**receipt, "RetryCount": "1"}).status_code == 200


def test_counter_sees_transaction_control(client):
    # The counter itself: an empty atomic block that writes is BEGIN, INSERT, COMMIT
    # on every backend, whichever way the driver sends them.
    from django.db import transaction

    from tests.testapp.models import Property

    with CaptureStatements(connection) as captured, transaction.atomic():
        Property.objects.create(title="x")
    assert [sql.split()[0] for sql in captured.sql] == ["BEGIN", "INSERT", "COMMIT"]


def test_group_chat_off_costs_no_statement(client, settings):
    settings.TWILIO_CONVLINK = {**settings.TWILIO_CONVLINK, "GROUP_CHAT": False}
    with Statements("customer's first message, booking found") as captured:
        assert client.webhook(payload(FIRST)).status_code == 200
    assert not any("forward_state" in sql and not sql.startswith("INSERT") for sql in captured.sql)
    with Statements("customer's next message"):
        assert client.webhook(payload(FIRST, Index="1")).status_code == 200
