"""The customer's group chat is created once and each customer message is
forwarded into it once, through the task framework (ImmediateBackend here) and the
in-memory API backend that records every call."""

import datetime
import logging
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from django_twilio_convlink.api import ApiError, LocmemBackend
from django_twilio_convlink.group_chat import forward_customer_message
from tests.factories import GuestFactory, ReservationFactory
from tests.helpers import CUSTOMER, payload, sid
from tests.testapp.models import ChatConversation, ChatMessage

pytestmark = pytest.mark.django_db

FIRST = "onMessageAdded_sms_from_customer"


@pytest.fixture
def deliver(twilio_client, django_capture_on_commit_callbacks):
    """Deliver a webhook and run what it enqueued after its commit, as in production."""
    def deliver(data):
        with django_capture_on_commit_callbacks(execute=True):
            response = twilio_client.webhook(data)
        assert response.status_code == 200
        return response
    return deliver


@pytest.fixture
def stay():
    return ReservationFactory(guest=GuestFactory(mobile="(415) 555-0142"))


def calls(outbox, method):
    return [call for call in outbox if call.method == method]


def test_first_customer_message_creates_the_group_chat_and_forwards(deliver, api_outbox, stay):
    data = payload(FIRST)
    deliver(data)
    [create] = calls(api_outbox, "create_group_chat")
    assert create.kwargs["unique_name"] == f"convlink-group-{data['ConversationSid']}"
    assert create.kwargs["messaging_service_sid"] == "MG33333333333333333333333333333333"
    members = [(p.address, p.identity, p.projected_address) for p in create.kwargs["participants"]]
    assert members == [(CUSTOMER, "", ""), ("+15612205252", "", ""), ("", "ASSISTANT", "+13153524379")]
    [send] = calls(api_outbox, "send_message")
    assert send.kwargs["conversation_sid"] == create.result
    assert (send.kwargs["author"], send.kwargs["body"]) == ("ASSISTANT", data["Body"])
    assert send.kwargs["attributes"] == {"forwarded_from": data["MessageSid"]}

    customer = ChatConversation.objects.get(conversation_sid=data["ConversationSid"])
    group = customer.group_chat
    assert group.conversation_sid == create.result and group.is_group_chat
    assert (group.booking, group.apartment, group.customer_phone) == (stay, stay.unit, CUSTOMER)
    source = ChatMessage.objects.get(message_sid=data["MessageSid"])
    assert (source.forward_state, source.forwarded_sid) == ("sent", send.result)
    copy = ChatMessage.objects.get(message_sid=send.result)
    assert (copy.conversation, copy.direction, copy.author, copy.body) == (
        group, "outbound", "ASSISTANT", data["Body"])


def test_later_messages_reuse_the_group_chat(deliver, api_outbox, stay):
    deliver(payload(FIRST, Index="0"))
    deliver(payload(FIRST, Index="1", Body="Still cold"))
    assert len(calls(api_outbox, "create_group_chat")) == 1
    assert [c.kwargs["body"] for c in calls(api_outbox, "send_message")][-1] == "Still cold"
    assert len(calls(api_outbox, "send_message")) == 2


def test_media_is_forwarded(deliver, api_outbox, stay):
    deliver(payload("onMessageAdded_mms_with_media"))
    [send] = calls(api_outbox, "send_message")
    assert send.kwargs["media_sid"] == "ME66666666666666666666666666666666"


def test_customer_without_booking_still_gets_a_group_chat(deliver, api_outbox):
    deliver(payload(FIRST))
    assert len(calls(api_outbox, "send_message")) == 1


@pytest.mark.parametrize("author", ["+15612205252", "ASSISTANT", "+13153524379", "system"])
def test_system_messages_are_not_forwarded(deliver, api_outbox, author):
    deliver(payload(FIRST, Author=author))
    assert api_outbox == []
    assert ChatMessage.objects.get().forward_state == ""


def test_redelivery_forwards_nothing_more(deliver, api_outbox, stay):
    data = payload(FIRST)
    deliver(data)
    deliver({**data, "RetryCount": "1"})
    assert [c.method for c in api_outbox] == ["create_group_chat", "send_message"]


def test_message_in_the_group_chat_makes_no_other_group_chat(deliver, api_outbox, stay):
    first = payload(FIRST)
    deliver(first)
    customer = ChatConversation.objects.get(conversation_sid=first["ConversationSid"])
    group_sid = customer.group_chat.conversation_sid
    api_outbox.clear()
    deliver(payload(FIRST, ConversationSid=group_sid, Body="reply to the group"))
    assert api_outbox == []
    assert ChatMessage.objects.get(body="reply to the group").forward_state == ""


