"""Customers' files in the admin: photos shown in the thread, other files linked, all
served by one admin view that checks the user may view the conversation, never from a
public URL; and the "Customer files" list."""

import re

import pytest
from django.contrib.auth.models import Permission, User
from django.core.files.base import ContentFile
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from django_twilio_convlink.models import StoredMedia
from tests.factories import ConversationFactory, MessageFactory
from tests.helpers import sid

pytestmark = pytest.mark.django_db

JPEG = b"\xff\xd8\xff\xe0" + b"tap" * 300
PHONE = "+14155550111"


@pytest.fixture(autouse=True)
def storage(settings, tmp_path):
    settings.STORAGES = {**settings.STORAGES, "default": {
        "BACKEND": "django.core.files.storage.FileSystemStorage",
        "OPTIONS": {"location": str(tmp_path / "media"), "base_url": "/public-media/"}}}


def photo(conversation=None, *, content=JPEG, content_type="image/jpeg", filename="tap.jpg", state="stored"):
    """A customer's message with one file, stored (or in ``state``) as the download would."""
    conversation = conversation or ConversationFactory(customer_phone=PHONE)
    media_sid = sid("ME")
    message = MessageFactory(conversation=conversation, body="The tap leaks", media=[
        {"Sid": media_sid, "ContentType": content_type, "Filename": filename, "Size": len(content)}])
    row = StoredMedia(media_sid=media_sid, message_sid=message.message_sid,
                      conversation_sid=conversation.conversation_sid, content_type=content_type,
                      filename=filename, size=len(content), state=state)
    if state == "stored":
        row.file.save("ignored", ContentFile(content), save=False)
        row.stored_at = timezone.now()
    else:
        row.last_error = "The media service answered 500."
    row.save()
    return row


def file_url(row) -> str:
    from tests.testapp.models import ChatConversation

    conversation = ChatConversation.objects.get(conversation_sid=row.conversation_sid)
    return reverse("admin:testapp_chatconversation_file", args=[conversation.pk, row.media_sid])


def page(client, conversation) -> str:
    response = client.get(reverse("admin:testapp_chatconversation_change", args=[conversation.pk]))
    assert response.status_code == 200
    return response.content.decode()


def staff(*permissions: str) -> User:
    user = User.objects.create_user(f"manager{User.objects.count()}", password="x", is_staff=True)
    user.user_permissions.set(Permission.objects.filter(codename__in=permissions))
    return user


def test_a_photo_is_served_inline_to_whoever_may_view_the_conversation(client):
    row = photo()
    client.force_login(staff("view_chatconversation"))
    response = client.get(file_url(row))

    assert response.status_code == 200
    assert b"".join(response.streaming_content) == JPEG
    assert response["Content-Type"] == "image/jpeg"
    assert response["Content-Disposition"].startswith("inline")
    assert response["Content-Disposition"] == 'inline; filename="tap.jpg"'
    assert response["X-Content-Type-Options"] == "nosniff"
    policy = [directive.strip() for directive in response["Content-Security-Policy"].split(";")]
    assert policy[0] == "default-src 'none'" and "sandbox" in policy


@pytest.mark.parametrize("user", ["no permission", "anonymous", "not staff"])
def test_anyone_else_gets_nothing(client, user):
    row = photo()
    if user == "no permission":
        client.force_login(staff("view_chatmessage"))
        expected = 403
    elif user == "not staff":
        nobody = staff("view_chatconversation")
        nobody.is_staff = False
        nobody.save()
        client.force_login(nobody)
        expected = 302
    else:
        expected = 302
    response = client.get(file_url(row))
    assert response.status_code == expected
    assert JPEG not in response.content


@pytest.mark.parametrize("content, content_type, filename", [
    (b"<svg xmlns='http://www.w3.org/2000/svg' onload='alert(1)'/>", "image/svg+xml", "plan.svg"),
    (b"<script>alert(1)</script>", "text/html", "invoice.html"),
    (b"%PDF-1.7 lease", "application/pdf", "lease.pdf"),
], ids=["svg", "html", "pdf"])
def test_anything_but_a_raster_image_is_a_download(admin_client, content, content_type, filename):
    row = photo(content=content, content_type=content_type, filename=filename)
    response = admin_client.get(file_url(row))

    assert response.status_code == 200 and b"".join(response.streaming_content) == content
    assert response["Content-Type"] == "application/octet-stream"
    assert response["Content-Disposition"] == f'attachment; filename="{filename}"'
    assert response["X-Content-Type-Options"] == "nosniff"
    assert "sandbox" in response["Content-Security-Policy"]


