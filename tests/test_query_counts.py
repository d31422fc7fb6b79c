"""What one webhook costs in SQL statements, per scenario: a regression guard.

Run as in production: no test transaction around the request, and the group chat
task on a worker backend (here one that runs nothing), since that work is not the
webhook's. The delivery log's INSERT and UPDATE are included; transaction control
(BEGIN/COMMIT, which SQLite's backend reports and PostgreSQL's does not) is not, so
the figures are the same on every database.
"""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from tests.conftest import TwilioClient, payload
from tests.factories import GuestFactory, ReservationFactory

pytestmark = pytest.mark.django_db(transaction=True)

FIRST = "onMessageAdded_sms_from_customer"


CONTROL = ("BEGIN", "COMMIT", "ROLLBACK", "SAVEPOINT", "RELEASE")


class Statements(CaptureQueriesContext):
    def __init__(self, expected: int) -> None:
        super().__init__(connection)
        self.expected = expected

    def __exit__(self, *exc_info) -> None:
        super().__exit__(*exc_info)
        statements = [q["sql"] for q in self.captured_queries
                      if not q["sql"].lstrip().upper().startswith(CONTROL)]
        assert len(statements) == self.expected, "\n".join(statements)


@pytest.fixture
def statements():
    return Statements


@pytest.fixture
def client(settings):
    settings.TWILIO_CONVLINK = {**settings.TWILIO_CONVLINK, "TASK_BACKEND": "dummy"}
    ReservationFactory(guest=GuestFactory(mobile="(415) 555-0142"))
    return TwilioClient()


def test_first_customer_message_with_booking_found(client, statements):
    with statements(9):
        assert client.webhook(payload(FIRST)).status_code == 200


@pytest.mark.parametrize("author", ["+14155550142", "+15612205252", "ASSISTANT"])
def test_later_message(client, statements, author):
    client.webhook(payload(FIRST))
    with statements(5):
        assert client.webhook(payload(FIRST, Author=author, Index="1")).status_code == 200


def test_redelivery(client, statements):
    data = payload(FIRST)
    client.webhook(data)
    with statements(4):
        assert client.webhook({**data, "RetryCount": "1"}).status_code == 200


def test_conversation_added_first(client, statements):
    with statements(7):
        assert client.webhook(payload("onConversationAdded_sms_autocreated")).status_code == 200


def test_acknowledged_event_is_only_logged(client, statements):
    with statements(2):
        assert client.webhook(payload("onDeliveryUpdated")).status_code == 200
