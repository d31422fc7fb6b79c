"""Answering a tenant from the admin: the thread's reply box sends through
``send_message``, for users with "Can send Twilio messages" only, and is disabled,
with the reason, for a customer who opted out."""

import pytest
from django.contrib.auth.models import Permission, User
from django.urls import reverse

from django_twilio_convlink import opt_out
from django_twilio_convlink.api import LocmemBackend
from django_twilio_convlink.exceptions import ApiError
from tests.factories import ConversationFactory
from tests.testapp.models import ChatMessage

pytestmark = pytest.mark.django_db

PHONE = "+14155550111"


def manager(*codenames: str) -> User:
    user = User.objects.create_user(f"manager{User.objects.count()}", password="x", is_staff=True)
    user.user_permissions.set(Permission.objects.filter(codename__in=codenames))
    return user


def page(client, conversation) -> str:
    response = client.get(reverse("admin:testapp_chatconversation_change", args=[conversation.pk]))
    assert response.status_code == 200
    return response.content.decode()


def reply(client, conversation, body: str, **kwargs):
    url = reverse("admin:testapp_chatconversation_reply", args=[conversation.pk])
    return client.post(url, {"body": body}, follow=True, **kwargs)


def test_a_manager_with_the_permission_sends_a_reply(client, api_outbox, received,
                                                      django_capture_on_commit_callbacks):
    conversation = ConversationFactory(customer_phone=PHONE)
    client.force_login(manager("view_chatconversation", "view_chatmessage", "send_twilio_message"))
    html = page(client, conversation)
    assert 'id="convlink-reply-body"' in html and 'form="convlink-reply"' in html
    assert '<form id="convlink-reply" method="post"' in html

    with django_capture_on_commit_callbacks(execute=True):
        response = reply(client, conversation, "A technician comes by at 3pm.")
    assert response.redirect_chain[-1][0].endswith(f"/{conversation.pk}/change/#convlink-reply-box")
    assert "Sent: “A technician comes by at 3pm.”" in response.content.decode()
    [call] = [c for c in api_outbox if c.method == "send_message"]
    assert call.kwargs["conversation_sid"] == conversation.conversation_sid
    message = ChatMessage.objects.get()
    assert (message.body, message.direction, message.message_sid) == (
        "A technician comes by at 3pm.", "outbound", call.result)
    assert "A technician comes by at 3pm." in page(client, conversation)
    assert [kwargs["origin"] for name, _, kwargs in received.calls] == ["api"]


def test_without_the_permission_there_is_no_box_and_no_sending(client, api_outbox):
    conversation = ConversationFactory(customer_phone=PHONE)
    client.force_login(manager("view_chatconversation", "change_chatconversation"))
    html = page(client, conversation)
    assert 'id="convlink-reply-body"' not in html and '<form id="convlink-reply"' not in html
    assert reply(client, conversation, "Hello").status_code == 403
    assert api_outbox == [] and not ChatMessage.objects.exists()


def test_the_reply_needs_a_post_and_the_csrf_token(api_outbox):
    from django.test import Client

    conversation = ConversationFactory(customer_phone=PHONE)
    client = Client(enforce_csrf_checks=True)
    client.force_login(manager("view_chatconversation", "send_twilio_message"))
    url = reverse("admin:testapp_chatconversation_reply", args=[conversation.pk])
    assert client.get(url).status_code == 405
    assert client.post(url, {"body": "Hello"}).status_code == 403
    assert api_outbox == []


def test_an_opted_out_customers_box_is_disabled_with_the_reason(admin_client, api_outbox):
    conversation = ConversationFactory(customer_phone=PHONE)
    opt_out(PHONE, how="keyword", detail="STOP", origin="webhook")
    html = page(admin_client, conversation)
    assert 'form="convlink-reply" rows="3" maxlength="1600" disabled' in html
    assert f"{PHONE} opted out of texts" in html and '<form id="convlink-reply"' not in html
    response = reply(admin_client, conversation, "Hello?")
    assert "Not sent: " in response.content.decode() and "opted out" in response.content.decode()
    assert api_outbox == [] and not ChatMessage.objects.exists()


@pytest.mark.parametrize("body, reason", [("", "no text and no media"), ("x" * 1601, "at most 1600")])
def test_what_cannot_be_sent_says_why(admin_client, api_outbox, body, reason):
    conversation = ConversationFactory(customer_phone=PHONE)
    response = reply(admin_client, conversation, body)
    assert "Not sent: " in response.content.decode() and reason in response.content.decode()
    assert api_outbox == []


def test_a_twilio_failure_is_shown_and_nothing_is_stored(admin_client):
    conversation = ConversationFactory(customer_phone=PHONE)
    LocmemBackend.fail_with = [ApiError("Service Unavailable", code=20503, status=503, transient=True)]
    response = reply(admin_client, conversation, "Hello")
    assert "Not sent: Twilio error 20503: Service Unavailable" in response.content.decode()
    assert not ChatMessage.objects.exists()
