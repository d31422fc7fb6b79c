"""What the admin tells a property manager about each text and each customer: whether
a text we sent arrived (and why not, in words), whether a customer may be texted at
all; and the opt-outs a person makes by hand, which are logged like any change."""

import datetime
import logging

import pytest
from django.contrib.admin.models import ADDITION, CHANGE, LogEntry
from django.contrib.auth.models import Permission
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from django_twilio_convlink import opt_in, opt_out
from django_twilio_convlink.models import OptOut
from tests.factories import ConversationFactory, MessageFactory
from tests.testapp.models import ChatConversation

pytestmark = pytest.mark.django_db

PHONE = "+14155550111"
OTHER = "+14155550122"
CONVERSATIONS = "admin:testapp_chatconversation_changelist"
MESSAGES = "admin:testapp_chatmessage_changelist"
OPT_OUTS = "admin:twilio_convlink_optout_changelist"
UNREACHABLE = "Unreachable: the phone is off or out of coverage."


def conversation_page(client, conversation) -> str:
    response = client.get(reverse("admin:testapp_chatconversation_change", args=[conversation.pk]))
    assert response.status_code == 200
    return response.content.decode()


def ours(conversation=None, **fields):
    """A text we sent (the assistant's), with the receipt fields given."""
    return MessageFactory(conversation=conversation or ConversationFactory(customer_phone=PHONE),
                          direction="outbound", author="ASSISTANT", **fields)


# Receipts in the thread and the message list.

@pytest.fixture
def thread():
    """A conversation with one text of ours in each delivery state, and the customer's."""
    conversation = ConversationFactory(customer_phone=PHONE)
    reported = timezone.now() - datetime.timedelta(minutes=5)
    texts = {status: ours(conversation, body=f"Text {status or 'unreported'}", delivery_status=status,
                          delivery_updated_at=reported if status else None)
             for status in ("", "sent", "delivered", "read")}
    texts["failed"] = ours(conversation, body="Your door code is 4711", delivery_status="failed",
                           delivery_error_code=30003, delivery_updated_at=reported)
    texts["undelivered"] = ours(conversation, body="Checkout is at 11", delivery_status="undelivered",
                                delivery_error_code=30007, delivery_updated_at=reported)
    texts["customer"] = MessageFactory(conversation=conversation, author=PHONE, body="Thanks!")
    return conversation, texts


def test_the_thread_says_of_each_of_our_texts_whether_it_arrived(admin_client, thread):
    conversation, _texts = thread
    page = conversation_page(admin_client, conversation)
    for label in ("Sent", "Delivered", "Read"):
        assert f'">{label}</span>' in page
    # Said once: of our unreported text, not of the customer's own.
    assert page.count("No receipt yet") == 1
    assert page.count(">Not delivered</span>") == 2
    assert page.count('<li class="outbound not-delivered">') == 2


def test_a_failed_text_says_why_with_its_error_code_and_meaning(admin_client, thread):
    page = conversation_page(admin_client, thread[0])
    assert "Failed: Twilio could not send it." in page
    assert ('Error <a href="https://www.twilio.com/docs/api/errors/30003" target="_blank" '
            f'rel="noopener">30003</a> — {UNREACHABLE}') in page
    assert "Undelivered: the phone company could not deliver it." in page
    assert "30007</a> — Filtered by the carrier as spam." in page


@pytest.mark.parametrize(("code", "meaning"), [
    (30005, "Unknown number"), (30006, "Landline"), (21610, "The customer opted out (texted STOP)")])
def test_the_common_error_codes_are_explained(admin_client, code, meaning):
    text = ours(delivery_status="failed", delivery_error_code=code)
    page = conversation_page(admin_client, text.conversation)
    assert f"{code}</a> — {meaning}" in page


def test_an_unlisted_error_code_links_to_twilios_page_for_it(admin_client):
    text = ours(delivery_status="undelivered", delivery_error_code=30999)
    page = conversation_page(admin_client, text.conversation)
    assert 'href="https://www.twilio.com/docs/api/errors/30999"' in page
    assert "Twilio's page for the code explains it." in page


