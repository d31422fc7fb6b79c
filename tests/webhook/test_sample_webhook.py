"""The app's own send_sample_webhook: a site posts a signed customer message to its own
endpoint, in its process or over HTTP, and reads where it landed."""

from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from django_twilio_convlink.models import WebhookDelivery
from tests.factories import ConversationFactory, GuestFactory, ReservationFactory
from tests.helpers import CUSTOMER
from tests.testapp.models import ChatConversation

pytestmark = pytest.mark.django_db


def send(*args: str) -> str:
    out = StringIO()
    call_command("send_sample_webhook", *args, stdout=out)
    return out.getvalue()


@pytest.fixture
def stay():
    """The default sample phone's stay, typed as a person would."""
    return ReservationFactory(guest=GuestFactory(mobile="(415) 555-0142"))


def test_posts_a_new_conversation_and_its_first_message_linked_to_the_booking(stay, api_outbox):
    out = send()
    conversation = ChatConversation.objects.get()
    assert conversation.customer_phone == CUSTOMER
    assert (conversation.booking, conversation.apartment, conversation.link_method) == (stay, stay.unit,
                                                                                         "automatic")
    [message] = conversation.messages.all()
    assert message.author == CUSTOMER and message.body == f"Hi, the heater in {stay.unit} is not working"
    # Both deliveries were signed with the site's token: stored and processed, as Twilio's would be.
    assert sorted(WebhookDelivery.objects.values_list("event_type", "status")) == [
        ("onConversationAdded", "processed"), ("onMessageAdded", "processed")]
    sid = conversation.conversation_sid
    assert f"onConversationAdded from {CUSTOMER} ({sid}): HTTP 200" in out
    assert f"onMessageAdded from {CUSTOMER} ({sid}, {message.message_sid}): HTTP 200" in out
    # The admin URL comes from the site's own model (testapp.ChatConversation), not the example's.
    assert out.splitlines()[-1] == (f'Conversation {sid} linked to booking "{stay}" (automatic): '
                                    f"/admin/testapp/chatconversation/{conversation.pk}/change/")


def test_a_phone_no_booking_has_stays_unlinked_and_says_so():
    out = send("--from", "+1 555 000 1111", "--body", "Is the pool open?")
    conversation = ChatConversation.objects.get()
    assert conversation.booking is None and conversation.messages.get().body == "Is the pool open?"
    assert (f"Conversation {conversation.conversation_sid} not linked to a booking (none found for "
            "+1 555 000 1111): /admin/testapp/chatconversation/") in out


def test_a_conversation_sid_continues_that_conversation_with_its_message_only(stay):
    conversation = ConversationFactory(customer_phone=CUSTOMER)
    send("--conversation-sid", conversation.conversation_sid, "--index", "1", "--body", "Still cold")
    assert ChatConversation.objects.get() == conversation
    assert list(WebhookDelivery.objects.values_list("event_type", flat=True)) == ["onMessageAdded"]
    assert conversation.messages.get().index == 1


def test_a_wrong_signature_is_rejected_and_nothing_is_stored():
    out = send("--wrong-signature")
    assert "HTTP 403" in out
    assert ("Rejected with 403, as it should be. The app logged: Rejected Twilio webhook: "
            "X-Twilio-Signature does not match") in out
    assert not WebhookDelivery.objects.exists() and not ChatConversation.objects.exists()


def test_without_an_auth_token_it_says_which_setting_to_set(settings):
    # The check (E007) stops other commands first; this one says it in its own words.
    settings.TWILIO_CONVLINK = {**settings.TWILIO_CONVLINK, "AUTH_TOKEN": ""}
    with pytest.raises(CommandError, match=r'TWILIO_CONVLINK\["AUTH_TOKEN"\] is not set'):
        send()


def test_a_site_with_another_token_answers_403_and_the_command_says_what_was_signed(monkeypatch):
    # As when --url names a server whose settings hold another token than this process's.
    from django_twilio_convlink.management.commands import send_sample_webhook

    monkeypatch.setattr(send_sample_webhook, "signing_token", lambda: "another-sites-token")
    with pytest.raises(CommandError) as error:
        send()
    message = str(error.value)
    assert message.startswith("the webhook (in this process) answered 403, not 200: Rejected Twilio webhook: "
                              "X-Twilio-Signature does not match (validated against ")
    # The host is one ALLOWED_HOSTS accepts; the URL is the one the site validated against.
    validated = message.split("(validated against ")[1].split(")")[0]
    assert validated.endswith("/twilio/webhook/")
    assert f'The signature was computed for {validated} with TWILIO_CONVLINK["AUTH_TOKEN"]' in message


