"""The public signals, received the way a site receives them: real receivers connected
to ``django_twilio_convlink.signals``, real commits (no test transaction around the
request), on SQLite and the database servers. The ``received`` fixture (tests/conftest.py)
records them; the race of concurrent duplicates is in tests/system/test_signals_concurrency.py."""

from io import StringIO

import pytest
from django.core.management import call_command
from django.db import DatabaseError, connection
from django.urls import reverse

from django_twilio_convlink import signals
from django_twilio_convlink.models import WebhookDelivery
from tests.factories import ConversationFactory, GuestFactory, ReservationFactory
from tests.helpers import CUSTOMER, TwilioClient, payload
from tests.testapp.models import ChatConversation, ChatMessage

pytestmark = pytest.mark.django_db(transaction=True)

FIRST = "onMessageAdded_sms_from_customer"


def deliver(data, **kwargs):
    return TwilioClient().webhook(data, **kwargs)


def fail_delivery_mark(execute, sql, params, many, context):
    # The last statement of the event's transaction: everything before it rolls back.
    marking = sql.lstrip().upper().startswith("UPDATE") and "webhookdelivery" in sql
    if marking and params and params[0] == "processed":
        raise DatabaseError("simulated: commit-time failure")
    return execute(sql, params, many, context)


def test_a_new_message_is_received_once_after_commit(received):
    data = payload(FIRST)
    assert deliver(data).status_code == 200
    name, sender, kwargs = received.calls[0]
    assert (name, sender) == ("message_received", ChatMessage)
    assert kwargs["message"].message_sid == data["MessageSid"]
    assert kwargs["conversation"].conversation_sid == data["ConversationSid"]
    assert (kwargs["origin"], kwargs["committed"]) == ("webhook", True)
    assert received.names() == ["message_received", "event_received"]
    assert deliver({**data, "RetryCount": "1"}).status_code == 200  # a redelivery
    assert received.names() == ["message_received", "event_received", "event_received"]


def test_event_received_for_every_signed_delivery(received):
    for name in ("onParticipantAdded_sms", "onDeliveryUpdated", "onConversationAdded_sms_autocreated"):
        data = payload(name)
        assert deliver(data).status_code == 200
        event, sender, kwargs = received.calls[-1]
        assert (event, sender, kwargs["event_type"], kwargs["params"]) == (
            "event_received", WebhookDelivery, data["EventType"], data)
        assert kwargs["delivery"].status == "received"  # the instance as recorded; the row says:
        assert WebhookDelivery.objects.get(pk=kwargs["delivery"].pk).status == "processed"
    assert "message_received" not in received.names()


def test_updates_and_removals_are_sent_once_per_change(received):
    added = payload(FIRST)
    deliver(added)
    ids = {"MessageSid": added["MessageSid"], "ConversationSid": added["ConversationSid"]}
    update = payload("onMessageUpdated", Body="Now the boiler too", DateUpdated="2026-11-20T14:00:00Z", **ids)
    deliver(update)
    deliver({**update, "RetryCount": "1"})  # a redelivery of the update: no change
    deliver(payload("onMessageUpdated", Body="older", DateUpdated="2026-11-20T13:00:00Z", **ids))  # stale
    removal = payload("onMessageRemoved", **ids)
    deliver(removal)
    deliver({**removal, "RetryCount": "1"})
    message_calls = [(name, kwargs) for name, _, kwargs in received.calls
                     if name.startswith("message") and kwargs["origin"] != "group_chat"]
    assert [name for name, _ in message_calls] == ["message_received", "message_updated", "message_removed"]
    assert message_calls[1][1]["message"].body == "Now the boiler too"
    assert message_calls[2][1]["message"].is_removed


def test_nothing_is_sent_for_a_change_that_rolled_back(received):
    data = payload(FIRST)
    with connection.execute_wrapper(fail_delivery_mark):
        assert deliver(data).status_code == 500
    assert not ChatMessage.objects.exists()
    assert received.names() == ["delivery_failed"]
    _, sender, kwargs = received.calls[0]
    assert sender is WebhookDelivery and isinstance(kwargs["exception"], DatabaseError)
    assert kwargs["delivery"].pk == WebhookDelivery.objects.get().pk


