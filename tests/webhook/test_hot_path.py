"""The hot path's SQL compiled once per process (``persistence.find_conversation``,
``inserts.insert``) gives what the ORM gives, and steps aside where a site makes the
ORM's behaviour differ: a default manager with values of its own, a ``save()`` of its
own, a ``pre_save``/``post_save`` receiver."""

import datetime

import pytest
from django.db import connection, models
from django.db.models.signals import post_save, pre_save

from django_twilio_convlink import inserts
from django_twilio_convlink.models import WaitingReceipt, WebhookDelivery
from django_twilio_convlink.persistence import (
    _find_conversation_query,
    _find_conversation_sql,
    find_conversation,
)
from tests.factories import ConversationFactory
from tests.helpers import TwilioClient, payload, sid
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
    compiled = _find_conversation_sql(ChatConversation, ChatMessage, "default")
    assert len(compiled.order) == 3 and "LIMIT 1" in compiled.sql.upper()
    assert compiled.attnames == tuple(f.attname for f in ChatConversation._meta.concrete_fields)


def _orm_find(conversation_sid, message_sid):
    found = list(_find_conversation_query(ChatConversation, ChatMessage, "default", conversation_sid,
                                          message_sid))
    if not found:
        return None, None, False
    return found[0], found[0]._convlink_stored_in, bool(found[0]._convlink_receipts_waiting)


@pytest.mark.parametrize("stored", ["here", "elsewhere", "not stored"])
def test_the_compiled_select_finds_what_the_orm_finds(stored):
    conversation = ConversationFactory(state="active", attributes={"k": [1, 2]}, note="vip",
                                           date_created=datetime.datetime(2026, 1, 2, 3, 4, 5,
                                                                          tzinfo=datetime.UTC))
    other = ConversationFactory()
    message_sid = sid("IM")
    if stored != "not stored":
        ChatMessage.objects.create(message_sid=message_sid, author="+14155550100", body="hi",
                                   conversation=conversation if stored == "here" else other)
    WaitingReceipt.objects.create(message_sid=message_sid, participant_sid=sid("MB"))
    assert _find_conversation_sql(ChatConversation, ChatMessage, "default") is not None  # the compiled path
    found, stored_in, waiting = find_conversation(conversation.conversation_sid, message_sid)
    expected, expected_in, expected_waiting = _orm_find(conversation.conversation_sid, message_sid)
    fields = [f.attname for f in ChatConversation._meta.concrete_fields]
    assert [getattr(found, name) for name in fields] == [getattr(expected, name) for name in fields]
    assert (stored_in, waiting) == (expected_in, expected_waiting)
    assert stored_in == {"here": conversation.pk, "elsewhere": other.pk, "not stored": None}[stored]
    assert waiting is True
    assert not found._state.adding and found._state.db == "default"
    assert found._convlink_stored == expected._convlink_stored  # the stale-write guard's snapshot
    assert (found._convlink_stored_in, bool(found._convlink_receipts_waiting)) == (
        expected._convlink_stored_in, bool(expected._convlink_receipts_waiting))
    assert find_conversation(sid("CH"), message_sid) == (None, None, False)


def _row(model, pk):
    return model.objects.filter(pk=pk).values().get()


def test_a_fast_insert_stores_the_row_save_stores(monkeypatch):
    conversation = ConversationFactory()

    def message(message_sid):
        return ChatMessage(message_sid=message_sid, conversation=conversation, author="+14155550100",
                           body="Hola 👋", index=4, attributes={"a": [1]}, media=[{"sid": "ME1"}],
                           date_created=datetime.datetime(2026, 1, 2, tzinfo=datetime.UTC))

    fast, saved = message(sid("IM")), message(sid("IM"))
    assert inserts._plan(ChatMessage, "default") is not None
    saved.save(force_insert=True, using="default")

    def no_save(*args, **kwargs):
        raise AssertionError("the fast path went through save()")

    monkeypatch.setattr(models.Model, "save_base", no_save)
    inserts.insert(fast, using="default")
    monkeypatch.undo()
    assert fast.pk is not None and not fast._state.adding and fast._state.db == "default"
    assert fast._convlink_stored == {**saved._convlink_stored, "message_sid": fast.message_sid,
                                     "created_at": fast.created_at, "updated_at": fast.updated_at}
    fast_row, saved_row = _row(ChatMessage, fast.pk), _row(ChatMessage, saved.pk)
    different = {"id", "message_sid", "created_at", "updated_at"}
    assert {k: v for k, v in fast_row.items() if k not in different} == {
        k: v for k, v in saved_row.items() if k not in different}
    assert fast_row["created_at"] == fast.created_at and fast_row["message_sid"] == fast.message_sid


