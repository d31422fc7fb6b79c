"""The hot path's SQL written once per process keeps the ORM's behaviour where a site
makes it differ: a default manager that filters with values of its own."""

import pytest
from django.db import models

from django_twilio_convlink.persistence import _find_conversation_sql
from tests.helpers import TwilioClient, payload
from tests.testapp.models import ChatConversation, ChatMessage

pytestmark = pytest.mark.django_db


class WithoutArchived(models.Manager):
    """A site's default manager that hides archived conversations: a value of its own
    in every query."""

    def get_queryset(self):
        return super().get_queryset().exclude(state="archived")


@pytest.fixture
def archiving_manager(monkeypatch):
    manager = WithoutArchived()
    manager.model, manager.name = ChatConversation, "objects"
    monkeypatch.setitem(ChatConversation._meta.__dict__, "default_manager", manager)
    _find_conversation_sql.cache_clear()
    yield manager
    _find_conversation_sql.cache_clear()


def test_a_default_manager_with_values_of_its_own_is_compiled_per_call(archiving_manager):
    assert _find_conversation_sql(ChatConversation, ChatMessage, "default") is None
    client = TwilioClient()
    data = payload("onMessageAdded_sms_from_customer")
    assert client.webhook(data).status_code == 200
    assert client.webhook({**data, "RetryCount": "1"}).status_code == 200  # found: a redelivery
    assert ChatMessage.objects.filter(message_sid=data["MessageSid"]).count() == 1


def test_the_plain_manager_is_compiled_once():
    _find_conversation_sql.cache_clear()
    sql, order = _find_conversation_sql(ChatConversation, ChatMessage, "default")
    assert len(order) == 3 and "LIMIT 1" in sql.upper()
