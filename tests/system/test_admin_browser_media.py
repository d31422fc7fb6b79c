"""A customer's photo as a property manager sees it, in a real browser at 1280 x 800
(the fixtures of test_admin_browser: Debian's chromium, Playwright, the live server):
the picture itself in the thread, loaded through the admin, and the other files as
links. Screenshot: artifacts/screenshots/media-conversation.png.
"""

import datetime
import struct
import zlib

import pytest
from django.core.files.base import ContentFile
from django.utils import timezone

from django_twilio_convlink.models import StoredMedia
from tests.factories import (
    ConversationFactory,
    GuestFactory,
    MessageFactory,
    PropertyFactory,
    ReservationFactory,
)
from tests.helpers import sid
from tests.system import test_admin_browser as admin_browser
from tests.system.test_admin_browser import SCREENSHOTS

pytestmark = pytest.mark.django_db(transaction=True)

site, browser, page = admin_browser.site, admin_browser.browser, admin_browser.page

CUSTOMER = "+14155550111"


def png(width: int, height: int) -> bytes:
    """A real PNG (a blue sky over a grey wall): what a browser decodes and draws."""
    rows = b"".join(b"\x00" + (b"\x5a\x8f\xd0" if y < height // 2 else b"\x9a\x9a\x96") * width
                    for y in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows))
            + chunk(b"IEND", b""))


def stored_file(message, content: bytes, content_type: str, filename: str) -> StoredMedia:
    row = StoredMedia(media_sid=message.media[0]["Sid"], message_sid=message.message_sid,
                      conversation_sid=message.conversation.conversation_sid, content_type=content_type,
                      filename=filename, size=len(content), state="stored", stored_at=timezone.now())
    row.file.save("ignored", ContentFile(content), save=False)
    row.save()
    return row


@pytest.fixture
def tenant_with_a_photo(settings, tmp_path):
    settings.STORAGES = {**settings.STORAGES, "default": {
        "BACKEND": "django.core.files.storage.FileSystemStorage", "OPTIONS": {"location": str(tmp_path)}}}
    booking = ReservationFactory(guest=GuestFactory(full_name="Maria Gonzalez", mobile=CUSTOMER),
                                 unit=PropertyFactory(title="Seaside Loft, 2nd floor"))
    conversation = ConversationFactory(friendly_name="Maria Gonzalez", customer_phone=CUSTOMER,
                                       booking=booking, apartment=booking.unit, link_method="automatic")
    start = timezone.now() - datetime.timedelta(hours=1)

    def text(minutes: int, files=(), **fields):
        media = [{"Sid": sid("ME"), "ContentType": kind, "Filename": name, "Size": 1000}
                 for kind, name in files]
        when = start + datetime.timedelta(minutes=minutes)
        return MessageFactory(conversation=conversation, date_created=when, index=minutes, media=media,
                              **fields)

    text(0, body="Hi, the heater in the bedroom is not working and the tap drips. See the photo.",
         author=CUSTOMER, files=[("image/png", "heater.png")])
    photo = conversation.messages.get(index=0)
    stored_file(photo, png(480, 360), "image/png", "heater.png")
    lease = text(2, body="And here is the damage report you asked for.", author=CUSTOMER,
                 files=[("application/pdf", "damage-report.pdf")])
    stored_file(lease, b"%PDF-1.7 report", "application/pdf", "damage-report.pdf")
    text(3, body="", author=CUSTOMER, files=[("image/jpeg", "tap.jpg")])
    text(10, body="Thanks Maria, a technician comes by at 3pm today.", author="ASSISTANT",
         direction="outbound", delivery_status="delivered", delivery_updated_at=start)
    return conversation


def test_the_photo_appears_in_the_thread(page, site, tenant_with_a_photo):
    page.goto(f"/admin/testapp/chatconversation/{tenant_with_a_photo.pk}/change/")
    image = page.locator(".convlink-thread img").first
    image.wait_for()
    image.scroll_into_view_if_needed()
    page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=image.element_handle())
    assert image.evaluate("img => [img.naturalWidth, img.naturalHeight]") == [480, 360]
    shown = image.bounding_box()
    assert 0 < shown["width"] <= 322 and shown["x"] + shown["width"] <= 1280  # 320 and its border
    report = page.get_by_role("link", name="damage-report.pdf")
    assert report.is_visible()
    assert page.get_by_text("tap.jpg: Photo kept at Twilio (not downloaded)").is_visible()
    page.screenshot(path=str(SCREENSHOTS / "media-conversation.png"), full_page=True)
    page.locator(".convlink-thread").screenshot(path=str(SCREENSHOTS / "media-thread.png"))

    # A click opens the whole picture in a tab of its own, drawn despite its sandboxing policy.
    with page.expect_popup() as opened:
        image.click()
    whole = opened.value
    whole.wait_for_load_state()
    assert whole.url.endswith(image.get_attribute("src"))
    assert whole.evaluate("document.contentType") == "image/png"
    assert whole.locator("img").evaluate("img => img.naturalWidth") == 480