def test_running_the_task_again_posts_nothing(deliver, api_outbox, stay):
    data = payload(FIRST)
    deliver(data)
    message = ChatMessage.objects.get(message_sid=data["MessageSid"])
    assert forward_customer_message(message.pk) == message.forwarded_sid
    assert len(calls(api_outbox, "send_message")) == 1


def test_group_chat_can_be_switched_off(deliver, api_outbox, settings):
    settings.TWILIO_CONVLINK = {**settings.TWILIO_CONVLINK, "GROUP_CHAT": False}
    deliver(payload(FIRST))
    assert api_outbox == []


def test_transient_failure_is_recorded_and_retried_by_the_command(deliver, api_outbox, stay, caplog):
    LocmemBackend.fail_with = [ApiError("Service unavailable", status=503, transient=True)]
    data = payload(FIRST)
    with caplog.at_level(logging.WARNING, logger="django_twilio_convlink"):
        deliver(data)  # still a 200: the customer's message is saved
    source = ChatMessage.objects.get(message_sid=data["MessageSid"])
    customer = source.conversation
    assert source.forward_state == "failed"
    assert "Service unavailable" in customer.group_chat_error and customer.group_chat_attempts == 1
    assert customer.group_chat_retry_at > timezone.now()

    out = StringIO()
    call_command("retry_group_chats", stdout=out)  # backoff not over yet
    assert "0 due" in out.getvalue()
    call_command("retry_group_chats", "--now", stdout=out)
    source.refresh_from_db()
    customer.refresh_from_db()
    assert source.forward_state == "sent"
    assert customer.group_chat_error == "" and customer.group_chat_attempts == 0
    assert customer.group_chat_retry_at is None
    # The retry looks for a copy an unanswered attempt may have posted before posting.
    assert [c.method for c in api_outbox] == [
        "create_group_chat", "create_group_chat", "find_forwards", "send_message"]


def test_backoff_grows_and_gives_up_after_max_attempts(deliver, settings, stay):
    settings.TWILIO_CONVLINK = {**settings.TWILIO_CONVLINK, "GROUP_CHAT_MAX_ATTEMPTS": 3,
                                "GROUP_CHAT_RETRY_DELAY": 10}
    LocmemBackend.fail_with = [ApiError("timeout", transient=True) for _ in range(3)]
    data = payload(FIRST)
    deliver(data)
    customer = ChatConversation.objects.get(conversation_sid=data["ConversationSid"])
    first_delay = customer.group_chat_retry_at - timezone.now()
    with pytest.raises(CommandError):
        call_command("retry_group_chats", "--now", stdout=StringIO(), stderr=StringIO())
    customer.refresh_from_db()
    assert customer.group_chat_retry_at - timezone.now() > first_delay
    with pytest.raises(CommandError):
        call_command("retry_group_chats", "--now", stdout=StringIO(), stderr=StringIO())
    customer.refresh_from_db()
    assert customer.group_chat_attempts == 3 and customer.group_chat_retry_at is None
    assert ChatMessage.objects.get(message_sid=data["MessageSid"]).forward_state == "permanent"


@pytest.mark.parametrize("code", [21211, 50436])
def test_permanent_errors_are_recorded_with_their_code_and_not_retried(deliver, api_outbox, stay, code):
    LocmemBackend.fail_with = [ApiError("refused", code=code, status=400, transient=False)]
    data = payload(FIRST)
    deliver(data)
    customer = ChatConversation.objects.get(conversation_sid=data["ConversationSid"])
    assert customer.group_chat_error_code == code and customer.group_chat_retry_at is None
    assert ChatMessage.objects.get(message_sid=data["MessageSid"]).forward_state == "permanent"
    out = StringIO()
    call_command("retry_group_chats", "--now", stdout=out)
    assert "0 due" in out.getvalue() and len(api_outbox) == 1


def test_number_outside_plus_one_is_permanent_without_calling_twilio(deliver, api_outbox):
    data = payload(FIRST, Author="+447911123456")
    deliver(data)
    assert api_outbox == []
    customer = ChatConversation.objects.get(conversation_sid=data["ConversationSid"])
    assert "+1 numbers only" in customer.group_chat_error
    assert ChatMessage.objects.get().forward_state == "permanent"


