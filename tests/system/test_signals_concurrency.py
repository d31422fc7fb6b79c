"""The public signals under real concurrency: of concurrent duplicates of a message, only
the one that stored it sends ``message_received`` (tests/webhook/test_signals.py has the
rest). Runs on a database server: SQLite would serialize the threads."""

import pytest

from tests.helpers import THREADS, TwilioClient, deliver_at_once, payload
from tests.testapp.models import ChatConversation

pytestmark = pytest.mark.django_db(transaction=True)

FIRST = "onMessageAdded_sms_from_customer"


@pytest.mark.concurrency
def test_a_concurrent_duplicate_that_lost_its_race_sends_nothing(received):
    TwilioClient().webhook(payload(FIRST))  # the conversation exists: the INSERTs race
    data = payload(FIRST, Index="1")
    assert deliver_at_once([{**data, "RetryCount": str(i)} for i in range(THREADS)]) == [200] * THREADS
    assert received.names().count("message_received") == 2  # the first message, and this one once
    assert ChatConversation.objects.count() >= 1