@pytest.mark.parametrize(("args", "changes", "answer"), [
    (["--conversation-sid", "CH-not-a-sid"], {}, "answered 400, not 200: Rejected Twilio onMessageAdded: "),
    ([], {"MAX_REQUEST_BYTES": 100}, "answered 413, not 200: Rejected Twilio webhook: body of "),
])
def test_any_other_answer_names_the_status_and_the_reason_the_app_logged(settings, args, changes, answer):
    settings.TWILIO_CONVLINK = {**settings.TWILIO_CONVLINK, **changes}
    with pytest.raises(CommandError, match=answer):
        send(*args)


@pytest.fixture
def site_server(transactional_db):
    """This test site behind a real HTTP server on loopback, as ``runserver`` would serve
    it. Not pytest-django's ``live_server``: that one is the session's, and the browser
    tests must be the first to start it (with their static files)."""
    from django.db import connections
    from django.test.testcases import LiveServerThread

    # An in-memory SQLite database exists in one connection: the server's thread uses it.
    shared = {conn.alias: conn for conn in connections.all()
              if conn.vendor == "sqlite" and conn.is_in_memory_db()}
    for conn in shared.values():
        conn.inc_thread_sharing()
    server = LiveServerThread("127.0.0.1", lambda media_files: media_files.application, shared)
    server.daemon = True
    server.start()
    server.is_ready.wait()
    if server.error:
        raise server.error
    yield f"http://127.0.0.1:{server.port}"
    server.terminate()
    for conn in shared.values():
        conn.dec_thread_sharing()


def test_over_http_to_a_running_server(site_server):
    stay = ReservationFactory(guest=GuestFactory(mobile="(415) 555-0142"))
    out = send("--url", f"{site_server}/twilio/webhook/")
    # After the commit, as on a real server: the group chat was made too (LocmemBackend).
    conversation = ChatConversation.objects.get(is_group_chat=False)
    assert conversation.group_chat is not None
    assert conversation.booking == stay and conversation.messages.count() == 1
    assert out.splitlines()[-1] == (
        f'Conversation {conversation.conversation_sid} linked to booking "{stay}" (automatic): '
        f"{site_server}/admin/testapp/chatconversation/{conversation.pk}/change/")


def test_over_http_the_reason_is_the_answer_the_server_gave(site_server, monkeypatch):
    from django_twilio_convlink.management.commands import send_sample_webhook

    out = send("--url", f"{site_server}/twilio/webhook/", "--wrong-signature")
    assert "Rejected with 403, as it should be. The server's log says why." in out
    monkeypatch.setattr(send_sample_webhook, "signing_token", lambda: "another-sites-token")
    with pytest.raises(CommandError, match=r"/webhook/ answered 403, not 200: Invalid Twilio signature\."):
        send("--url", f"{site_server}/twilio/webhook/")


def test_over_http_an_unreachable_server_is_named():
    with pytest.raises(CommandError, match=r"Could not reach http://127.0.0.1:9/twilio/webhook/ .*--url"):
        send("--url", "http://127.0.0.1:9/twilio/webhook/")


def test_a_site_that_calls_twilio_is_refused_unless_asked(settings):
    # A made-up customer on a real account would get a real group chat and text the manager.
    settings.TWILIO_CONVLINK = {**settings.TWILIO_CONVLINK,
                                "API_BACKEND": "django_twilio_convlink.api.SdkBackend"}
    with pytest.raises(CommandError, match="--allow-twilio-calls"):
        send()
    assert not WebhookDelivery.objects.exists()


@pytest.mark.parametrize(("args", "outcome"), [
    (["--wrong-signature"], "Rejected with 403, as it should be."),  # nothing is stored, nothing called
    (["--event", "onConversationAdded"], "not linked to a booking"),  # no message to forward
])
def test_a_sample_that_forwards_nothing_is_posted_on_a_site_that_calls_twilio(settings, args, outcome):
    settings.TWILIO_CONVLINK = {**settings.TWILIO_CONVLINK,
                                "API_BACKEND": "django_twilio_convlink.api.SdkBackend"}
    assert outcome in send(*args)


def test_without_the_group_chat_a_sample_is_posted_on_a_site_that_calls_twilio(settings):
    settings.TWILIO_CONVLINK = {**settings.TWILIO_CONVLINK, "GROUP_CHAT": False,
                                "API_BACKEND": "django_twilio_convlink.api.SdkBackend"}
    send()
    assert ChatConversation.objects.get().messages.count() == 1


@pytest.mark.parametrize("url", ["127.0.0.1:8000/twilio/webhook/", "http://[::1"])
def test_a_url_that_is_no_http_url_is_named(url):
    with pytest.raises(CommandError, match="must be an http:// or https:// URL"):
        send("--url", url)


def test_over_http_a_redirect_is_not_followed(site_server):
    # APPEND_SLASH's redirect, which urllib would follow with a GET.
    with pytest.raises(CommandError, match="/admin answered 301, not 200: a redirect to /admin/: give that"):
        send("--url", f"{site_server}/admin")