def test_lost_task_is_picked_up_as_stale_pending(deliver, api_outbox, settings, stay):
    # An enqueue that fails (a broker down) leaves the message pending, and saved.
    settings.TWILIO_CONVLINK = {**settings.TWILIO_CONVLINK, "TASK_BACKEND": "no-such-backend"}
    data = payload(FIRST)
    deliver(data)
    assert api_outbox == []
    assert ChatMessage.objects.get().forward_state == "pending"
    out = StringIO()
    call_command("retry_group_chats", stdout=out)  # not due yet: the task may still run
    assert "0 due" in out.getvalue()
    out = StringIO()
    call_command("retry_group_chats", "--now", stdout=out)
    assert "1 due, 1 forwarded" in out.getvalue()
    assert ChatMessage.objects.get(message_sid=data["MessageSid"]).forward_state == "sent"


def test_nothing_calls_twilio_before_the_webhook_commits(twilio_client, api_outbox,
                                                         django_capture_on_commit_callbacks):
    """The work is enqueued on commit (a worker backend then keeps it out of the
    request entirely: tests/webhook/test_worker.py)."""
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        assert twilio_client.webhook(payload(FIRST)).status_code == 200
    assert api_outbox == [] and callbacks


def test_status_shows_group_chat_failures(deliver, stay):
    LocmemBackend.fail_with = [ApiError("Too Many Requests", status=429, transient=True)]
    deliver(payload(FIRST))
    out = StringIO()
    call_command("check_twilio_status", "--detailed", stdout=out)
    text = out.getvalue()
    assert "=== Group Chats ===" in text
    assert "failed (will be retried) 1" in text
    assert "HTTP 429: Too Many Requests" in text


def test_admin_shows_the_failure(admin_client, deliver, stay):
    from django.urls import reverse

    LocmemBackend.fail_with = [ApiError("too many participants", code=50436, status=400, transient=False)]
    data = payload(FIRST)
    deliver(data)
    customer = ChatConversation.objects.get(conversation_sid=data["ConversationSid"])
    page = admin_client.get(reverse("admin:testapp_chatconversation_change", args=[customer.pk]))
    assert "50436" in page.content.decode() and "too many participants" in page.content.decode()


def test_retry_delay_is_capped():
    from django_twilio_convlink.group_chat import retry_delay

    assert retry_delay(1) == datetime.timedelta(seconds=60)
    assert retry_delay(2) == datetime.timedelta(seconds=120)
    assert retry_delay(30) == datetime.timedelta(hours=1)


def test_console_backend_logs_instead_of_calling(deliver, settings, caplog, stay):
    settings.TWILIO_CONVLINK = {**settings.TWILIO_CONVLINK,
                                "API_BACKEND": "django_twilio_convlink.api.ConsoleBackend"}
    with caplog.at_level(logging.WARNING, logger="django_twilio_convlink.api"):
        deliver(payload(FIRST))
    assert "create group chat" in caplog.text and "send message" in caplog.text
    assert ChatConversation.objects.filter(is_group_chat=True).count() == 1


def test_group_chat_sid_adopted_twice_is_one_row(deliver, api_outbox, stay):
    """Two customer conversations whose creation Twilio answers with the same group
    (it names the existing one) share one group chat row."""
    first, second = payload(FIRST), payload(FIRST, ConversationSid=sid("CH"))
    deliver(first)
    existing = calls(api_outbox, "create_group_chat")[0].result
    LocmemBackend.state.group_chats[f"convlink-group-{second['ConversationSid']}"] = existing
    deliver(second)
    assert ChatConversation.objects.filter(is_group_chat=True).count() == 1


def test_a_success_does_not_strand_an_earlier_failure(deliver, api_outbox, stay):
    """Failures are scheduled per message: message Y succeeding must not cancel the
    retry of message X that failed before it."""
    first = payload(FIRST, Index="0", Body="X")
    LocmemBackend.fail_with = [ApiError("Service unavailable", status=503, transient=True)]
    deliver(first)
    deliver(payload(FIRST, Index="1", Body="Y"))
    assert ChatMessage.objects.get(body="X", direction="inbound").forward_state == "failed"
    assert ChatMessage.objects.get(body="Y", direction="inbound").forward_state == "sent"
    out = StringIO()
    call_command("retry_group_chats", "--now", stdout=out)
    assert "1 due, 1 forwarded" in out.getvalue()
    assert ChatMessage.objects.get(body="X", direction="inbound").forward_state == "sent"


