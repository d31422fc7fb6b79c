"""What one webhook costs in SQL statements, per scenario: a regression guard with the
ceilings of bench/README.rst (first customer message 10, any later message 6, a
redelivery 4).

Counted as the database sees them (``CaptureStatements``): every statement,
transaction control, savepoints and the delivery log included. Run as in production:
no test transaction around the request, and the group chat task on a worker backend
(here one that runs nothing), since that work is not the webhook's.
"""

import pytest
from django.db import connection

from django_twilio_convlink.testing import CaptureStatements
from tests.conftest import TwilioClient, payload
from tests.factories import GuestFactory, ReservationFactory

pytestmark = pytest.mark.django_db(transaction=True)

FIRST = "onMessageAdded_sms_from_customer"


class Statements(CaptureStatements):
    def __init__(self, expected: int) -> None:
        super().__init__(connection)
        self.expected = expected

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
    with Statements(10) as captured:
        assert client.webhook(payload(FIRST)).status_code == 200
    assert captured.sql[2] == "BEGIN" and captured.sql[-1] == "COMMIT"


@pytest.mark.parametrize("author", ["+14155550142", "+15612205252", "ASSISTANT"])
def test_later_message(client, author):
    # delivery INSERT; SELECT; BEGIN; message INSERT; delivery UPDATE; COMMIT.
    client.webhook(payload(FIRST))
    with Statements(6):
        assert client.webhook(payload(FIRST, Author=author, Index="1")).status_code == 200


def test_redelivery(client):
    # delivery INSERT; SELECT finds the message; delivery UPDATE. No transaction.
    data = payload(FIRST)
    client.webhook(data)
    with Statements(3) as captured:
        assert client.webhook({**data, "RetryCount": "1"}).status_code == 200
    assert "BEGIN" not in captured.sql


def test_conversation_added_first(client):
    with Statements(9):
        assert client.webhook(payload("onConversationAdded_sms_autocreated")).status_code == 200


def test_acknowledged_event_is_only_logged(client):
    with Statements(2):
        assert client.webhook(payload("onDeliveryUpdated")).status_code == 200


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
    with Statements(10) as captured:
        assert client.webhook(payload(FIRST)).status_code == 200
    assert not any("forward_state" in sql and not sql.startswith("INSERT") for sql in captured.sql)
    with Statements(6):
        assert client.webhook(payload(FIRST, Index="1")).status_code == 200