def test_the_delivery_log_row_is_the_orm_row():
    assert inserts._plan(WebhookDelivery, "default") is not None
    data = payload("onMessageAdded_sms_from_customer")
    assert TwilioClient().webhook(data).status_code == 200
    delivery = WebhookDelivery.objects.get(message_sid=data["MessageSid"])
    assert delivery.params == data and delivery.status == "processed" and delivery.attempts == 1
    assert delivery.received_at is not None and delivery.headers["X-Twilio-Signature"] == "[redacted]"


class Seen(list):
    def __call__(self, sender, instance, **kwargs):
        self.append((sender, kwargs.get("created")))


@pytest.mark.parametrize("signal", [pre_save, post_save])
def test_a_model_signal_receiver_still_sees_both_rows(signal):
    seen = Seen()
    signal.connect(seen, weak=False)
    try:
        assert TwilioClient().webhook(payload("onMessageAdded_sms_from_customer")).status_code == 200
    finally:
        signal.disconnect(seen)
    assert (WebhookDelivery, None if signal is pre_save else True) in seen
    assert (ChatMessage, None if signal is pre_save else True) in seen


def test_a_site_save_of_its_own_is_called(monkeypatch):
    called = []
    plain = ChatMessage.save

    def save(self, *args, **kwargs):  # the site's override
        called.append((self.message_sid, kwargs.get("force_insert")))
        plain(self, *args, **kwargs)

    monkeypatch.setattr(ChatMessage, "save", save)
    data = payload("onMessageAdded_sms_from_customer")
    assert TwilioClient().webhook(data).status_code == 200
    assert (data["MessageSid"], True) in called
    assert ChatMessage.objects.filter(message_sid=data["MessageSid"]).exists()


def test_a_site_save_base_of_its_own_is_called(monkeypatch):
    # django-model-utils' FieldTracker patches save_base, not save.
    called = []
    plain = ChatMessage.save_base

    def save_base(self, *args, **kwargs):
        called.append(self.message_sid)
        plain(self, *args, **kwargs)

    monkeypatch.setattr(ChatMessage, "save_base", save_base)
    data = payload("onMessageAdded_sms_from_customer")
    assert TwilioClient().webhook(data).status_code == 200
    assert data["MessageSid"] in called


def test_a_field_with_a_placeholder_of_its_own_is_saved_by_the_orm(monkeypatch):
    # GIS and MySQL's binary fields choose their placeholder by value (Django 6.1:
    # get_placeholder_sql, before: get_placeholder).
    for hook in ("get_placeholder", "get_placeholder_sql"):
        inserts._plan.cache_clear()
        body = ChatMessage._meta.get_field("body")
        monkeypatch.setattr(body, hook, lambda *args: ("%s", []), raising=False)
        assert inserts._plan(ChatMessage, "default") is None
        monkeypatch.undo()
    inserts._plan.cache_clear()
    assert inserts._plan(ChatMessage, "default") is not None


def test_a_duplicate_insert_raises_integrity_error_and_marks_the_block_for_rollback():
    from django.db import IntegrityError, transaction

    conversation = ConversationFactory()
    message_sid = sid("IM")
    ChatMessage.objects.create(message_sid=message_sid, conversation=conversation)
    assert inserts._plan(ChatMessage, "default") is not None
    with transaction.atomic():
        with pytest.raises(IntegrityError):
            inserts.insert(ChatMessage(message_sid=message_sid, conversation=conversation), using="default")
        assert connection.needs_rollback  # as save() leaves it: no write goes on in a broken block
        transaction.set_rollback(True)