def test_the_customer_files_list_shows_each_file_and_why_one_is_missing(page, site, tenant_with_a_photo):
    from django_twilio_convlink.models import StoredMedia

    StoredMedia.objects.create(media_sid=sid("ME"), message_sid=sid("IM"), content_type="image/jpeg",
                               conversation_sid=tenant_with_a_photo.conversation_sid, filename="boiler.jpg",
                               size=2_400_000, state="permanent", attempts=1, last_error_status=403,
                               last_error="Twilio refused the credentials (HTTP 403).")
    page.goto("/admin/twilio_convlink/storedmedia/")
    rows = page.locator("#result_list tbody tr")
    assert rows.count() == 3
    thumbnail = page.locator("#result_list img.convlink-thumbnail")
    assert thumbnail.count() == 1
    page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=thumbnail.element_handle())
    assert "Maria Gonzalez (+14155550111)" in rows.nth(0).inner_text()
    listed = page.locator("#result_list").inner_text()
    assert "Photo could not be downloaded: Twilio refused the credentials" in listed
    results = page.locator("#changelist .results")
    scroll_width, client_width = results.evaluate("el => [el.scrollWidth, el.clientWidth]")
    assert scroll_width <= client_width, f"the list overflows: {scroll_width} > {client_width}"
    page.screenshot(path=str(SCREENSHOTS / "media-customer-files.png"), full_page=True)


def test_a_reply_is_sent_from_the_thread(page, site, tenant_with_a_photo):
    from django_twilio_convlink import api

    page.goto(f"/admin/testapp/chatconversation/{tenant_with_a_photo.pk}/change/")
    box = page.locator("#convlink-reply-body")
    box.scroll_into_view_if_needed()
    box.fill("The technician is on his way, Maria.")
    page.get_by_role("button", name="Send").click()
    page.wait_for_url("**/change/#convlink-reply-box")
    assert page.get_by_text("Sent: “The technician is on his way, Maria.”").is_visible()
    sent = page.locator(".convlink-thread li.outbound", has_text="The technician is on his way, Maria.")
    assert sent.count() == 1
    assert [call.kwargs["body"] for call in api.outbox if call.method == "send_message"] == [
        "The technician is on his way, Maria."]
    page.locator("#convlink-reply-box").screenshot(path=str(SCREENSHOTS / "media-reply.png"))


def test_an_opted_out_customers_reply_box_is_disabled(page, site, tenant_with_a_photo):
    from django_twilio_convlink import opt_out

    opt_out(CUSTOMER, how="keyword", detail="STOP", origin="webhook")
    page.goto(f"/admin/testapp/chatconversation/{tenant_with_a_photo.pk}/change/")
    assert page.locator("#convlink-reply-body").is_disabled()
    assert page.get_by_role("button", name="Send").is_disabled()
    assert page.get_by_text(f"{CUSTOMER} opted out of texts").is_visible()


def test_the_inbox_shows_each_customers_last_message(page, site, tenant_with_a_photo):
    waiting = ConversationFactory(friendly_name="Tom Becker", customer_phone="+14155550122")
    MessageFactory(conversation=waiting, author="+14155550122", body="Is late checkout possible on Sunday?")
    page.goto("/admin/testapp/chatconversation/")
    rows = page.locator("#result_list tbody tr")
    assert rows.count() == 2
    # Newest activity first: Tom's question, waiting for a reply, above Maria's answered thread.
    assert "Waiting" in rows.nth(0).inner_text() and "Is late checkout possible" in rows.nth(0).inner_text()
    assert "We: Thanks Maria, a technician comes by at 3pm today." in rows.nth(1).inner_text()
    results = page.locator("#changelist .results")
    scroll_width, client_width = results.evaluate("el => [el.scrollWidth, el.clientWidth]")
    assert scroll_width <= client_width, f"the inbox overflows: {scroll_width} > {client_width}"
    page.screenshot(path=str(SCREENSHOTS / "inbox-1280.png"), full_page=True)


def test_a_messages_page_shows_its_photo(page, site, tenant_with_a_photo):
    message = tenant_with_a_photo.messages.get(index=0)
    page.goto(f"/admin/testapp/chatmessage/{message.pk}/change/")
    image = page.locator(".convlink-message-files img")
    image.wait_for()
    page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=image.element_handle())
    assert image.evaluate("img => img.naturalWidth") == 480
    assert page.locator(".convlink-message-files").get_by_text("heater.png").is_visible()
    page.screenshot(path=str(SCREENSHOTS / "media-message.png"), full_page=True)
