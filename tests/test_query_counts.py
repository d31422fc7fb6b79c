"""What one webhook costs in SQL statements, per scenario: a regression guard.

The counts include the SAVEPOINT/RELEASE pair pytest-django's test transaction turns
the view's transaction into; in production those two are BEGIN/COMMIT.
"""

import pytest

from tests.conftest import payload
from tests.factories import GuestFactory, ReservationFactory

pytestmark = pytest.mark.django_db

FIRST = "onMessageAdded_sms_from_customer"


@pytest.fixture
def first_message(twilio_client):
    ReservationFactory(guest=GuestFactory(mobile="(415) 555-0142"))
    data = payload(FIRST)
    return data


def test_first_customer_message_with_booking_found(twilio_client, first_message, django_assert_num_queries):
    with django_assert_num_queries(9):
        assert twilio_client.webhook(first_message).status_code == 200


@pytest.mark.parametrize("author", ["+14155550142", "+15612205252", "ASSISTANT"])
def test_later_message(twilio_client, first_message, django_assert_num_queries, author):
    twilio_client.webhook(first_message)
    with django_assert_num_queries(5):
        twilio_client.webhook(payload(FIRST, Author=author, Index="1"))


def test_redelivery(twilio_client, first_message, django_assert_num_queries):
    twilio_client.webhook(first_message)
    with django_assert_num_queries(4):
        twilio_client.webhook({**first_message, "RetryCount": "1"})


def test_acknowledged_event_touches_nothing(twilio_client, django_assert_num_queries):
    with django_assert_num_queries(0):
        twilio_client.webhook(payload("onDeliveryUpdated"))