def test_a_replay_says_so_and_a_no_op_replay_sends_no_change(received):
    data = payload(FIRST)
    with connection.execute_wrapper(fail_delivery_mark):
        deliver(data)
    call_command("replay_twilio_webhooks", "--failed", stdout=StringIO())
    replayed = [kwargs for name, _, kwargs in received.calls if name == "message_received"]
    assert [kwargs["origin"] for kwargs in replayed] == ["replay", "group_chat"]
    delivery = WebhookDelivery.objects.get()
    call_command("replay_twilio_webhooks", str(delivery.pk), stdout=StringIO())  # changes nothing
    assert received.names().count("message_received") == 1


def test_a_failed_replay_sends_delivery_failed(received):
    with connection.execute_wrapper(fail_delivery_mark):
        deliver(payload(FIRST))
        with pytest.raises(Exception, match="1 delivery failed"):
            call_command("replay_twilio_webhooks", "--failed", stdout=StringIO(), stderr=StringIO())
    assert received.names() == ["delivery_failed", "delivery_failed"]


def test_a_raising_receiver_is_logged_and_changes_nothing_else(received, caplog):
    def broken(sender, **kwargs):
        raise RuntimeError("the site's receiver is broken")

    signals.message_received.connect(broken)
    try:
        assert deliver(payload(FIRST, Author=CUSTOMER)).status_code == 200
    finally:
        signals.message_received.disconnect(broken)
    assert ChatMessage.objects.filter(author=CUSTOMER).count() == 1
    assert WebhookDelivery.objects.get().status == "processed"
    assert received.names() == ["message_received", "event_received"]  # the others still ran
    record = next(r for r in caplog.records if r.name == "django_twilio_convlink.signals")
    assert record.levelname == "ERROR" and "message_received" in record.getMessage()
    assert record.exc_info and "the site's receiver is broken" in str(record.exc_info[1])


# --- conversation_linked: every path, one signal per booking -------------------------------

@pytest.fixture
def linked():
    calls = []

    def receive(sender, **kwargs):
        calls.append((sender, {k: v for k, v in kwargs.items() if k != "signal"}))

    signals.conversation_linked.connect(receive)
    yield calls
    signals.conversation_linked.disconnect(receive)


def test_linked_automatically_by_the_first_message(linked):
    booking = ReservationFactory(guest=GuestFactory(mobile="(415) 555-0142"))
    data = payload(FIRST, Author="+14155550142")
    deliver(data)
    conversation = ChatConversation.objects.get(conversation_sid=data["ConversationSid"])
    assert linked == [(ChatConversation, {"conversation_pks": [conversation.pk], "booking_pk": booking.pk,
                                          "apartment_pk": booking.unit_id, "method": "automatic"})]
    deliver(payload(FIRST, Author="+14155550142", Index="1", ConversationSid=data["ConversationSid"]))
    assert len(linked) == 1  # the lookup runs once


def test_linked_retroactively_when_the_booking_is_saved_later(linked):
    first = ConversationFactory(customer_phone="+14155550142")
    second = ConversationFactory(customer_phone="+14155550142")
    ConversationFactory(customer_phone="+14155550199")
    booking = ReservationFactory(guest=GuestFactory(mobile="(415) 555-0142"))
    [(sender, kwargs)] = linked
    assert sender is ChatConversation and sorted(kwargs.pop("conversation_pks")) == [first.pk, second.pk]
    assert kwargs == {"booking_pk": booking.pk, "apartment_pk": booking.unit_id, "method": "retroactive"}