def test_a_customer_text_kept_out_of_the_group_chat_says_why(admin_client):
    reason = f"{PHONE} has opted out of texts (texted STOP); nothing was sent."
    message = MessageFactory(conversation=ConversationFactory(customer_phone=PHONE), author=PHONE,
                             body="STOP", forward_state="skipped", forward_skip_reason=reason)
    page = conversation_page(admin_client, message.conversation)
    assert f"Not copied into the group chat: {reason}" in page
    listed = admin_client.get(reverse(MESSAGES)).content.decode()
    assert "forward: Skipped (customer opted out)" in listed and f"{PHONE} has opted out" in listed


def test_the_message_list_shows_the_delivery_of_each_text(admin_client, thread):
    page = admin_client.get(reverse(MESSAGES)).content.decode()
    assert page.count(">Not delivered</span>") == 2 and UNREACHABLE in page
    assert page.count("No receipt yet") == 1


@pytest.mark.parametrize(("choice", "expected"), [
    ("sent", {"sent"}), ("delivered", {"delivered"}), ("read", {"read"}), ("failed", {"failed"}),
    ("undelivered", {"undelivered"}), ("not_delivered", {"failed", "undelivered"}),
    ("none", {""}),  # ours only: the customer's text has no receipt either, and never will
])
def test_the_message_list_filters_by_delivery(admin_client, thread, choice, expected):
    _conversation, texts = thread
    response = admin_client.get(reverse(MESSAGES), {"delivery": choice})
    listed = {message.pk for message in response.context["cl"].result_list}
    assert listed == {texts[status].pk for status in expected}


def test_the_message_page_shows_the_delivery_and_lets_no_one_edit_it(admin_client):
    text = ours(delivery_status="failed", delivery_error_code=30003,
                delivery_receipts={"MB" + "1" * 32: {"status": "failed", "error_code": 30003}})
    page = admin_client.get(reverse("admin:testapp_chatmessage_change", args=[text.pk])).content.decode()
    assert ">Not delivered</span>" in page and UNREACHABLE in page
    assert '<div class="readonly">30003</div>' in page
    assert 'name="delivery_status"' not in page and 'name="delivery_error_code"' not in page


# Opt-outs on the conversation pages.

def test_the_page_of_an_opted_out_customer_says_so_first(admin_client):
    conversation = ConversationFactory(customer_phone=PHONE)
    opt_out(PHONE, how="keyword", detail="STOP", origin="webhook")
    page = conversation_page(admin_client, conversation)
    # Above the form's fields, where the page starts.
    assert page.index("This customer opted out of texts.") < page.index('name="customer_phone"')
    assert "(texted STOP)" in page and f"Until they text START, nothing is sent to {PHONE}" in page
    assert "Opted out of texts since" in page  # the "texts" field, beside the phone
    row = OptOut.objects.get(phone=PHONE)
    assert reverse("admin:twilio_convlink_optout_change", args=[row.pk]) in page


def test_a_customer_opted_out_by_hand_is_opted_back_in_by_hand(admin_client):
    conversation = ConversationFactory(customer_phone=PHONE)
    opt_out(PHONE, detail="asked on the phone")
    page = conversation_page(admin_client, conversation)
    assert "(by hand: asked on the phone)" in page
    assert "Until someone opts them back in" in page


def test_the_page_of_a_customer_who_opted_back_in_says_so(admin_client):
    conversation = ConversationFactory(customer_phone=PHONE)
    opt_out(PHONE, how="keyword", detail="STOP", origin="webhook")
    opt_in(PHONE, how="keyword", detail="START", origin="webhook")
    page = conversation_page(admin_client, conversation)
    assert "This customer opted out" not in page
    assert "Texts allowed again." in page and "(texted START); had opted out on" in page
    assert "Twilio itself refuses" not in page


def test_a_customer_who_texted_stop_and_was_opted_back_in_by_hand_is_still_blocked_by_twilio(admin_client):
    conversation = ConversationFactory(customer_phone=PHONE)
    opt_out(PHONE, how="keyword", detail="STOP", origin="webhook")
    opt_in(PHONE)
    page = conversation_page(admin_client, conversation)
    assert "Texts allowed again." in page and "(by hand); had opted out on" in page
    assert "They had texted STOP: Twilio itself refuses texts to them until they text START." in page


