"""The admin classes a site registers in one line each."""

import pytest
from django.contrib import admin
from django.contrib.auth.models import Permission
from django.test import RequestFactory
from django.urls import reverse
from django.utils import timezone

from django_twilio_convlink.admin import ConversationAdmin
from django_twilio_convlink.models import WebhookDelivery
from tests.factories import ConversationFactory, GuestFactory, MessageFactory, ReservationFactory
from tests.helpers import CUSTOMER, payload
from tests.testapp.models import ChatConversation, ChatMessage

pytestmark = pytest.mark.django_db

CHANGELIST = "admin:testapp_chatconversation_changelist"
DELIVERIES = "admin:twilio_convlink_webhookdelivery_changelist"


@pytest.fixture
def booking():
    return ReservationFactory(guest=GuestFactory(mobile=CUSTOMER))


def test_changelist_filters_linked_and_unlinked(admin_client, booking):
    linked = ConversationFactory(booking=booking, link_method="automatic")
    unlinked = ConversationFactory()
    page = admin_client.get(reverse(CHANGELIST), {"linked": "no"}).content.decode()
    assert unlinked.conversation_sid in page and linked.conversation_sid not in page
    page = admin_client.get(reverse(CHANGELIST), {"linked": "yes"}).content.decode()
    assert linked.conversation_sid in page and unlinked.conversation_sid not in page
    page = admin_client.get(reverse(CHANGELIST), {"link_method__exact": "automatic"}).content.decode()
    assert linked.conversation_sid in page and unlinked.conversation_sid not in page


@pytest.mark.parametrize("field", ["customer_phone", "conversation_sid"])
def test_search_by_phone_or_sid(admin_client, field):
    wanted = ConversationFactory(customer_phone=CUSTOMER)
    other = ConversationFactory(customer_phone="+14155550199")
    page = admin_client.get(reverse(CHANGELIST), {"q": getattr(wanted, field)}).content.decode()
    assert wanted.conversation_sid in page and other.conversation_sid not in page


def test_change_page_shows_messages_inline(admin_client):
    message = MessageFactory(body="The heater is broken")
    url = reverse("admin:testapp_chatconversation_change", args=[message.conversation.pk])
    page = admin_client.get(url).content.decode()
    assert "The heater is broken" in page


def test_relink_selected_action(admin_client, booking):
    conversation = ConversationFactory(customer_phone=CUSTOMER)
    response = admin_client.post(reverse(CHANGELIST), {
        "action": "relink_selected", "_selected_action": [conversation.pk]}, follow=True)
    assert "1 of 1 unlinked conversation linked" in response.content.decode()
    conversation.refresh_from_db()
    assert conversation.booking == booking


def test_choosing_a_booking_by_hand_is_a_manual_link(admin_client, booking):
    conversation = ConversationFactory(customer_phone=CUSTOMER)
    url = reverse("admin:testapp_chatconversation_change", args=[conversation.pk])
    form = {"friendly_name": "x", "unique_name": "", "state": "", "customer_phone": CUSTOMER,
            "booking": booking.pk, "apartment": booking.unit.pk, "chat_service_sid": "",
            "messaging_service_sid": "", "attributes": "{}"}
    # The inline's management form prefix is the related name: "messages".
    form.update({"messages-TOTAL_FORMS": "0", "messages-INITIAL_FORMS": "0"})
    response = admin_client.post(url, form)
    assert response.status_code == 302, response.content.decode()[:2000]
    conversation.refresh_from_db()
    assert (conversation.booking, conversation.link_method) == (booking, "manual")
    assert conversation.linked_at is not None


def test_message_changelist_filters_by_direction(admin_client):
    inbound = MessageFactory(direction="inbound")
    outbound = MessageFactory(direction="outbound", author="ASSISTANT")
    page = admin_client.get(reverse("admin:testapp_chatmessage_changelist"),
                            {"direction__exact": "outbound"}).content.decode()
    assert outbound.message_sid in page and inbound.message_sid not in page


def test_conversation_str_and_flags():
    conversation = ConversationFactory.build(friendly_name="")
    assert str(conversation) == conversation.conversation_sid
    assert not conversation.is_linked
    assert ChatConversation._meta.get_field("customer_phone").db_index


def form_fields(html: str) -> dict[str, str]:
    """The name/value pairs a browser would post back from the change form."""
    from html.parser import HTMLParser

    fields: dict[str, str] = {}

    class Parser(HTMLParser):
        def handle_starttag(self, tag, attrs):
            attrs = dict(attrs)
            if tag == "input" and attrs.get("name") and attrs.get("type") not in ("submit", "checkbox"):
                fields[attrs["name"]] = attrs.get("value") or ""

    Parser().feed(html)
    return fields