def test_a_senders_file_name_cannot_reach_the_header_unsafely(admin_client):
    row = photo(content=b"x", content_type="application/pdf", filename='../../etc/"pass\r\nwd".pdf')
    disposition = admin_client.get(file_url(row))["Content-Disposition"]
    assert "\r" not in disposition and "\n" not in disposition and ".." not in disposition


def test_a_file_not_stored_or_of_another_conversation_is_not_found(admin_client):
    waiting = photo(state="failed")
    assert admin_client.get(file_url(waiting)).status_code == 404
    stored = photo()
    other = ConversationFactory()
    url = reverse("admin:testapp_chatconversation_file", args=[other.pk, stored.media_sid])
    assert admin_client.get(url).status_code == 404


def test_the_group_chat_shows_the_files_of_the_messages_it_copies(admin_client):
    customer = ConversationFactory(customer_phone=PHONE)
    group = ConversationFactory(is_group_chat=True, customer_phone=PHONE)
    customer.group_chat = group
    customer.save()
    row = photo(customer)
    MessageFactory(conversation=group, author="ASSISTANT", direction="outbound", body="",
                   media=[{"Sid": row.media_sid, "ContentType": "image/jpeg", "Filename": "tap.jpg"}])
    url = reverse("admin:testapp_chatconversation_file", args=[group.pk, row.media_sid])
    assert admin_client.get(url).status_code == 200
    assert f'src="{url}"' in page(admin_client, group)


def test_the_thread_shows_the_photo_through_the_admin_never_a_storage_url(admin_client):
    row = photo()
    conversation = ConversationFactory._meta.model.objects.get(conversation_sid=row.conversation_sid)
    html = page(admin_client, conversation)

    assert re.search(rf'<img src="{re.escape(file_url(row))}" alt="tap.jpg" loading="lazy">', html)
    assert "/public-media/" not in html and row.file.name not in html


def test_the_thread_links_other_files_and_says_why_one_is_missing(admin_client):
    conversation = ConversationFactory(customer_phone=PHONE)
    pdf = photo(conversation, content=b"%PDF", content_type="application/pdf", filename="lease.pdf")
    photo(conversation, state="failed", filename="heater.jpg")
    photo(conversation, state="refused", filename="huge.jpg")
    html = page(admin_client, conversation)

    assert f'<a href="{file_url(pdf)}">lease.pdf</a>' in html
    assert ("heater.jpg: Photo not downloaded yet (will be tried again): The media service answered 500."
            in html)
    assert "huge.jpg: Photo not kept: The media service answered 500." in html


def test_the_threads_queries_do_not_grow_with_its_files(admin_client):
    short, long = (ConversationFactory(customer_phone=PHONE) for _ in range(2))
    photo(short)
    for _ in range(3):
        photo(long)
        photo(long, content=b"%PDF", content_type="application/pdf", filename="lease.pdf")
        photo(long, state="failed", filename="heater.jpg")
        MessageFactory(conversation=long, body="", media=[
            {"Sid": sid("ME"), "ContentType": "image/jpeg", "Filename": "not-yet.jpg", "Size": 10}])

    def queries(conversation) -> list[str]:
        with CaptureQueriesContext(connection) as captured:
            page(admin_client, conversation)
        return [query["sql"] for query in captured]

    assert len(queries(short)) == len(queries(long))
    # The files of the whole thread in one query, by their media SIDs.
    assert len([sql for sql in queries(long) if StoredMedia._meta.db_table in sql]) == 1


def test_a_photo_the_manager_sent_in_the_group_chat_opens_from_the_customers_page(admin_client):
    customer = ConversationFactory(customer_phone=PHONE)
    group = ConversationFactory(is_group_chat=True, customer_phone=PHONE)
    customer.group_chat = group
    customer.save()
    row = photo(group, filename="new-tap.jpg")  # sent from the manager's phone, a file of the group chat
    url = reverse("admin:testapp_chatconversation_file", args=[group.pk, row.media_sid])

    assert f'<img src="{url}"' in page(admin_client, customer)
    assert admin_client.get(url).status_code == 200


