"""Receipts and opt-outs as a property manager sees them, in a real browser at 1280 x
800 (the fixtures of test_admin_browser: Debian's chromium, Playwright, the live
server): a text that did not arrive and a customer who opted out must be seen without
scrolling sideways or reading closely. Screenshots go to artifacts/screenshots/receipts-*.png.
"""

import datetime

import pytest
from django.utils import timezone

from django_twilio_convlink import opt_out
from tests.factories import (
    ConversationFactory,
    GuestFactory,
    MessageFactory,
    PropertyFactory,
    ReservationFactory,
)
from tests.system import test_admin_browser as admin_browser
from tests.system.test_admin_browser import SCREENSHOTS, VIEWPORT

pytestmark = pytest.mark.django_db(transaction=True)

# Its fixtures, as this module's: the browser, the live server with the admin's static
# files, and a page logged in as a superuser. (Imported, a module's skip comes along:
# without chromium or playwright these tests are skipped as those are.)
site, browser, page = admin_browser.site, admin_browser.browser, admin_browser.page

CUSTOMER = "+14155550111"
SKIPPED = f"{CUSTOMER} has opted out of texts (texted STOP); nothing was sent."


def within_viewport(page, selector: str) -> dict:
    element = page.locator(selector).first
    element.wait_for()
    assert element.is_visible(), selector
    box = element.bounding_box()
    assert box["x"] >= 0 and box["x"] + box["width"] <= VIEWPORT["width"], (selector, box)
    return box


def assert_no_overflow(page) -> None:
    results = page.locator("#changelist .results")
    scroll_width, client_width = results.evaluate("el => [el.scrollWidth, el.clientWidth]")
    assert scroll_width <= client_width, f"the results table overflows: {scroll_width} > {client_width}"


@pytest.fixture
def stopped_customer():
    """A guest's conversation: our texts in each state (the door code failed), then
    the guest texted STOP, and wrote once more."""
    booking = ReservationFactory(guest=GuestFactory(full_name="Maria Gonzalez", mobile=CUSTOMER),
                                 unit=PropertyFactory(title="Seaside Loft, 2nd floor"))
    conversation = ConversationFactory(friendly_name="Maria Gonzalez", customer_phone=CUSTOMER,
                                       booking=booking, apartment=booking.unit, link_method="automatic")
    start = timezone.now() - datetime.timedelta(hours=3)

    def text(minutes: int, **fields):
        when = start + datetime.timedelta(minutes=minutes)
        return MessageFactory(conversation=conversation, date_created=when, index=minutes, **fields)

    ours = {"direction": "outbound", "author": "ASSISTANT"}
    text(0, author=CUSTOMER, body="Hi, we land at 9pm. How do we get in?")
    text(5, **ours, body="Welcome! Check-in instructions follow in a minute.", delivery_status="read",
         delivery_updated_at=start)
    text(6, **ours, body="The key box is left of the door; the code is 4711.", delivery_status="failed",
         delivery_error_code=30003, delivery_updated_at=start)
    text(7, **ours, body="Checkout is at 11am on Sunday.", delivery_status="undelivered",
         delivery_error_code=30007, delivery_updated_at=start)
    text(8, **ours, body="Parking is in the garage, space 12.", delivery_status="sent",
         delivery_updated_at=start)
    text(9, **ours, body="Wifi: SeasideLoft / sunshine42")
    text(30, author=CUSTOMER, body="STOP", forward_state="skipped", forward_skip_reason=SKIPPED)
    text(40, author=CUSTOMER, body="Sorry, wrong button. Is the code 4711?", forward_state="skipped",
         forward_skip_reason=SKIPPED)
    opt_out(CUSTOMER, how="keyword", detail="STOP", origin="webhook")
    return conversation