def test_thread_renders_and_the_form_posts_back(admin_client, booking):
    conversation = ConversationFactory(customer_phone=CUSTOMER)
    MessageFactory(conversation=conversation, body="Heater broken", direction="inbound")
    MessageFactory(conversation=conversation, body="On our way", direction="outbound", author="ASSISTANT")
    url = reverse("admin:testapp_chatconversation_change", args=[conversation.pk])
    page = admin_client.get(url).content.decode()
    assert 'class="inbound"' in page and 'class="outbound"' in page
    assert "Heater broken" in page and "On our way" in page
    data = form_fields(page)
    assert data["messages-INITIAL_FORMS"] == "2"
    data.update(booking=str(booking.pk), apartment=str(booking.unit.pk), attributes="{}")
    response = admin_client.post(url, data)
    assert response.status_code == 302, response.content.decode()[:3000]
    conversation.refresh_from_db()
    assert conversation.link_method == "manual"
    assert conversation.messages.count() == 2


@pytest.mark.parametrize("selected", [2, 20])
def test_relink_action_cost_does_not_grow_with_the_selection(admin_client, booking, selected,
                                                             django_assert_max_num_queries):
    pks = [c.pk for c in ConversationFactory.create_batch(selected, customer_phone=CUSTOMER)]
    with django_assert_max_num_queries(12):
        admin_client.post(reverse(CHANGELIST), {"action": "relink_selected", "_selected_action": pks})
    assert ChatConversation.objects.filter(booking=booking).count() == selected


@pytest.fixture
def staff_client(client, django_user_model):
    """A client logged in as a staff member who holds only the given permissions."""
    def staff_client(*codenames):
        user = django_user_model.objects.create_user("clerk", password="clerk", is_staff=True)
        user.user_permissions.set(Permission.objects.filter(codename__in=codenames))
        client.force_login(user)
        return client
    return staff_client


def test_a_view_only_user_can_neither_see_nor_run_the_relink_action(staff_client, booking):
    conversation = ConversationFactory(customer_phone=CUSTOMER)
    client = staff_client("view_chatconversation")
    page = client.get(reverse(CHANGELIST))
    assert page.status_code == 200 and conversation.conversation_sid in page.content.decode()
    assert 'value="relink_selected"' not in page.content.decode()
    client.post(reverse(CHANGELIST), {"action": "relink_selected", "_selected_action": [conversation.pk]})
    conversation.refresh_from_db()
    assert conversation.booking is None and conversation.link_method == ""


def test_a_user_who_may_change_conversations_can_relink(staff_client, booking):
    conversation = ConversationFactory(customer_phone=CUSTOMER)
    client = staff_client("view_chatconversation", "change_chatconversation")
    assert 'value="relink_selected"' in client.get(reverse(CHANGELIST)).content.decode()
    response = client.post(reverse(CHANGELIST), {
        "action": "relink_selected", "_selected_action": [conversation.pk]}, follow=True)
    assert "1 of 1 unlinked conversation linked" in response.content.decode()
    conversation.refresh_from_db()
    assert conversation.booking == booking


@pytest.fixture
def failed_delivery():
    data = payload("onMessageAdded_sms_from_customer")
    return WebhookDelivery.objects.create(
        event_type=data["EventType"], conversation_sid=data["ConversationSid"],
        message_sid=data["MessageSid"], params=data, status="failed", error="database: gone away")


def test_a_view_only_user_can_read_the_delivery_log_but_not_replay(staff_client, failed_delivery):
    client = staff_client("view_webhookdelivery")
    page = client.get(reverse(DELIVERIES))
    assert page.status_code == 200 and failed_delivery.message_sid in page.content.decode()
    assert 'value="replay_selected"' not in page.content.decode()
    client.post(reverse(DELIVERIES), {"action": "replay_selected", "_selected_action": [failed_delivery.pk]})
    failed_delivery.refresh_from_db()
    assert (failed_delivery.status, failed_delivery.attempts) == ("failed", 0)
    assert not ChatConversation.objects.exists()


def test_a_user_who_may_change_deliveries_can_replay(staff_client, failed_delivery):
    client = staff_client("change_webhookdelivery")
    assert 'value="replay_selected"' in client.get(reverse(DELIVERIES)).content.decode()
    response = client.post(reverse(DELIVERIES), {
        "action": "replay_selected", "_selected_action": [failed_delivery.pk]}, follow=True)
    assert "1 replayed, 0 failed again" in response.content.decode()
    failed_delivery.refresh_from_db()
    assert failed_delivery.status == "processed"
    assert ChatConversation.objects.filter(conversation_sid=failed_delivery.conversation_sid).exists()


