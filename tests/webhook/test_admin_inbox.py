"""The admin as an inbox: one row per customer (group chats only when asked), the
thread's last message and whether the customer waits for a reply, newest activity
first, in a constant number of queries; and one thread per customer on the page."""

import datetime
import re

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from tests.factories import ConversationFactory, MessageFactory

pytestmark = pytest.mark.django_db

CONVERSATIONS = "admin:testapp_chatconversation_changelist"
START = timezone.now() - datetime.timedelta(days=1)


def at(minutes: int) -> datetime.datetime:
    return START + datetime.timedelta(minutes=minutes)


def customer_with_group_chat(phone="+14155550111", name="Maria Gonzalez"):
    customer = ConversationFactory(friendly_name=name, customer_phone=phone)
    group = ConversationFactory(friendly_name=f"{phone} with the manager and assistant",
                                customer_phone=phone, is_group_chat=True)
    customer.group_chat = group
    customer.save()
    return customer, group


def rows(client, **query) -> list[str]:
    response = client.get(reverse(CONVERSATIONS), query)
    assert response.status_code == 200
    return [str(row) for row in response.context["cl"].result_list]


def test_group_chats_are_part_of_their_customers_row(admin_client):
    customer, group = customer_with_group_chat()
    assert rows(admin_client) == [str(customer)]
    assert rows(admin_client, kind="group") == [str(group)]
    assert set(rows(admin_client, kind="all")) == {str(customer), str(group)}


def test_the_last_message_counts_the_managers_answer_in_the_group_chat(admin_client):
    customer, group = customer_with_group_chat()
    MessageFactory(conversation=customer, author="+14155550111", body="The heater is broken",
                   date_created=at(0))
    # The assistant's copy of the customer's text is not an answer; the manager's is.
    MessageFactory(conversation=group, author="ASSISTANT", direction="outbound",
                   body="The heater is broken", attributes={"forwarded_from": "IM" + "1" * 32},
                   date_created=at(1))
    response = admin_client.get(reverse(CONVERSATIONS))
    html = response.content.decode()
    assert "Waiting" in html and "Customer: The heater is broken" in html
    MessageFactory(conversation=group, author="+15612205252", direction="outbound",
                   body="A technician comes at 3pm", date_created=at(5))
    html = admin_client.get(reverse(CONVERSATIONS)).content.decode()
    assert "We: A technician comes at 3pm" in html
    assert 'class="convlink-badge convlink-badge-waiting"' not in html


def test_newest_activity_first_and_the_waiting_filter(admin_client):
    quiet = ConversationFactory(friendly_name="Quiet", customer_phone="+14155550122")
    busy = ConversationFactory(friendly_name="Busy", customer_phone="+14155550133")
    silent = ConversationFactory(friendly_name="Silent", customer_phone="+14155550144")
    MessageFactory(conversation=quiet, author="+14155550122", body="Hi", date_created=at(1))
    MessageFactory(conversation=busy, author="+14155550133", body="Hello?", date_created=at(2))
    MessageFactory(conversation=busy, author="ASSISTANT", direction="outbound", body="Yes?",
                   date_created=at(3))
    assert rows(admin_client) == [str(busy), str(quiet), str(silent)]
    assert rows(admin_client, waiting="yes") == [str(quiet)]
    assert rows(admin_client, waiting="no") == [str(busy)]


def test_the_state_filter_lists_the_states_that_exist(admin_client):
    ConversationFactory(state="active")
    ConversationFactory(state="closed")
    html = admin_client.get(reverse(CONVERSATIONS)).content.decode()
    assert "?state=active" in html and "?state=closed" in html and "?state=inactive" not in html


def test_the_page_shows_one_thread_without_the_copies(admin_client):
    customer, group = customer_with_group_chat()
    MessageFactory(conversation=customer, author="+14155550111", body="The heater is broken",
                   date_created=at(0))
    MessageFactory(conversation=group, author="ASSISTANT", direction="outbound",
                   body="COPY of the heater text", attributes={"forwarded_from": "IM" + "1" * 32},
                   date_created=at(1))
    MessageFactory(conversation=group, author="+15612205252", direction="outbound",
                   body="A technician comes at 3pm", date_created=at(5))
    url = reverse("admin:testapp_chatconversation_change", args=[customer.pk])
    html = admin_client.get(url).content.decode()
    assert html.index("The heater is broken") < html.index("A technician comes at 3pm")
    assert "COPY of the heater text" not in html and "in the group chat" in html


def list_queries(client) -> int:
    with CaptureQueriesContext(connection) as captured:
        assert client.get(reverse(CONVERSATIONS)).status_code == 200
    return len(captured)


