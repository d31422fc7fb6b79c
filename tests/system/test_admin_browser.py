"""The admin's lists in a real browser at 1280 x 800: Debian's chromium driven by
Playwright, against pytest-django's live server, logged in as a superuser.

What a test client cannot see is checked here: whether columns fit the viewport and
whether a message body wraps one word per line. Screenshots go to artifacts/screenshots/
(CONVLINK_SCREENSHOTS to change it).

Skipped only when /usr/bin/chromium or the playwright package is missing; .ci/run
installs both (chromium with apt, playwright through the ``test`` extra).
"""

import os
import urllib.request
from pathlib import Path

import django.contrib.admin
import pytest
from django.conf import settings
from django.test import Client, override_settings

from django_twilio_convlink.models import WebhookDelivery
from tests.factories import (
    ConversationFactory,
    GuestFactory,
    MessageFactory,
    PropertyFactory,
    ReservationFactory,
)

CHROMIUM = Path("/usr/bin/chromium")
if not CHROMIUM.exists():
    pytest.skip(f"{CHROMIUM} is missing (Debian: apt-get install chromium)", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is missing (pip install playwright)")

# A transaction the live server's thread can see: each test's rows are committed.
pytestmark = pytest.mark.django_db(transaction=True)

VIEWPORT = {"width": 1280, "height": 800}
CUSTOMER = "+14155550111"
LONG_BODY = ("Hi, we arrived at the apartment but the key box code you sent does not work, "
             "we tried it several times. Also the heating is off and it is very cold. "
             "Could someone come by or call us back as soon as possible? Thanks, Maria")
# Kept by CI in the checkout (artifacts/ is ignored by git); CONVLINK_SCREENSHOTS moves them.
SCREENSHOTS = Path(os.environ.get("CONVLINK_SCREENSHOTS")
                   or Path(__file__).resolve().parents[2] / "artifacts" / "screenshots")
SCREENSHOTS.mkdir(parents=True, exist_ok=True)


@pytest.fixture(scope="module")
def site(request, tmp_path_factory):
    """The live server, started with static files the browser can load.

    The test settings have no STATIC_URL (nothing else serves pages to a browser), and
    the live server reads it once, when it starts: this fixture must be the first to
    ask for ``live_server`` in the session. STATIC_ROOT points at the admin's own
    files, so the pages are styled exactly as on a real site.
    """
    static_root = tmp_path_factory.mktemp("static")
    (static_root / "admin").symlink_to(Path(django.contrib.admin.__file__).parent / "static" / "admin")
    with override_settings(STATIC_URL="/static/", STATIC_ROOT=str(static_root)):
        yield request.getfixturevalue("live_server")


@pytest.fixture(scope="module")
def browser():
    # Playwright's sync API keeps an event loop running in this thread, and Django then
    # refuses ORM calls here (the tests' rows, the database flush after each test).
    # They are still plain synchronous calls; Django's documented switch allows them,
    # for this module only.
    with pytest.MonkeyPatch.context() as patch, sync_api.sync_playwright() as playwright:
        patch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=[
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run"])
        yield browser
        browser.close()


@pytest.fixture
def page(site, browser, admin_user):
    """A 1280 x 800 page logged in as ``admin_user`` (the session cookie of a login)."""
    try:
        urllib.request.urlopen(f"{site.url}/static/admin/css/base.css", timeout=5).close()
    except OSError as error:
        pytest.fail(f"the live server does not serve the admin's CSS ({error}): another test "
                    "started it first, without STATIC_URL")
    client = Client()
    client.force_login(admin_user)
    context = browser.new_context(viewport=VIEWPORT, base_url=site.url)
    context.add_cookies([{"name": settings.SESSION_COOKIE_NAME, "url": site.url,
                          "value": client.cookies[settings.SESSION_COOKIE_NAME].value}])
    page = context.new_page()
    page.set_default_timeout(5000)
    yield page
    context.close()


def box(page, selector: str) -> dict:
    element = page.locator(selector).first
    element.wait_for()
    return element.bounding_box()


def linked_conversations(count: int = 4) -> list:
    """Conversations as the app stores them before Twilio names them, each linked to a
    booking whose guest and apartment have realistic, longish names."""
    conversations = []
    for n in range(count):
        phone = f"+1415555011{n + 1}"
        booking = ReservationFactory(guest=GuestFactory(full_name=f"Margarethe Villanueva-Osei {n}",
                                                        mobile=phone),
                                     unit=PropertyFactory(title=f"Seaside Loft {n}, 2nd floor, Lisbon"))
        conversations.append(ConversationFactory(customer_phone=phone, booking=booking,
                                                 apartment=booking.unit, link_method="automatic"))
    return conversations


def test_conversation_changelist_shows_booking_and_apartment_inside_1280px(page):
    linked_conversations()
    ConversationFactory(friendly_name="Maria Gonzalez, Seaside Loft", customer_phone="+351912345678")
    ConversationFactory(friendly_name="", customer_phone="")  # nothing known but its SID
    page.goto("/admin/testapp/chatconversation/")
    page.screenshot(path=str(SCREENSHOTS / "convlink_conversations_1280.png"), full_page=True)
    results = page.locator("#changelist .results")
    scroll_width, client_width = results.evaluate("el => [el.scrollWidth, el.clientWidth]")
    assert scroll_width <= client_width, f"the results table overflows: {scroll_width} > {client_width}"
    for column in ("conversation_label", "last_message", "apartment"):
        header = box(page, f"#result_list th.column-{column}")
        assert header["x"] >= 0 and header["x"] + header["width"] <= VIEWPORT["width"], (column, header)


def test_long_message_body_reads_as_lines_not_one_word_per_line(page):
    conversation = linked_conversations(1)[0]
    MessageFactory(conversation=conversation, author=CUSTOMER, body=LONG_BODY)
    MessageFactory(conversation=conversation, author="ASSISTANT", direction="outbound",
                   body="So sorry! The code is 4711, and the heating is on its way.")
    page.goto("/admin/testapp/chatmessage/")
    page.screenshot(path=str(SCREENSHOTS / "convlink_messages_1280.png"), full_page=True)
    results = page.locator("#changelist .results")
    scroll_width, client_width = results.evaluate("el => [el.scrollWidth, el.clientWidth]")
    assert scroll_width <= client_width, f"the results table overflows: {scroll_width} > {client_width}"
    body = page.locator("#result_list tbody tr .field-short_body").first
    cell = body.bounding_box()
    assert cell["width"] >= 250, f"the body column is too narrow: {cell}"
    # The lines the body's text takes (the cell also holds the SID beneath it).
    words, lines = body.evaluate("""cell => {
        const text = document.createTreeWalker(cell, NodeFilter.SHOW_TEXT).nextNode();
        const range = document.createRange();
        range.selectNodeContents(text);
        const tops = new Set([...range.getClientRects()].map(rect => Math.round(rect.top)));
        return [text.textContent.trim().split(/\\s+/).length, tops.size];
    }""")
    assert lines <= 4 and words / lines >= 4, f"{words} words on {lines} lines"


def test_delivery_log_fits_1280px(page):
    deliveries = [("processed", "onMessageAdded"), ("rejected", ""), ("failed", "onConversationStateUpdated")]
    for status, event_type in deliveries:
        WebhookDelivery.objects.create(
            event_type=event_type, status=status, conversation_sid="CH" + "1" * 32,
            message_sid="IM" + "2" * 32 if event_type == "onMessageAdded" else "",
            error="" if status == "processed" else "OperationalError: database is locked " * 4)
    page.goto("/admin/twilio_convlink/webhookdelivery/")
    page.screenshot(path=str(SCREENSHOTS / "convlink_deliveries_1280.png"), full_page=True)
    results = page.locator("#changelist .results")
    scroll_width, client_width = results.evaluate("el => [el.scrollWidth, el.clientWidth]")
    assert scroll_width <= client_width, f"the results table overflows: {scroll_width} > {client_width}"


@pytest.mark.parametrize("typed", ["(415) 555-0111", "415.555.0111"])
def test_search_box_finds_a_conversation_by_formatted_phone(page, typed):
    wanted, other = linked_conversations(2)
    page.goto("/admin/testapp/chatconversation/")
    page.fill("#searchbar", typed)
    page.press("#searchbar", "Enter")
    page.wait_for_url("**q=**")
    page.screenshot(path=str(SCREENSHOTS / "convlink_search_1280.png"))
    rows = page.locator("#result_list tbody tr")
    assert rows.count() == 1
    assert wanted.conversation_sid in rows.first.inner_html()
    assert other.conversation_sid not in page.content()