# Search, lists and titles as a new user meets them.

PHONE = "+14155550111"
MESSAGES = "admin:testapp_chatmessage_changelist"


@pytest.mark.parametrize("typed", ["(415) 555-0111", "415.555.0111"])
def test_search_by_a_formatted_phone_finds_the_conversation(admin_client, typed):
    wanted = ConversationFactory(customer_phone=PHONE)
    other = ConversationFactory(customer_phone="+14155550199")
    page = admin_client.get(reverse(CHANGELIST), {"q": typed}).content.decode()
    assert wanted.conversation_sid in page and other.conversation_sid not in page


@pytest.mark.parametrize("typed", ["(415) 555-0111", "415.555.0111"])
def test_search_by_a_formatted_phone_finds_the_messages(admin_client, typed):
    sms = MessageFactory(conversation=ConversationFactory(customer_phone=PHONE), author=PHONE)
    whatsapp = MessageFactory(author=f"whatsapp:{PHONE}")
    other = MessageFactory(author="+14155550199")
    page = admin_client.get(reverse(MESSAGES), {"q": typed}).content.decode()
    assert sms.message_sid in page and whatsapp.message_sid in page
    assert other.message_sid not in page


def search(model, term: str, model_admin=None):
    model_admin = model_admin or admin.site._registry[model]
    return model_admin.get_search_results(RequestFactory().get("/"), model.objects.all(), term)


def test_phone_search_keeps_the_normal_search_in_one_statement(django_assert_num_queries):
    by_phone = ConversationFactory(customer_phone=PHONE)
    by_name = ConversationFactory(friendly_name="Booking 415.555.0111, Lisbon")
    ConversationFactory(customer_phone="+14155550199")
    results, may_have_duplicates = search(ChatConversation, "415.555.0111")
    with django_assert_num_queries(1):
        assert set(results) == {by_phone, by_name}
    # The conversation search also looks in the messages' words: rows may repeat, and
    # the change list removes the repeats (test_admin_inbox).
    assert may_have_duplicates is True
    message = MessageFactory(author=PHONE)
    results, may_have_duplicates = search(ChatMessage, "(415) 555-0111")
    assert list(results) == [message] and may_have_duplicates is False


def test_phone_search_across_a_to_many_relation_still_says_rows_may_repeat():
    class SiteConversationAdmin(ConversationAdmin):
        search_fields = (*ConversationAdmin.search_fields, "messages__body")

    conversation = ConversationFactory(customer_phone=PHONE)
    MessageFactory.create_batch(2, conversation=conversation)
    results, may_have_duplicates = search(ChatConversation, "(415) 555-0111",
                                          SiteConversationAdmin(ChatConversation, admin.site))
    assert may_have_duplicates is True and conversation in results


def test_a_conversation_before_twilio_names_it_is_listed_by_its_customer(admin_client):
    conversation = ConversationFactory(customer_phone=PHONE)  # "Conversation CH…"
    page = admin_client.get(reverse(CHANGELIST)).content.decode()
    assert f">{PHONE}<" in page
    # Once, as the title of its shortened form: not twice, as the link and the name.
    assert page.count(conversation.conversation_sid) == 1
    sid = conversation.conversation_sid
    assert f'title="{sid}">{sid[:6]}…{sid[-4:]}<' in page


def test_conversation_titles_name_the_customer(admin_client):
    placeholder = ConversationFactory(customer_phone=PHONE)
    assert str(placeholder) == PHONE
    named = ConversationFactory.build(friendly_name="Maria, Seaside Loft", customer_phone=PHONE)
    assert str(named) == f"Maria, Seaside Loft ({PHONE})"
    group_chat = ConversationFactory.build(friendly_name=f"{PHONE} with the manager and assistant")
    assert str(group_chat) == f"{PHONE} with the manager and assistant"
    page = admin_client.get(reverse("admin:testapp_chatconversation_change", args=[placeholder.pk]))
    assert f"<title>{PHONE} |" in page.content.decode()


def test_message_titles_say_who_wrote_what():
    message = MessageFactory(author=PHONE, body="The heater is broken")
    assert str(message) == f"Inbound {PHONE}: The heater is broken"
    long = MessageFactory.build(author="ASSISTANT", direction="outbound", body="word " * 40)
    assert str(long).startswith("Outbound ASSISTANT: word word") and str(long).endswith("…")
    assert len(str(long)) < 80