def test_the_repair_command_sends_one_signal_per_booking(linked):
    bookings = [ReservationFactory(guest=GuestFactory(mobile=f"(415) 555-01{n:02d}")) for n in range(3)]
    # Conversations stored behind the app's back (no lookup ran), three per customer.
    ChatConversation.objects.bulk_create([
        ChatConversation(conversation_sid=f"CH{n:02d}{k}" + "0" * 29, customer_phone=f"+1415555 01{n:02d}"
                         .replace(" ", "")) for n in range(3) for k in range(3)])
    call_command("update_conversation_links", stdout=StringIO())
    assert sorted((kwargs["booking_pk"], len(kwargs["conversation_pks"]), kwargs["method"])
                  for _, kwargs in linked) == sorted((b.pk, 3, "retroactive") for b in bookings)


def test_nothing_is_announced_for_a_link_that_rolled_back(linked):
    ReservationFactory(guest=GuestFactory(mobile="(415) 555-0142"))
    with connection.execute_wrapper(fail_delivery_mark):
        assert deliver(payload(FIRST, Author="+14155550142")).status_code == 500
    assert linked == []


def admin_link_form(booking):
    """The admin's change form of a conversation, linking it to ``booking``."""
    return {"friendly_name": "x", "unique_name": "", "state": "", "customer_phone": CUSTOMER,
            "booking": booking.pk, "apartment": booking.unit.pk, "chat_service_sid": "",
            "messaging_service_sid": "", "attributes": "{}", "account_sid": "",
            "messages-TOTAL_FORMS": "0", "messages-INITIAL_FORMS": "0"}


def test_a_manual_link_in_the_admin_is_announced(linked, admin_client):
    booking = ReservationFactory(guest=GuestFactory(mobile="(415) 555-0199"))
    conversation = ConversationFactory(customer_phone=CUSTOMER)
    form = admin_link_form(booking)
    url = reverse("admin:testapp_chatconversation_change", args=[conversation.pk])
    assert admin_client.post(url, form).status_code == 302
    assert linked == [(ChatConversation, {"conversation_pks": [conversation.pk], "booking_pk": booking.pk,
                                          "apartment_pk": booking.unit_id, "method": "manual"})]


@pytest.mark.parametrize("per_customer", [1, 40])
def test_a_batch_announcement_costs_one_select_whatever_the_conversations(linked, per_customer):
    from django_twilio_convlink.testing import CaptureStatements

    for n in range(3):
        ReservationFactory(guest=GuestFactory(mobile=f"(415) 555-01{n:02d}"))
    ChatConversation.objects.bulk_create([
        ChatConversation(conversation_sid=f"CH{n:02d}{k:04d}" + "0" * 26, customer_phone=f"+141555501{n:02d}")
        for n in range(3) for k in range(per_customer)])
    with CaptureStatements(connection) as captured:
        call_command("update_conversation_links", stdout=StringIO())
    assert len(linked) == 3
    assert sum(len(kwargs["conversation_pks"]) for _, kwargs in linked) == 3 * per_customer
    selects = [sql for sql in captured.sql if "linked_at" in sql and sql.lstrip().startswith("SELECT")]
    assert len(selects) == 1, captured.sql


# --- What a receiver may write ------------------------------------------------------------

@pytest.fixture
def saving_receiver():
    """A site's receiver that marks a field of its own and saves the instances it got,
    as the documentation suggests (docs/signals.rst)."""
    def mark(sender, message, conversation, **kwargs):
        message.notified = True
        message.save()
        conversation.note = "seen"
        conversation.save()

    signals.message_received.connect(mark, weak=False)
    yield
    signals.message_received.disconnect(mark)


def test_a_receiver_that_saves_its_instances_undoes_nothing_the_app_did(saving_receiver, api_outbox):
    """With the immediate task backend the forward runs (and marks the message sent,
    and the conversation's group chat) before message_received reaches the site: the
    receiver's save() must write its own field only, or the message is posted twice."""
    ReservationFactory(guest=GuestFactory(mobile="(415) 555-0142"))
    data = payload(FIRST, Author=CUSTOMER)
    assert deliver(data).status_code == 200
    message = ChatMessage.objects.get(message_sid=data["MessageSid"])
    assert message.notified and (message.forward_state, bool(message.forwarded_sid)) == ("sent", True)
    assert message.conversation.note == "seen" and message.conversation.group_chat is not None
    call_command("retry_group_chats", "--now", stdout=StringIO())
    assert [call.method for call in api_outbox] == ["create_group_chat", "send_message"]