@pytest.mark.parametrize("downloads, note", [
    (False, "tap.jpg: Photo kept at Twilio (not downloaded)"),
    (True, "tap.jpg: Photo not downloaded yet"),
], ids=["MEDIA_DOWNLOAD off", "task not run yet"])
def test_a_file_without_a_row_is_named_from_the_message(admin_client, settings, downloads, note):
    settings.TWILIO_CONVLINK = {**settings.TWILIO_CONVLINK, "MEDIA_DOWNLOAD": downloads}
    conversation = ConversationFactory(customer_phone=PHONE)
    MessageFactory(conversation=conversation, body="", media=[
        {"Sid": sid("ME"), "ContentType": "image/jpeg", "Filename": "tap.jpg", "Size": 2048}])
    html = page(admin_client, conversation)
    thread = html.split('class="module convlink-thread"')[1].split("</fieldset>")[0]
    assert note in thread and "<img" not in thread


def test_the_customer_files_list_shows_thumbnails_and_states(admin_client):
    stored = photo()
    failed = photo(state="failed", filename="heater.jpg")
    response = admin_client.get(reverse("admin:twilio_convlink_storedmedia_changelist"))
    html = response.content.decode()

    assert response.status_code == 200
    assert f'class="convlink-thumbnail" src="{file_url(stored)}"' in html and stored.file.name not in html
    assert "Photo not downloaded yet (will be tried again): The media service answered 500." in html
    assert failed.filename in html and f"{PHONE}</a>" in html
    assert admin_client.get(reverse("admin:twilio_convlink_storedmedia_add")).status_code == 403


def test_the_customer_files_list_is_read_only(admin_client):
    row = photo()
    delete = admin_client.get(reverse("admin:twilio_convlink_storedmedia_delete", args=[row.pk]))
    assert delete.status_code == 403
    html = admin_client.get(reverse("admin:twilio_convlink_storedmedia_changelist")).content.decode()
    assert 'name="action"' not in html  # no "delete selected"
    change = admin_client.post(reverse("admin:twilio_convlink_storedmedia_change", args=[row.pk]),
                               {"filename": "other.jpg"})
    assert change.status_code == 403
    row.refresh_from_db()
    assert row.filename == "tap.jpg"


def test_the_list_shows_no_file_to_whom_may_not_view_conversations(client):
    row = photo()
    client.force_login(staff("view_storedmedia"))
    response = client.get(reverse("admin:twilio_convlink_storedmedia_changelist"))
    html = response.content.decode()

    assert response.status_code == 200 and "tap.jpg" in html
    assert "<img class=\"convlink-thumbnail\"" not in html and "/file/" not in html and PHONE not in html
    assert client.get(file_url(row)).status_code == 403


def message_page(client, row) -> str:
    from tests.testapp.models import ChatMessage

    message = ChatMessage.objects.get(message_sid=row.message_sid)
    response = client.get(reverse("admin:testapp_chatmessage_change", args=[message.pk]))
    assert response.status_code == 200
    return response.content.decode()


def test_a_messages_page_shows_its_photo_through_the_admin_view(admin_client):
    row = photo()
    html = message_page(admin_client, row)

    assert "Photos and files" in html
    assert f'<img src="{file_url(row)}"' in html
    assert "/public-media/" not in html and row.file.name not in html


def test_a_messages_page_says_why_a_file_is_missing(admin_client):
    row = photo(state="failed", filename="heater.jpg")
    html = message_page(admin_client, row)

    note = "heater.jpg: Photo not downloaded yet (will be tried again): The media service answered 500."
    assert note in html and "<img src=" not in html


def test_the_group_chats_copy_shows_the_photo_through_the_group_chat(admin_client):
    from tests.testapp.models import ChatMessage

    group = ConversationFactory(is_group_chat=True)
    customer = ConversationFactory(customer_phone=PHONE, group_chat=group)
    row = photo(customer)
    original = ChatMessage.objects.get(message_sid=row.message_sid)
    copy = MessageFactory(conversation=group, body=original.body, media=original.media)
    response = admin_client.get(reverse("admin:testapp_chatmessage_change", args=[copy.pk]))
    url = reverse("admin:testapp_chatconversation_file", args=[group.pk, row.media_sid])

    assert f'<img src="{url}"' in response.content.decode()
    assert b"".join(admin_client.get(url).streaming_content) == JPEG


def test_a_messages_page_shows_no_file_to_whom_may_not_view_conversations(client):
    row = photo()
    client.force_login(staff("view_chatmessage"))
    html = message_page(client, row)

    assert "Photos and files" not in html and "/file/" not in html