def test_an_outage_across_many_messages_gives_up_on_none(deliver, settings, stay):
    """Attempts count per message: eight texts during an outage are eight first
    failures, not one message's eighth."""
    settings.TWILIO_CONVLINK = {**settings.TWILIO_CONVLINK, "GROUP_CHAT_MAX_ATTEMPTS": 3}
    LocmemBackend.fail_on["create_group_chat"] = [ApiError("down", status=503, transient=True)] * 8
    for index in range(8):
        deliver(payload(FIRST, Index=str(index)))
    states = list(ChatMessage.objects.filter(direction="inbound").values_list("forward_state", flat=True))
    assert states == ["failed"] * 8


def test_a_post_whose_answer_was_lost_is_not_posted_twice(deliver, api_outbox, stay):
    """Twilio stored the copy but the answer timed out: the retry finds it by its
    forwarded_from attribute instead of posting again."""
    LocmemBackend.lose_answer_on["send_message"] = [ApiError("ReadTimeout", transient=True)]
    data = payload(FIRST)
    deliver(data)
    assert ChatMessage.objects.get(message_sid=data["MessageSid"]).forward_state == "failed"
    call_command("retry_group_chats", "--now", stdout=StringIO())
    source = ChatMessage.objects.get(message_sid=data["MessageSid"])
    assert source.forward_state == "sent"
    [send] = calls(api_outbox, "send_message")
    assert source.forwarded_sid == send.result
    assert ChatMessage.objects.filter(message_sid=send.result).count() == 1


def test_every_photo_is_forwarded(deliver, api_outbox, stay):
    media = ('[{"Sid":"ME11111111111111111111111111111111","ContentType":"image/jpeg"},'
             '{"Sid":"ME22222222222222222222222222222222","ContentType":"image/jpeg"}]')
    deliver(payload("onMessageAdded_mms_with_media", Body="two photos", Media=media))
    sends = calls(api_outbox, "send_message")
    assert [(c.kwargs["body"], c.kwargs["media_sid"]) for c in sends] == [
        ("two photos", "ME11111111111111111111111111111111"), ("", "ME22222222222222222222222222222222")]
    assert sends[1].kwargs["attributes"]["part"] == 1
    copies = ChatMessage.objects.filter(conversation__is_group_chat=True)
    assert copies.count() == 2


def test_permanent_failures_can_be_retried_on_request(deliver, api_outbox, stay):
    LocmemBackend.fail_with = [ApiError("Authenticate", code=20003, status=401, transient=False)]
    data = payload(FIRST)
    deliver(data)
    assert ChatMessage.objects.get(message_sid=data["MessageSid"]).forward_state == "permanent"
    out = StringIO()
    call_command("retry_group_chats", "--now", stdout=out)
    assert "0 due" in out.getvalue()
    call_command("retry_group_chats", "--include-permanent", stdout=out)
    assert ChatMessage.objects.get(message_sid=data["MessageSid"]).forward_state == "sent"


def test_a_group_chat_gone_at_twilio_is_made_again(deliver, api_outbox, stay):
    first = payload(FIRST, Index="0")
    deliver(first)
    customer = ChatConversation.objects.get(conversation_sid=first["ConversationSid"])
    old_group = customer.group_chat
    LocmemBackend.fail_on["send_message"] = [ApiError("not found", code=20404, status=404, transient=False)]
    LocmemBackend.state.group_chats.clear()  # deleted at Twilio: its unique name is free again
    deliver(payload(FIRST, Index="1"))
    customer.refresh_from_db()
    assert customer.group_chat is None
    assert ChatMessage.objects.get(index=1, conversation=customer).forward_state == "failed"
    call_command("retry_group_chats", "--now", stdout=StringIO())
    customer.refresh_from_db()
    assert customer.group_chat not in (None, old_group)