def test_a_customer_who_never_opted_out_gets_no_notice(admin_client):
    page = conversation_page(admin_client, ConversationFactory(customer_phone=PHONE))
    assert 'class="convlink-notice' not in page and "Can be texted." in page
    page = conversation_page(admin_client, ConversationFactory(customer_phone=""))
    assert 'class="convlink-notice' not in page and "No customer phone known." in page


def page_queries(client, conversation) -> list[str]:
    with CaptureQueriesContext(connection) as queries:
        conversation_page(client, conversation)
    return [query["sql"] for query in queries.captured_queries]


def test_the_conversation_page_reads_the_opt_out_once_whatever_its_length(admin_client):
    short, long = (ConversationFactory(customer_phone=PHONE) for _ in range(2))
    ours(short, delivery_status="failed", delivery_error_code=30003)
    for status in ("", "sent", "delivered", "read", "failed"):
        ours(long, delivery_status=status, delivery_error_code=30005 if status == "failed" else None)
    opt_out(PHONE)
    assert len(page_queries(admin_client, short)) == len(page_queries(admin_client, long))
    # The banner and the "texts" field share one read of the record; the other
    # mention is the list's subquery in the statement that loads the conversation.
    assert sum("twilio_convlink_optout" in sql for sql in page_queries(admin_client, long)) == 2


def test_the_conversation_list_marks_and_filters_opted_out_customers(admin_client):
    opted_out = ConversationFactory(customer_phone=PHONE)
    texted = ConversationFactory(customer_phone=OTHER)
    back_in = ConversationFactory(customer_phone="+14155550133")
    no_phone = ConversationFactory(customer_phone="")
    opt_out(PHONE)
    opt_out("+14155550133")
    opt_in("+14155550133")
    page = admin_client.get(reverse(CONVERSATIONS)).content.decode()
    assert page.count(">Opted out</span>") == 1
    for choice, expected in (("yes", {opted_out}), ("no", {texted, back_in, no_phone})):
        response = admin_client.get(reverse(CONVERSATIONS), {"opted_out": choice})
        assert set(response.context["cl"].result_list) == expected, choice
    assert "Customer opted out" in page and "Customer not opted out" in page


def listed_queries(client, rows: int) -> int:
    ChatConversation.objects.all().delete()
    for n in range(rows):
        phone = f"+1415555020{n}"
        ConversationFactory(customer_phone=phone)
        if n % 2 == 0:
            opt_out(phone)
    with CaptureQueriesContext(connection) as queries:
        response = client.get(reverse(CONVERSATIONS))
    assert len(response.context["cl"].result_list) == rows
    return len(queries)


def test_the_conversation_list_costs_the_same_for_one_row_as_for_five(admin_client):
    admin_client.get(reverse(CONVERSATIONS))
    assert listed_queries(admin_client, 1) == listed_queries(admin_client, 5)


# Opting out and in by hand.

def act(client, action: str, *objects, changelist: str = CONVERSATIONS):
    # kind=all: the conversation list hides group chats unless asked (ThreadKindFilter).
    query = "?kind=all" if changelist == CONVERSATIONS else ""
    response = client.post(reverse(changelist) + query, {
        "action": action, "_selected_action": [obj.pk for obj in objects]}, follow=True)
    assert response.status_code == 200
    return [str(message) for message in response.context["messages"]]


def history(obj) -> list[str]:
    return [entry.get_change_message() for entry in LogEntry.objects.filter(
        object_id=str(obj.pk), content_type__model=obj._meta.model_name, action_flag=CHANGE).order_by("pk")]


def test_opting_a_customer_out_from_the_conversation_list(admin_client, caplog, received,
                                                          django_capture_on_commit_callbacks):
    conversation = ConversationFactory(customer_phone=PHONE)
    caplog.set_level(logging.INFO, logger="django_twilio_convlink.admin")
    with django_capture_on_commit_callbacks(execute=True):
        said = act(admin_client, "opt_out_selected", conversation)
    assert said == [f"1 customer opted out of texts: {PHONE}."]
    row = OptOut.objects.get(phone=PHONE)
    assert (row.is_opted_out, row.method) == (True, "admin")
    assert history(conversation) == [f"{PHONE} opted out of texts."]
    assert history(row) == [f"{PHONE} opted out of texts."]
    assert f"{PHONE} opted out of texts in the admin by admin" in [
        r.getMessage() for r in caplog.records if r.name == "django_twilio_convlink.admin"]
    announced = [(kwargs["phone"], kwargs["how"], kwargs["origin"])
                 for name, _sender, kwargs in received.calls if name == "customer_opted_out"]
    assert announced == [(PHONE, "admin", "admin")]


