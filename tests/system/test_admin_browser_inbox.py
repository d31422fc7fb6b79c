"""The inbox from end to end, as a property manager uses it, in a real browser at
1280 x 800 (the fixtures of test_admin_browser: Debian's chromium, Playwright, the live
server).

The working day arrives the way a site's does: customers' texts, a STOP and a delivery
receipt as signed Twilio webhooks, our earlier answer through ``send_message``. The
manager then finds a customer by a phone typed any way and by the tenant's name, opens
the thread, answers it, and finds the opted-out customer's reply box closed with the
reason. Screenshots: artifacts/screenshots/inbox.png, inbox-conversation.png (README.rst
shows a copy of the first).
"""

import datetime
import re

import pytest
from django.utils import timezone

from django_twilio_convlink import api, send_message
from tests.factories import GuestFactory, PropertyFactory, ReservationFactory
from tests.helpers import TwilioClient, payload, sid
from tests.system import test_admin_browser as admin_browser
from tests.system.test_admin_browser import SCREENSHOTS, VIEWPORT
from tests.testapp.models import ChatConversation

pytestmark = pytest.mark.django_db(transaction=True)

site, browser, page = admin_browser.site, admin_browser.browser, admin_browser.page

# A conversation's page, opened from the list (which adds its filters to the URL).
CHANGE_PAGE = re.compile(r"/chatconversation/\d+/change/")
MARIA, JONAS, ANA = "+14155550111", "+14155550122", "+14155550133"


class Tenants:
    """Tenants texting the site's Twilio number, through its webhook."""

    def __init__(self) -> None:
        self.twilio = TwilioClient()
        self.conversations: dict[str, str] = {}
        self.participants: dict[str, str] = {}
        self.index = 0

    def text(self, phone: str, body: str) -> None:
        """A text from ``phone``, sent now (after our answers so far, which
        ``send_message`` dates now)."""
        conversation_sid = self.conversations.setdefault(phone, sid("CH"))
        participant = self.participants.setdefault(phone, sid("MB"))
        self.index += 1
        when = timezone.now()
        response = self.twilio.webhook(payload(
            "onMessageAdded_sms_from_customer", ConversationSid=conversation_sid, ParticipantSid=participant,
            Author=phone, Body=body, Index=str(self.index),
            DateCreated=when.isoformat(timespec="milliseconds").replace("+00:00", "Z")))
        assert response.status_code == 200, response.content

    def delivered(self, message, phone: str) -> None:
        when = timezone.now()
        response = self.twilio.webhook(payload(
            "onDeliveryUpdated", ConversationSid=message.conversation.conversation_sid,
            MessageSid=message.message_sid, ParticipantSid=self.participants[phone], Status="delivered",
            DateUpdated=when.isoformat(timespec="seconds").replace("+00:00", "Z")))
        assert response.status_code == 200, response.content

    def conversation(self, phone: str) -> ChatConversation:
        return ChatConversation.objects.get(conversation_sid=self.conversations[phone])


@pytest.fixture
def working_day(settings) -> Tenants:
    settings.TWILIO_CONVLINK = {**settings.TWILIO_CONVLINK,
                                "BOOKING_SEARCH_FIELDS": ["guest__full_name", "unit__title"]}
    today = timezone.localdate()
    for name, phone, apartment in (("Maria Gonzalez", MARIA, "Seaside Loft, 2nd floor"),
                                   ("Jonas Berg", JONAS, "Harbour Studio"),
                                   ("Ana Silva", ANA, "Old Town Flat 3")):
        ReservationFactory(guest=GuestFactory(full_name=name, mobile=phone),
                           unit=PropertyFactory(title=apartment), check_in=today,
                           check_out=today + datetime.timedelta(days=5))
    tenants = Tenants()
    tenants.text(JONAS, "Can we check out at noon on Sunday?")
    answer = send_message(tenants.conversation(JONAS), "Yes, noon is fine. Have a good trip home!")
    tenants.delivered(answer, JONAS)
    tenants.text(ANA, "Thanks for everything, no more texts please")
    tenants.text(ANA, "STOP")
    tenants.text(MARIA, "Hi, the heater in the bedroom is not working and it is cold.")
    api.outbox.clear()
    return tenants


def rows_text(page) -> list[str]:
    return [row.strip() for row in page.locator("#result_list tbody tr").all_inner_texts()]


