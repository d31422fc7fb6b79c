"""The history sync and a live webhook storing the same messages at the same moment:
one row per SID, one ``message_received`` each. Needs a database server with row locks
(PostgreSQL, MariaDB in .ci/run); skipped on SQLite, whose single writer lock would
serialize the threads."""

from functools import partial

import pytest

from django_twilio_convlink.events import parse_event
from django_twilio_convlink.history import Sync
from tests.factories import ConversationFactory
from tests.helpers import TwilioClient, at_once, payload
from tests.testapp.models import ChatMessage

pytestmark = [pytest.mark.concurrency, pytest.mark.django_db(transaction=True)]

ROUNDS = 5
CUSTOMER = "+14155550111"


def test_a_sync_and_webhooks_racing_for_the_same_messages_leave_one_row_each(received):
    for round_ in range(ROUNDS):
        conversation = ConversationFactory(customer_phone=CUSTOMER)
        datas = [payload("onMessageAdded_sms_from_customer", ConversationSid=conversation.conversation_sid,
                         Author=CUSTOMER, Body=f"text {n}", Index=str(n)) for n in range(20)]
        events = [parse_event(data) for data in datas]
        sync = Sync(reader=None)  # type: ignore[arg-type]  # storing needs no reads

        def webhooks(chosen=datas[5:15]):
            client = TwilioClient()
            for data in chosen:
                assert client.webhook(data).status_code == 200

        at_once([partial(sync.store_page, conversation, events, {}), webhooks])

        sids = [data["MessageSid"] for data in datas]
        assert ChatMessage.objects.filter(message_sid__in=sids).count() == 20, round_
        announced = [kwargs["message"].message_sid for name, _, kwargs in received.calls
                     if name == "message_received" and kwargs["message"].message_sid in sids]
        assert sorted(announced) == sorted(sids), round_