def test_a_failed_text_and_an_opted_out_customer_are_unmistakable(page, stopped_customer):
    page.goto(f"/admin/testapp/chatconversation/{stopped_customer.pk}/change/")
    page.screenshot(path=str(SCREENSHOTS / "receipts-conversation-top.png"))
    # The banner is the first thing on the page, without scrolling.
    banner = within_viewport(page, ".convlink-notice-opted-out")
    assert banner["y"] + banner["height"] <= VIEWPORT["height"]
    assert "This customer opted out of texts." in page.locator(".convlink-notice-opted-out").inner_text()

    thread = page.locator(".convlink-thread")
    thread.scroll_into_view_if_needed()
    thread.screenshot(path=str(SCREENSHOTS / "receipts-thread.png"))
    page.screenshot(path=str(SCREENSHOTS / "receipts-conversation.png"), full_page=True)
    failed = page.locator("li.not-delivered").filter(has_text="the code is 4711")
    assert failed.count() == 1
    label = failed.locator(".convlink-delivery-failed")
    label.scroll_into_view_if_needed()
    within_viewport(page, "li.not-delivered .convlink-delivery-failed")
    assert label.inner_text().strip() == "Not delivered"
    # Red on white: it must not read as the other labels do.
    colors = label.evaluate("el => [getComputedStyle(el).backgroundColor, getComputedStyle(el).color]")
    assert colors == ["rgb(186, 33, 33)", "rgb(255, 255, 255)"], colors
    reason = failed.locator(".convlink-delivery-reason")
    assert "Error 30003 — Unreachable: the phone is off or out of coverage." in reason.inner_text()
    box = reason.bounding_box()
    assert box["x"] >= 0 and box["x"] + box["width"] <= VIEWPORT["width"], box
    assert page.locator("li.not-delivered").count() == 2
    assert page.locator(".convlink-skipped").count() == 2


def test_the_message_list_shows_delivery_inside_1280px(page, stopped_customer):
    page.goto("/admin/testapp/chatmessage/?direction__exact=outbound")
    page.screenshot(path=str(SCREENSHOTS / "receipts-messages.png"), full_page=True)
    assert_no_overflow(page)
    within_viewport(page, "#result_list .convlink-delivery-failed")
    within_viewport(page, "#result_list .convlink-delivery-reason")
    # The label beneath the date leaves the body its room (as test_admin_browser asks).
    body = page.locator("#result_list tbody tr .field-short_body").first.bounding_box()
    assert body["width"] >= 250, f"the body column is too narrow: {body}"
    page.goto("/admin/testapp/chatmessage/?delivery=not_delivered")
    page.screenshot(path=str(SCREENSHOTS / "receipts-messages-not-delivered.png"), full_page=True)
    assert page.locator("#result_list tbody tr").count() == 2
    assert_no_overflow(page)


def test_the_conversation_and_opt_out_lists_show_who_opted_out(page, stopped_customer):
    ConversationFactory(friendly_name="Jonas Berg", customer_phone="+14155550122")
    page.goto("/admin/testapp/chatconversation/")
    page.screenshot(path=str(SCREENSHOTS / "receipts-conversations.png"), full_page=True)
    assert_no_overflow(page)
    within_viewport(page, "#result_list .convlink-badge-opted-out")
    assert page.locator("#result_list .convlink-badge-opted-out").count() == 1

    # A manager opts a customer out by hand, typing the phone as people do.
    page.goto("/admin/twilio_convlink/optout/add/")
    page.fill("#id_phone", "(415) 555-0122")
    page.fill("#id_detail", "asked by phone")
    page.screenshot(path=str(SCREENSHOTS / "receipts-optout-add.png"))
    page.click("input[name=_save]")
    page.wait_for_url("**/optout/")
    page.screenshot(path=str(SCREENSHOTS / "receipts-optouts.png"), full_page=True)
    assert_no_overflow(page)
    assert page.locator("#result_list tbody tr").count() == 2
    assert "+14155550122" in page.locator("#result_list").inner_text()
    within_viewport(page, "#result_list th.column-how")

    page.goto("/admin/testapp/chatconversation/?opted_out=yes")
    assert page.locator("#result_list tbody tr").count() == 2