def test_opting_out_twice_changes_nothing_and_says_so(admin_client):
    conversation = ConversationFactory(customer_phone=PHONE)
    act(admin_client, "opt_out_selected", conversation)
    said = act(admin_client, "opt_out_selected", conversation)
    assert said == [f"Already opted out, nothing changed: {PHONE}."]
    assert len(history(conversation)) == 1


def test_conversations_without_a_customer_phone_are_skipped(admin_client):
    conversation = ConversationFactory(customer_phone=PHONE)
    group_chat = ConversationFactory(customer_phone=PHONE, is_group_chat=True)
    nobody = ConversationFactory(customer_phone="")
    said = act(admin_client, "opt_out_selected", conversation, group_chat, nobody)
    assert said == [f"1 customer opted out of texts: {PHONE}.",
                    "Skipped 1 conversation without a customer phone."]
    assert history(conversation) == history(group_chat) == [f"{PHONE} opted out of texts."]
    assert history(nobody) == [] and OptOut.objects.count() == 1


def test_opting_a_customer_back_in_warns_when_twilio_still_blocks_them(admin_client, caplog):
    stopped = ConversationFactory(customer_phone=PHONE)
    by_hand = ConversationFactory(customer_phone=OTHER)
    never = ConversationFactory(customer_phone="+14155550133")
    opt_out(PHONE, how="keyword", detail="STOP", origin="webhook")
    opt_out(OTHER)
    caplog.set_level(logging.INFO, logger="django_twilio_convlink.admin")
    said = act(admin_client, "opt_in_selected", stopped, by_hand, never)
    assert said[0] in (f"2 customers opted back in to texts: {PHONE}, {OTHER}.",
                       f"2 customers opted back in to texts: {OTHER}, {PHONE}.")
    assert said[1:] == ["Not opted out, nothing changed: +14155550133.",
                        f"{PHONE} had texted STOP: Twilio itself keeps refusing texts to them until "
                        "they text START."]
    row = OptOut.objects.get(phone=PHONE)
    assert row.opted_in_at is not None and row.opted_in_method == "admin"
    assert history(stopped) == [f"{PHONE} opted back in to texts."]
    assert history(row) == [f"{PHONE} opted back in to texts."]
    assert f"{OTHER} opted back in to texts in the admin by admin" in caplog.messages


@pytest.fixture
def staff_client(client, django_user_model):
    def staff_client(*codenames):
        user = django_user_model.objects.create_user("clerk", password="clerk", is_staff=True)
        user.user_permissions.set(Permission.objects.filter(codename__in=codenames))
        client.force_login(user)
        return client
    return staff_client


def test_opting_out_takes_the_permission_to_change_opt_outs(staff_client):
    conversation = ConversationFactory(customer_phone=PHONE)
    client = staff_client("view_chatconversation", "change_chatconversation")
    page = client.get(reverse(CONVERSATIONS)).content.decode()
    assert 'value="relink_selected"' in page and 'value="opt_out_selected"' not in page
    client.post(reverse(CONVERSATIONS), {"action": "opt_out_selected", "_selected_action": [conversation.pk]})
    assert not OptOut.objects.exists()


def test_a_user_who_may_change_opt_outs_can_opt_customers_out(staff_client):
    conversation = ConversationFactory(customer_phone=PHONE)
    client = staff_client("view_chatconversation", "change_optout")
    page = client.get(reverse(CONVERSATIONS)).content.decode()
    assert 'value="opt_out_selected"' in page and 'value="opt_in_selected"' in page
    act(client, "opt_out_selected", conversation)
    assert OptOut.objects.get(phone=PHONE).is_opted_out


# The opt-out list.

def test_the_opt_out_list_shows_state_since_and_how(admin_client):
    opt_out(PHONE, how="keyword", detail="STOP", origin="webhook")
    opt_out(OTHER, how="error", detail="21610", origin="webhook")
    opt_in(OTHER, how="keyword", detail="START", origin="webhook")
    page = admin_client.get(reverse(OPT_OUTS)).content.decode()
    assert ">Opted out</span>" in page and ">Opted back in</span>" in page
    assert "Texted STOP" in page and "Texted START" in page
    assert "had opted out on" in page and "Twilio refused a text to them, error 21610" in page