def search(page, term: str) -> list[str]:
    page.locator("#searchbar").fill(term)
    with page.expect_navigation():
        page.locator("#searchbar").press("Enter")
    return rows_text(page)


def test_a_manager_finds_a_tenant_reads_the_thread_and_answers(page, site, working_day):
    page.goto("/admin/testapp/chatconversation/")
    rows = rows_text(page)
    # One row per tenant, newest activity first, each named by their booking.
    assert len(rows) == 3, rows
    assert rows[0].startswith("Maria Gonzalez") and "Waiting" in rows[0] and "heater" in rows[0]
    assert rows[2].startswith("Jonas Berg") and "We: Yes, noon is fine" in rows[2] and "Delivered" in rows[2]
    # Ana's last text was her STOP: she waits for nothing, and it was no text of ours.
    assert rows[1].startswith("Ana Silva") and "Opted out" in rows[1] and "Customer: STOP" in rows[1]
    assert "Waiting" not in rows[1] and "receipt" not in rows[1]
    results = page.locator("#changelist .results")
    scroll_width, client_width = results.evaluate("el => [el.scrollWidth, el.clientWidth]")
    assert scroll_width <= client_width, f"the inbox overflows: {scroll_width} > {client_width}"
    page.screenshot(path=str(SCREENSHOTS / "inbox.png"))

    # A phone as the tenant says it, and the tenant's name, find the same thread.
    for term in ("(415) 555-0111", "415.555.0111", "gonzalez"):
        found = search(page, term)
        assert len(found) == 1 and found[0].startswith("Maria Gonzalez"), (term, found)
    page.locator("#result_list tbody tr a").first.click()
    page.wait_for_url(CHANGE_PAGE)

    thread = page.locator(".convlink-thread")
    assert thread.locator(".convlink-who").inner_text().startswith(f"Phone: {MARIA}")
    assert thread.locator(".convlink-who a", has_text="Seaside Loft, 2nd floor").is_visible()
    customer = thread.locator("li.inbound", has_text="the heater in the bedroom")
    assert customer.is_visible()
    # The thread is the first thing on the page, above the booking's form.
    assert customer.bounding_box()["y"] < page.locator("fieldset", has_text="Customer and booking").first \
        .bounding_box()["y"]

    page.locator("#convlink-reply-body").fill("Sorry Maria! A technician comes at 3pm today.")
    page.get_by_role("button", name="Send").click()
    page.wait_for_url(re.compile(r"/change/#convlink-reply-box$"))
    assert page.get_by_text("Sent: “Sorry Maria! A technician comes at 3pm today.”").is_visible()
    ours = thread.locator("li.outbound", has_text="A technician comes at 3pm today.")
    assert ours.count() == 1 and "No receipt yet" in ours.inner_text()
    sent = [call for call in api.outbox if call.method == "send_message"]
    assert [(call.kwargs["conversation_sid"], call.kwargs["body"]) for call in sent] == [
        (working_day.conversations[MARIA], "Sorry Maria! A technician comes at 3pm today.")]
    page.set_viewport_size({"width": VIEWPORT["width"], "height": 900})
    page.evaluate("window.scrollTo(0, 0)")
    page.screenshot(path=str(SCREENSHOTS / "inbox-conversation.png"))

    # Maria is answered: she no longer waits, and the inbox says so.
    page.goto("/admin/testapp/chatconversation/?waiting=yes")
    assert rows_text(page) == []


def test_the_opted_out_tenants_reply_box_is_closed_with_the_reason(page, site, working_day):
    page.goto("/admin/testapp/chatconversation/")
    with page.expect_navigation():
        page.get_by_role("link", name="Customer opted out").click()
    found = rows_text(page)
    assert len(found) == 1 and found[0].startswith("Ana Silva"), found
    page.locator("#result_list tbody tr a").first.click()
    page.wait_for_url(CHANGE_PAGE)
    assert page.locator("#convlink-reply-body").is_disabled()
    assert page.get_by_role("button", name="Send").is_disabled()
    reason = page.locator(".convlink-reply-disabled").inner_text()
    assert reason.startswith(f"{ANA} opted out of texts (texted STOP)"), reason
    assert [call for call in api.outbox if call.method == "send_message"] == []