def test_the_message_list_shows_the_body_and_short_sids(admin_client):
    message = MessageFactory(author=PHONE, body="Hi, the key box code does not work. " * 5)
    page = admin_client.get(reverse(MESSAGES)).content.decode()
    sid = message.message_sid
    assert f'title="{sid}">{sid[:6]}…{sid[-4:]}<' in page
    assert "Hi, the key box code does not work." in page and f'title="{message.body}"' in page


def test_delivery_titles_are_meaningful(admin_client):
    rejected = WebhookDelivery.objects.create(status="rejected", params={"Junk": "1"})
    received = timezone.localtime(rejected.received_at).strftime("%Y-%m-%d %H:%M:%S")
    assert str(rejected) == f"Unreadable delivery: Rejected (malformed), {received}"
    data = payload("onMessageAdded_sms_from_customer")
    processed = WebhookDelivery.objects.create(event_type=data["EventType"], message_sid=data["MessageSid"],
                                               conversation_sid=data["ConversationSid"], status="processed")
    assert str(processed).startswith(f"onMessageAdded {data['MessageSid']}: Processed, ")
    page = admin_client.get(reverse("admin:twilio_convlink_webhookdelivery_change", args=[rejected.pk]))
    assert "<title>Unreadable delivery: Rejected (malformed)" in page.content.decode()
    assert "Unreadable delivery" in admin_client.get(reverse(DELIVERIES)).content.decode()


def test_the_apps_admin_section_is_the_delivery_log(admin_client):
    index = admin_client.get(reverse("admin:index"))
    apps = {app["app_label"]: app["name"] for app in index.context["app_list"]}
    assert apps["twilio_convlink"] == "Twilio webhook log"


MEDIA_SID = "ME" + "6" * 32
# What versions before the webhook validated Media could store (any JSON), and the
# line the thread shows a manager for it.
# Not downloaded (MEDIA_DOWNLOAD is off in the test settings): the thread says so.
PHOTO, FILE = ": Photo kept at Twilio (not downloaded)", ": File kept at Twilio (not downloaded)"
STORED_MEDIA = [
    pytest.param([{"Sid": MEDIA_SID, "ContentType": "image/jpeg", "Filename": "heater.jpg", "Size": 482113}],
                 "heater.jpg" + PHOTO, id="twilio"),
    pytest.param([{"Sid": MEDIA_SID, "ContentType": "image/png", "Filename": None}],
                 f"{MEDIA_SID}" + PHOTO, id="null-filename"),
    pytest.param([{"ContentType": "image/jpeg"}], "unknown" + PHOTO, id="no-sid"),
    pytest.param([MEDIA_SID], f"{MEDIA_SID}" + FILE, id="bare-sid"),
    pytest.param([None], "unknown" + FILE, id="null-item"),
    pytest.param([42], "unknown" + FILE, id="number-item"),
    pytest.param([[MEDIA_SID, "nested"]], "unknown" + FILE, id="nested-list"),
    pytest.param([{"Sid": 7, "Filename": {"a": 1}, "ContentType": ["image/jpeg"]}], "unknown" + FILE,
                 id="wrong-types"),
    pytest.param([{"Filename": "<b>plan</b>.pdf"}], "&lt;b&gt;plan&lt;/b&gt;.pdf" + FILE, id="escaped"),
    pytest.param({"Sid": MEDIA_SID, "ContentType": "image/gif"}, f"{MEDIA_SID}" + PHOTO,
                 id="object-not-list"),
    pytest.param("a bare string", "a bare string" + FILE, id="string-not-list"),
    pytest.param(3, "unknown" + FILE, id="number-not-list"),
]


@pytest.mark.parametrize(("media", "shown"), STORED_MEDIA)
def test_any_stored_media_renders_on_the_conversation_page(admin_client, media, shown):
    message = MessageFactory(body="", media=media)
    url = reverse("admin:testapp_chatconversation_change", args=[message.conversation.pk])
    response = admin_client.get(url)
    assert response.status_code == 200
    assert shown in response.content.decode()


@pytest.mark.parametrize("media", [pytest.param(case.values[0], id=case.id) for case in STORED_MEDIA])
def test_any_stored_media_renders_in_the_message_list_and_page(admin_client, media):
    message = MessageFactory(body="", media=media)
    page = admin_client.get(reverse(MESSAGES))
    assert page.status_code == 200 and "(1 attachment)" in page.content.decode()
    change = admin_client.get(reverse("admin:testapp_chatmessage_change", args=[message.pk]))
    assert change.status_code == 200