@pytest.mark.parametrize(("query", "expected"), [
    ({"state": "out"}, {PHONE}), ({"state": "in"}, {OTHER}),
    ({"method": "keyword"}, {PHONE}), ({"method": "admin"}, {OTHER}),
    ({"q": "(415) 555-0111"}, {PHONE}), ({"q": "415.555.0122"}, {OTHER}), ({"q": "0111"}, {PHONE}),
])
def test_the_opt_out_list_filters_and_finds_phones_in_any_format(admin_client, query, expected):
    opt_out(PHONE, how="keyword", detail="STOP", origin="webhook")
    opt_out(OTHER)
    opt_in(OTHER)
    response = admin_client.get(reverse(OPT_OUTS), query)
    assert {row.phone for row in response.context["cl"].result_list} == expected


def test_opting_out_and_back_in_from_the_opt_out_list(admin_client, caplog):
    opt_out(PHONE, how="keyword", detail="STOP", origin="webhook")
    row = OptOut.objects.get(phone=PHONE)
    caplog.set_level(logging.INFO, logger="django_twilio_convlink.admin")
    said = act(admin_client, "opt_in_selected", row, changelist=OPT_OUTS)
    assert said[0] == f"1 customer opted back in to texts: {PHONE}."
    said = act(admin_client, "opt_out_selected", row, changelist=OPT_OUTS)
    assert said == [f"1 customer opted out of texts: {PHONE}."]
    row.refresh_from_db()
    assert row.is_opted_out and row.method == "admin"
    assert history(row) == [f"{PHONE} opted back in to texts.", f"{PHONE} opted out of texts."]
    assert [entry.object_repr for entry in LogEntry.objects.order_by("pk")] == [
        f"{PHONE} (opted back in)", f"{PHONE} (opted out)"]
    assert len([r for r in caplog.records if r.name == "django_twilio_convlink.admin"]) == 2


def test_adding_an_opt_out_by_hand_normalizes_the_phone(admin_client, received,
                                                        django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(reverse("admin:twilio_convlink_optout_add"),
                                     {"phone": "(415) 555-0111", "detail": "asked on the phone"})
    assert response.status_code == 302, response.content.decode()[:3000]
    row = OptOut.objects.get()
    assert (row.phone, row.method, row.detail) == (PHONE, "admin", "asked on the phone")
    assert row.is_opted_out
    assert LogEntry.objects.get(action_flag=ADDITION).object_id == str(row.pk)
    announced = [kwargs["phone"] for name, _sender, kwargs in received.calls if name == "customer_opted_out"]
    assert announced == [PHONE]


@pytest.mark.parametrize(("typed", "error"), [
    ("not a phone", "This is not a phone number."),
    ("415.555.0111", "This phone already has an opt-out record"),
])
def test_adding_an_opt_out_refuses_what_is_no_new_phone(admin_client, typed, error):
    opt_out(PHONE)
    opt_in(PHONE)
    response = admin_client.post(reverse("admin:twilio_convlink_optout_add"), {"phone": typed})
    assert response.status_code == 200 and error in response.content.decode()
    assert OptOut.objects.get().opted_in_at is not None  # unchanged


def test_an_opt_out_is_read_only_and_kept(admin_client):
    conversation = ConversationFactory(customer_phone=PHONE)
    opt_out(PHONE, how="keyword", detail="STOP", origin="webhook")
    row = OptOut.objects.get()
    page = admin_client.get(reverse("admin:twilio_convlink_optout_change", args=[row.pk])).content.decode()
    assert 'name="phone"' not in page and 'name="_save"' not in page
    assert ">Opted out</span>" in page and "Keyword texted by the customer" in page
    conversations = reverse(CONVERSATIONS) + "?q=%2B14155550111"
    assert f'href="{conversations}"' in page
    found = admin_client.get(conversations).context["cl"].result_list
    assert list(found) == [conversation]
    delete = admin_client.get(reverse("admin:twilio_convlink_optout_delete", args=[row.pk]))
    assert delete.status_code == 403
    assert 'value="delete_selected"' not in admin_client.get(reverse(OPT_OUTS)).content.decode()