def test_an_instance_saved_after_a_worker_forwarded_it_keeps_the_forward(settings, api_outbox):
    """A receiver that keeps the instance and saves it later (its own task, a slow
    e-mail) while a worker forwards the message in between writes only its field."""
    from django_twilio_convlink.group_chat import forward_customer_message

    settings.TWILIO_CONVLINK = {**settings.TWILIO_CONVLINK, "TASK_BACKEND": "dummy"}
    kept = []
    receiver = lambda sender, message, conversation, **kwargs: kept.append((message, conversation))  # noqa: E731
    signals.message_received.connect(receiver, weak=False)
    try:
        assert deliver(payload(FIRST, Author=CUSTOMER)).status_code == 200
    finally:
        signals.message_received.disconnect(receiver)
    [(message, conversation)] = kept
    assert message.forward_state == "pending"
    forward_customer_message(message.pk)  # the worker
    message.notified = True
    message.save()
    conversation.note = "seen"
    conversation.save()
    message.refresh_from_db()
    conversation.refresh_from_db()
    assert (message.notified, message.forward_state) == (True, "sent")
    assert conversation.note == "seen" and conversation.group_chat is not None
    call_command("retry_group_chats", "--now", stdout=StringIO())
    assert [call.method for call in api_outbox] == ["create_group_chat", "send_message"]


def test_a_stale_instance_still_saves_what_its_holder_changed():
    """Changes made in place (a JSON field) count; save(update_fields=...) is Django's."""
    data = payload(FIRST)
    deliver(data)
    first = ChatMessage.objects.get(message_sid=data["MessageSid"])
    second = ChatMessage.objects.get(message_sid=data["MessageSid"])
    first.body = "corrected by the manager"
    first.save()
    second.attributes["flag"] = "urgent"
    second.save()
    stored = ChatMessage.objects.get(pk=first.pk)
    assert (stored.body, stored.attributes) == ("corrected by the manager", {"flag": "urgent"})
    second.body = "explicit"
    second.save(update_fields=["body"])
    assert ChatMessage.objects.get(pk=first.pk).body == "explicit"


def test_the_group_chat_copy_is_received_like_every_new_row(received):
    """The copy the app posts into the group chat is stored by the app (the REST API
    fires no webhook for it): it is a new row, so message_received announces it,
    once, with origin "group_chat"."""
    ReservationFactory(guest=GuestFactory(mobile="(415) 555-0142"))
    data = payload(FIRST, Author=CUSTOMER)
    deliver(data)
    new_rows = [kwargs for name, _, kwargs in received.calls if name == "message_received"]
    assert [(k["message"].direction, k["origin"], k["committed"]) for k in new_rows] == [
        ("inbound", "webhook", True), ("outbound", "group_chat", True)]
    copy = new_rows[1]["message"]
    assert copy.conversation_id == new_rows[1]["conversation"].pk
    assert new_rows[1]["conversation"].is_group_chat
    assert copy.attributes["forwarded_from"] == data["MessageSid"]
    assert ChatMessage.objects.filter(pk=copy.pk, direction="outbound").exists()


def test_changing_only_the_apartment_does_not_announce_the_same_booking_again(linked, admin_client):
    booking = ReservationFactory(guest=GuestFactory(mobile="(415) 555-0199"))
    other_unit = ReservationFactory().unit
    conversation = ConversationFactory(customer_phone=CUSTOMER)
    form = admin_link_form(booking)
    url = reverse("admin:testapp_chatconversation_change", args=[conversation.pk])
    assert admin_client.post(url, form).status_code == 302
    assert admin_client.post(url, {**form, "apartment": other_unit.pk}).status_code == 302
    assert [kwargs["booking_pk"] for _, kwargs in linked] == [booking.pk]
    conversation.refresh_from_db()
    assert (conversation.apartment_id, conversation.link_method) == (other_unit.pk, "manual")