def test_the_lists_queries_do_not_grow_with_conversations_or_messages(admin_client):
    def add(count: int) -> None:
        for n in range(count):
            conversation = ConversationFactory(customer_phone=f"+1415556{n:04d}")
            MessageFactory(conversation=conversation, author=conversation.customer_phone, date_created=at(n))
            MessageFactory(conversation=conversation, author="ASSISTANT", direction="outbound",
                           delivery_status="failed", date_created=at(n + 1))

    add(10)
    ten = list_queries(admin_client)
    add(190)
    assert list_queries(admin_client) == ten


def test_the_search_finds_a_tenants_name_an_apartment_and_words_they_wrote(admin_client, settings):
    from tests.factories import GuestFactory, PropertyFactory, ReservationFactory

    settings.TWILIO_CONVLINK = {**settings.TWILIO_CONVLINK,
                                "BOOKING_SEARCH_FIELDS": ["guest__full_name", "unit__title"]}
    booking = ReservationFactory(guest=GuestFactory(full_name="Maria Gonzalez", mobile="+14155550111"),
                                 unit=PropertyFactory(title="Seaside Loft"))
    maria = ConversationFactory(friendly_name="", customer_phone="+14155550111", booking=booking)
    other = ConversationFactory(friendly_name="", customer_phone="+14155550122")
    MessageFactory(conversation=maria, author="+14155550111", body="The heater is broken")
    MessageFactory(conversation=maria, author="+14155550111", body="The heater again")
    MessageFactory(conversation=other, author="+14155550122", body="Where is the key?")
    for term in ("Gonzalez", "seaside", "heater", "(415) 555-0111"):
        assert rows(admin_client, q=term) == [str(maria)], term
    assert rows(admin_client, q="key") == [str(other)]


def test_the_customer_column_names_the_booking_else_the_phone(admin_client):
    from tests.factories import GuestFactory, ReservationFactory

    booking = ReservationFactory(guest=GuestFactory(full_name="Maria Gonzalez", mobile="+14155550111"))
    ConversationFactory(friendly_name="", customer_phone="+14155550111", booking=booking)
    ConversationFactory(friendly_name="", customer_phone="+14155550122")
    html = admin_client.get(reverse(CONVERSATIONS)).content.decode()
    cells = {re.sub(r"<[^>]+>", "|", cell.split("</th>")[0]).strip("|").split("|")[0]:
             re.sub(r"<[^>]+>", "|", cell.split("</th>")[0])
             for cell in html.split('class="field-conversation_label">')[1:]}
    # The booking's own __str__ (the site's choice of words) first, the phone below
    # it; a conversation without a booking is its phone, once.
    assert set(cells) == {str(booking), "+14155550122"}, cells
    assert "+14155550111" in cells[str(booking)]
    assert cells["+14155550122"].count("+14155550122") == 1


@pytest.mark.parametrize(("status", "shown"), [("", "No receipt yet"), ("sent", "Sent"),
                                               ("delivered", "Delivered"), ("read", "Read"),
                                               ("failed", "Not delivered"), ("undelivered", "Not delivered")])
def test_the_list_says_what_became_of_our_last_text(admin_client, status, shown):
    conversation = ConversationFactory(friendly_name="Maria", customer_phone="+14155550111")
    MessageFactory(conversation=conversation, author="+14155550111", body="Is the heater fixed?",
                   date_created=at(0))
    MessageFactory(conversation=conversation, author="ASSISTANT", direction="outbound",
                   body="Yes, since noon", delivery_status=status, date_created=at(1))
    html = admin_client.get(reverse(CONVERSATIONS)).content.decode()
    cell = html.split('class="field-last_message">')[1].split("</td>")[0]
    assert "We: Yes, since noon" in cell and f">{shown}</span>" in cell, cell
    assert "Waiting" not in cell


def test_the_booking_is_chosen_with_an_autocomplete_where_the_sites_admin_can_search(admin_client):
    from django.contrib.admin.widgets import AutocompleteSelect, ForeignKeyRawIdWidget

    from tests.factories import GuestFactory, ReservationFactory

    booking = ReservationFactory(guest=GuestFactory(full_name="Maria Gonzalez", mobile="+14155550111"))
    ReservationFactory(guest=GuestFactory(full_name="Jonas Berg", mobile="+14155550122"))
    conversation = ConversationFactory(customer_phone="+14155550111")
    response = admin_client.get(reverse("admin:testapp_chatconversation_change", args=[conversation.pk]))
    fields = response.context["adminform"].form.fields
    # The test site's reservation admin has search_fields, its property admin none:
    # the apartment keeps the raw id box rather than an autocomplete Django would refuse.
    assert isinstance(fields["booking"].widget, AutocompleteSelect)
    assert isinstance(fields["apartment"].widget, ForeignKeyRawIdWidget)
    found = admin_client.get(reverse("admin:autocomplete"), {
        "term": "gonz", "app_label": "testapp", "model_name": "chatconversation", "field_name": "booking"})
    assert [row["id"] for row in found.json()["results"]] == [str(booking.pk)]