def test_photos_retried_on_request_are_each_posted_once(deliver, api_outbox, stay):
    """The first photo reached the group chat, the second was refused for good; the
    retry on request posts only the second one."""
    media = ('[{"Sid":"ME11111111111111111111111111111111","ContentType":"image/jpeg"},'
             '{"Sid":"ME22222222222222222222222222222222","ContentType":"image/jpeg"}]')
    data = payload("onMessageAdded_mms_with_media", Body="two photos", Media=media)
    LocmemBackend.lose_answer_on["send_message"] = [ApiError("ReadTimeout", transient=True)]
    deliver(data)  # the first photo is posted, its answer lost
    LocmemBackend.fail_on["send_message"] = [ApiError("unsupported media", status=400, transient=False)]
    with pytest.raises(CommandError):
        call_command("retry_group_chats", "--now", stdout=StringIO(), stderr=StringIO())
    assert ChatMessage.objects.get(message_sid=data["MessageSid"]).forward_state == "permanent"

    call_command("retry_group_chats", "--include-permanent", stdout=StringIO())
    assert ChatMessage.objects.get(message_sid=data["MessageSid"]).forward_state == "sent"
    [group_sid] = LocmemBackend.state.messages
    posted = [attributes.get("part", 0) for _, attributes in LocmemBackend.state.messages[group_sid]]
    assert posted == [0, 1]
    assert ChatMessage.objects.filter(conversation__is_group_chat=True).count() == 2


def test_a_lost_answer_given_up_on_is_not_posted_again_when_retried_on_request(
        deliver, api_outbox, settings, stay):
    """The only attempt allowed timed out after Twilio stored the copy; the retry on
    request finds that copy instead of posting a second one."""
    settings.TWILIO_CONVLINK = {**settings.TWILIO_CONVLINK, "GROUP_CHAT_MAX_ATTEMPTS": 1}
    LocmemBackend.lose_answer_on["send_message"] = [ApiError("ReadTimeout", transient=True)]
    data = payload(FIRST)
    deliver(data)
    assert ChatMessage.objects.get(message_sid=data["MessageSid"]).forward_state == "permanent"

    call_command("retry_group_chats", "--include-permanent", stdout=StringIO())
    source = ChatMessage.objects.get(message_sid=data["MessageSid"])
    assert source.forward_state == "sent"
    [send] = calls(api_outbox, "send_message")
    assert source.forwarded_sid == send.result
    assert ChatMessage.objects.filter(conversation__is_group_chat=True).count() == 1


@pytest.fixture
def no_tasks_framework(monkeypatch, settings):
    """Django 5.2 without django-tasks, default settings (the real thing, without the
    framework importable at all: tests/webhook/test_default_install.py)."""
    from django.conf import global_settings

    from django_twilio_convlink import tasks

    monkeypatch.setattr(tasks, "TASKS_AVAILABLE", False)
    if hasattr(global_settings, "TASKS"):  # Django 6.0+, where it cannot be absent
        settings.TASKS = global_settings.TASKS
    else:
        del settings.TASKS


def test_without_a_tasks_framework_the_forward_runs_after_the_commit(
        no_tasks_framework, twilio_client, api_outbox, stay, caplog, django_capture_on_commit_callbacks):
    data = payload(FIRST)
    with caplog.at_level(logging.INFO, logger="django_twilio_convlink"):
        with django_capture_on_commit_callbacks(execute=False) as callbacks:
            assert twilio_client.webhook(data).status_code == 200
        assert api_outbox == []  # nothing inside the webhook's transaction
        for callback in callbacks:
            callback()
    assert [call.method for call in api_outbox] == ["create_group_chat", "send_message"]
    assert ChatMessage.objects.get(message_sid=data["MessageSid"]).forward_state == "sent"
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []  # the default is no error


def test_without_a_tasks_framework_a_crashing_forward_is_recorded_not_raised(
        no_tasks_framework, deliver, stay, caplog):
    LocmemBackend.fail_with = [RuntimeError("a bug")]
    data = payload(FIRST)
    deliver(data)  # as the immediate backend would: the webhook's answer does not depend on it
    source = ChatMessage.objects.get(message_sid=data["MessageSid"])
    assert source.forward_state == "permanent"
    assert "RuntimeError: a bug" in source.conversation.group_chat_error
    assert "retry_group_chats" in caplog.text


def test_a_task_that_could_not_be_bound_says_why_enqueuing_fails(settings, deliver, api_outbox, caplog):
    # No backend of TASKS can take the task: the reason logged is the task backend's.
    settings.TASKS = {"default": {"BACKEND": "no.such.Backend"}}
    data = payload(FIRST)
    with caplog.at_level(logging.ERROR, logger="django_twilio_convlink"):
        deliver(data)
    assert api_outbox == []
    assert ChatMessage.objects.get(message_sid=data["MessageSid"]).forward_state == "pending"
    [record] = [r for r in caplog.records if r.name == "django_twilio_convlink.tasks"]
    assert "Could not find backend 'no.such.Backend'" in record.getMessage()
    assert "AttributeError" not in caplog.text
