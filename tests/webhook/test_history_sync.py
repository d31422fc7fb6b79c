"""sync_twilio_conversations against a stateful stand-in of Twilio's API
(tests/twilio_history_server.py, through the real SDK with API_BASE_URL): history
stored as the webhooks store it, once per SID, without a word sent to Twilio."""

import datetime
import io
import json
import math

import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from django_twilio_convlink import api
from django_twilio_convlink.history import Backoff, Sync, TwilioHistory
from django_twilio_convlink.history.records import message_event
from django_twilio_convlink.models import OptOut, StoredMedia
from tests.factories import GuestFactory, PropertyFactory, ReservationFactory
from tests.helpers import TwilioClient, payload, sid
from tests.testapp.models import ChatConversation, ChatMessage
from tests.twilio_history_server import ACCOUNT, Conversation, Message, TwilioAccount

pytestmark = pytest.mark.django_db(transaction=True)

MARIA, JONAS, ANA = "+14155550111", "+14155550122", "+14155550133"
MANAGER = "+15612205252"
START = timezone.now() - datetime.timedelta(days=30)


def at(minutes: int) -> datetime.datetime:
    return START + datetime.timedelta(minutes=minutes)


@pytest.fixture
def twilio(settings):
    convlink = settings.TWILIO_CONVLINK
    account = TwilioAccount(convlink["ACCOUNT_SID"], convlink["AUTH_TOKEN"]).start()
    settings.TWILIO_CONVLINK = {**convlink, "API_BASE_URL": account.url, "API_KEY_SID": ""}
    api.LocmemBackend.reset()
    yield account
    account.stop()


def texts(conversation: Conversation, *bodies: tuple[str, str], first: int = 0) -> None:
    for n, (author, body) in enumerate(bodies, start=first):
        conversation.messages.append(Message(sid("IM"), n, author, body, at(n)))


def sync(*args: str) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command("sync_twilio_conversations", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


@pytest.fixture
def account(twilio):
    """Maria (a booking, 250 messages: three pages, and a group chat the app made
    earlier), Jonas on WhatsApp (a photo), Ana (no booking, texted STOP), and 200 more
    conversations so that the list itself has three pages."""
    ReservationFactory(guest=GuestFactory(full_name="Maria Gonzalez", mobile=MARIA),
                       unit=PropertyFactory(title="Seaside Loft"), check_in=at(0).date(),
                       check_out=at(0).date() + datetime.timedelta(days=40))
    ReservationFactory(guest=GuestFactory(full_name="Jonas Berg", mobile=JONAS),
                       check_in=at(0).date(), check_out=at(0).date() + datetime.timedelta(days=40))
    maria = twilio.add(Conversation(sid("CH"), at(0), addresses=[MARIA]))
    texts(maria, *[(MARIA if n % 2 == 0 else "ASSISTANT", f"message {n}") for n in range(250)])
    maria.messages[1].delivery = {"total": 1, "sent": "none", "delivered": "all", "read": "none",
                                  "failed": "none", "undelivered": "none"}
    group = twilio.add(Conversation(sid("CH"), at(1), addresses=[MARIA, MANAGER],
                                    unique_name=f"convlink-group-{maria.sid}",
                                    friendly_name=f"{MARIA} with the manager and assistant"))
    texts(group, ("ASSISTANT", "message 0"), (MANAGER, "A technician comes at 3pm"))
    group.messages[0].attributes = f'{{"forwarded_from": "{maria.messages[0].sid}"}}'
    jonas = twilio.add(Conversation(sid("CH"), at(2), addresses=[f"whatsapp:{JONAS}"]))
    texts(jonas, (f"whatsapp:{JONAS}", "The heater, see the photo"))
    jonas.messages[0].media = [{"sid": sid("ME"), "content_type": "image/jpeg", "filename": "heater.jpg",
                                "size": 1234, "category": "media"}]
    ana = twilio.add(Conversation(sid("CH"), at(3), addresses=[ANA], state="closed"))
    texts(ana, (ANA, "No more texts please"), (ANA, "STOP"))
    for n in range(200):
        filler = twilio.add(Conversation(sid("CH"), at(10 + n), addresses=[f"+1415555{2000 + n}"]))
        texts(filler, (f"+1415555{2000 + n}", "Hello"))
    return {"maria": maria, "group": group, "jonas": jonas, "ana": ana}


def test_an_account_is_brought_in_as_the_webhooks_store_it(account, twilio, received):
    out, err = sync("-v", "1")
    assert err == ""
    assert "conversations: 204 new, 0 updated, 0 unchanged; messages: 455 new, 0 already there; " \
           "2 linked to a booking; 0 failed" in out, out
    maria = ChatConversation.objects.get(conversation_sid=account["maria"].sid)
    assert (maria.customer_phone, maria.booking.guest.full_name, maria.link_method) == (
        MARIA, "Maria Gonzalez", "automatic")
    assert maria.messages.count() == 250
    assert list(maria.messages.order_by("index").values_list("direction", flat=True)[:2]) == [
        "inbound", "outbound"]
    assert maria.messages.get(index=1).delivery_status == "delivered"
    # The group chat the app made before: recognised by its unique name, attached.
    group = ChatConversation.objects.get(conversation_sid=account["group"].sid)
    assert group.is_group_chat and maria.group_chat == group and group.booking == maria.booking
    assert group.messages.get(index=1).direction == "outbound"  # the manager's phone is ours
    jonas = ChatConversation.objects.get(conversation_sid=account["jonas"].sid)
    photo = jonas.messages.get()
    assert photo.source == "WHATSAPP" and photo.media[0]["Filename"] == "heater.jpg"
    assert jonas.booking is not None and jonas.chat_service_sid.startswith("IS")
    ana = ChatConversation.objects.get(conversation_sid=account["ana"].sid)
    assert ana.state == "closed" and ana.booking is None and ana.customer_phone == ANA
    # Her old STOP changes no opt-out now (she may have texted START since, elsewhere).
    assert not OptOut.objects.filter(phone=ANA).exists()
    # History is not news: nothing posted to Twilio, no group chat made, no forward due.
    assert twilio.writes() == [] and api.outbox == []
    assert not ChatMessage.objects.exclude(forward_state="").exists()
    origins = {kwargs["origin"] for name, _, kwargs in received.calls if name == "message_received"}
    assert origins == {"sync"} and received.names().count("message_received") == 455
    # Three pages of conversations, three of Maria's messages.
    assert len(twilio.gets("/v1/Conversations")) - len(twilio.gets("/v1/Conversations/")) == 3
    assert len(twilio.gets(f"/v1/Conversations/{account['maria'].sid}/Messages")) == 3

    # Again: nothing new, one row per SID.
    out, _ = sync()
    assert "conversations: 0 new, 0 updated, 204 unchanged; messages: 0 new, 455 already there" in out, out
    assert ChatMessage.objects.count() == 455 and ChatConversation.objects.count() == 204


def test_a_synced_message_is_the_row_its_webhook_makes(twilio, settings):
    """Field by field, what the webhook stores of a customer's photo and what the sync
    stores of the same message (with the group chat off: a webhook's message is then
    forwarded, history never is)."""
    settings.TWILIO_CONVLINK = {**settings.TWILIO_CONVLINK, "GROUP_CHAT": False}
    conversation = twilio.add(Conversation(sid("CH"), at(0), addresses=[JONAS]))
    message = Message(sid("IM"), 0, JONAS, "The heater", at(0), participant_sid=sid("MB"),
                      attributes='{"k": 1}', media=[{"sid": sid("ME"), "content_type": "image/png",
                                                     "filename": "h.png", "size": 10}])
    conversation.messages.append(message)
    sync("--conversation-sid", conversation.sid)
    synced = ChatMessage.objects.values().get(message_sid=message.sid)
    ChatMessage.objects.all().delete()
    data = message.json(conversation.sid)
    response = TwilioClient().webhook(payload(
        "onMessageAdded_sms_from_customer", ConversationSid=conversation.sid, MessageSid=message.sid,
        AccountSid=ACCOUNT, Author=JONAS, Body="The heater", Index="0", DateCreated=data["date_created"],
        DateUpdated=data["date_updated"], ParticipantSid=message.participant_sid, Attributes='{"k": 1}',
        Media=json.dumps([{"Sid": message.media[0]["sid"], "ContentType": "image/png", "Filename": "h.png",
                           "Size": 10}])))
    assert response.status_code == 200
    webhook = ChatMessage.objects.values().get(message_sid=message.sid)
    ignored = {"id", "created_at", "updated_at"}
    assert {k: v for k, v in synced.items() if k not in ignored} == {
        k: v for k, v in webhook.items() if k not in ignored}


def test_a_dry_run_reads_and_writes_nothing(account, twilio, received):
    out, _ = sync("--dry-run", "-v", "1")
    assert "[dry run] would store: conversations: 204 new" in out and "messages: 455 new" in out, out
    assert f"Would store {account['maria'].sid}: new, 250 new message(s)" in out
    assert ChatConversation.objects.count() == 0 and ChatMessage.objects.count() == 0
    assert received.calls == [] and twilio.writes() == []


def test_a_conversation_half_stored_by_webhooks_is_completed_without_duplicates(twilio):
    conversation = twilio.add(Conversation(sid("CH"), at(0), addresses=[MARIA]))
    texts(conversation, *[(MARIA, f"text {n}") for n in range(5)])
    client = TwilioClient()
    for message in conversation.messages[:2]:
        client.webhook(payload("onMessageAdded_sms_from_customer", ConversationSid=conversation.sid,
                               MessageSid=message.sid, AccountSid=ACCOUNT, Author=MARIA, Body=message.body,
                               Index=str(message.index)))
    out, _ = sync()
    assert "messages: 3 new, 2 already there" in out, out
    assert ChatMessage.objects.filter(conversation__conversation_sid=conversation.sid).count() == 5


def test_rate_limits_are_waited_out(account, twilio):
    twilio.throttle("/v1/Conversations", times=2)
    reader = TwilioHistory(backoff=Backoff(first=0.01))
    report = Sync(reader).run(conversation_sid=account["maria"].sid)
    assert report.failed == [] and report.messages_new == 250
    assert reader.waited == pytest.approx(0.03)  # 0.01, then 0.02


def test_a_rate_limit_that_does_not_end_fails_that_conversation_only(account, twilio):
    reader = TwilioHistory(backoff=Backoff(first=0.001, tries=3))
    twilio.throttle(f"/v1/Conversations/{account['ana'].sid}/Messages", times=5)
    report = Sync(reader).run(since=at(0).date().isoformat())
    assert [sid for sid, _ in report.failed] == [account["ana"].sid]
    assert "Too Many Requests" in report.failed[0][1]
    assert report.conversations == 204 and report.messages_new == 453


def test_a_failed_conversation_makes_the_command_exit_1(twilio):
    good = twilio.add(Conversation(sid("CH"), at(0), addresses=[MARIA]))
    texts(good, (MARIA, "hello"))
    bad = twilio.add(Conversation(sid("CH"), at(1), addresses=[JONAS]))
    bad.messages.append(Message("IMnot-a-sid", 0, JONAS, "x", at(1)))
    with pytest.raises(CommandError, match="1 conversation"):
        call_command("sync_twilio_conversations", stdout=io.StringIO(), stderr=(err := io.StringIO()))
    assert f"{bad.sid}: not brought in: MessageSid" in err.getvalue()
    assert ChatMessage.objects.filter(conversation__conversation_sid=good.sid).count() == 1


def test_one_customers_conversations_by_phone(account, twilio):
    out, _ = sync("--phone", "(415) 555-0111")
    assert "conversations: 2 new" in out, out  # Maria's, and her group chat
    assert set(ChatConversation.objects.values_list("conversation_sid", flat=True)) == {
        account["maria"].sid, account["group"].sid}
    sync("--phone", "415.555.0122")  # Jonas writes on WhatsApp
    assert ChatConversation.objects.filter(conversation_sid=account["jonas"].sid).exists()
    asked = {request.query["Address"] for request in twilio.gets("/v1/ParticipantConversations")}
    assert asked == {MARIA, f"whatsapp:{MARIA}", JONAS, f"whatsapp:{JONAS}"}


def listings(twilio) -> list:
    return [request for request in twilio.gets("/v1/Conversations") if request.path == "/v1/Conversations"]


def test_since_and_state_are_twilios_filters(account, twilio):
    sync("--state", "closed")
    assert list(ChatConversation.objects.values_list("conversation_sid", flat=True)) == [
        account["ana"].sid]
    assert listings(twilio)[0].query["State"] == "closed"
    sync("--since", at(205).date().isoformat())
    assert listings(twilio)[-1].query.get("StartDate") == f"{at(205).date().isoformat()}T00:00:00Z"


def test_missing_fetches_only_the_gap(twilio):
    gappy = twilio.add(Conversation(sid("CH"), at(0), addresses=[MARIA]))
    texts(gappy, *[(MARIA, f"text {n}") for n in range(6)])
    whole = twilio.add(Conversation(sid("CH"), at(1), addresses=[JONAS]))
    texts(whole, (JONAS, "one"), (JONAS, "two"))
    sync()
    # Webhooks lost: index 2 of the first, and everything after its index 3.
    lost = [message.sid for message in gappy.messages if message.index in (2, 4, 5)]
    ChatMessage.objects.filter(message_sid__in=lost).delete()
    texts(gappy, (MARIA, "text 6"), first=6)
    twilio.seen.clear()
    out, _ = sync("--missing")
    assert "messages: 4 new" in out, out
    assert sorted(ChatMessage.objects.filter(conversation__conversation_sid=gappy.sid)
                  .values_list("index", flat=True)) == list(range(7))
    # The whole one cost one request (its newest message); the gappy one two.
    assert len(twilio.gets(f"/v1/Conversations/{whole.sid}")) == 1
    assert len(twilio.gets(f"/v1/Conversations/{gappy.sid}")) == 2
    assert twilio.gets("/v1/Conversations?") == [] and twilio.writes() == []


def test_a_page_of_messages_costs_the_same_statements_whatever_its_size(twilio):
    """Bulk: one INSERT a page, not one per message (bench/ prints the figure)."""
    reader = TwilioHistory()
    counts = []
    for size in (10, 100):
        conversation = twilio.add(Conversation(sid("CH"), at(0), addresses=[MARIA]))
        texts(conversation, *[(MARIA if n else "ASSISTANT", f"text {n}") for n in range(size)])
        sync("--conversation-sid", conversation.sid)
        stored = ChatConversation.objects.get(conversation_sid=conversation.sid)
        ChatMessage.objects.filter(conversation=stored).delete()
        events = [message_event(item, stored.chat_service_sid)
                  for page in reader.message_pages(conversation.sid) for item in page]
        with CaptureQueriesContext(connection) as queries:
            rows = Sync(reader).store_page(stored, events, {})
        assert len(rows) == size
        inserts = [q for q in queries if q["sql"].startswith("INSERT")]
        # One INSERT, split only where the database limits the parameters of one
        # statement (SQLite: 999), as bulk_create does.
        fields = [f for f in ChatMessage._meta.concrete_fields if not f.primary_key]
        assert len(inserts) == math.ceil(size / connection.ops.bulk_batch_size(fields, rows)), inserts
        counts.append(len(queries) - len(inserts))
    assert counts[0] == counts[1], counts


def test_files_of_history_are_fetched_only_when_asked(media_service, twilio):
    photo = sid("ME")
    media_service.add(photo, b"\xff\xd8\xff\xe0heater", service_sid="IS88888888888888888888888888888888")
    conversation = twilio.add(Conversation(sid("CH"), at(0), addresses=[JONAS]))
    conversation.messages.append(Message(sid("IM"), 0, JONAS, "", at(0), media=[
        {"sid": photo, "content_type": "image/jpeg", "filename": "heater.jpg", "size": 10}]))
    sync()  # downloads are on (MEDIA_DOWNLOAD), but history is not news
    assert media_service.seen == [] and not StoredMedia.objects.exists()
    ChatMessage.objects.all().delete()
    out, _ = sync("--media")
    assert StoredMedia.objects.get(media_sid=photo).state == "stored"
    assert len(media_service.requests_to("cdn")) == 1


@pytest.mark.parametrize(("args", "error"), [
    (["--since", "2026-02-30"], "is not a date"),
    (["--conversation-sid", "CH123"], "is not a conversation SID"),
    (["--phone", "reception"], "is not a phone number"),
    (["--missing", "--since", "2026-01-01"], "--since do not apply"),
    (["--phone", "+14155550111", "--state", "active"], "--state do not apply"),
    (["--since", "2026-02-01", "--until", "2026-01-01"], "is not after --since"),
    (["--media"], "MEDIA_DOWNLOAD is off"),
])
def test_wrong_options_are_refused_before_any_request(twilio, args, error):
    with pytest.raises(CommandError, match=error):
        call_command("sync_twilio_conversations", *args, stdout=io.StringIO())
    assert twilio.seen == []


def test_without_credentials_it_says_so(settings):
    settings.TWILIO_CONVLINK = {**settings.TWILIO_CONVLINK, "ACCOUNT_SID": ""}
    with pytest.raises(CommandError, match="Cannot read from Twilio: .*ACCOUNT_SID"):
        call_command("sync_twilio_conversations", stdout=io.StringIO())


def test_until_is_twilios_end_date(account, twilio):
    until = at(0).date() + datetime.timedelta(days=1)
    out, _ = sync("--since", at(0).date().isoformat(), "--until", until.isoformat())
    [first, *_] = listings(twilio)
    assert first.query["EndDate"] == f"{until.isoformat()}T00:00:00Z"
    created = {c.sid for c in twilio.conversations.values() if c.date_created.date() < until}
    assert set(ChatConversation.objects.values_list("conversation_sid", flat=True)) == created


def test_a_group_chat_alone_is_marked_and_not_linked_then_attached_to_its_customer(account, twilio, received):
    sync("--conversation-sid", account["group"].sid)
    group = ChatConversation.objects.get(conversation_sid=account["group"].sid)
    # Its binding names the customer, but it is no customer's conversation of its own.
    assert group.is_group_chat and group.booking is None and group.booking_lookup_at is not None
    assert [name for name, _, _ in received.calls if name == "conversation_linked"] == []
    out, _ = sync("--conversation-sid", account["maria"].sid)
    assert "1 linked to a booking" in out, out
    maria = ChatConversation.objects.get(conversation_sid=account["maria"].sid)
    group.refresh_from_db()
    assert maria.group_chat == group and group.booking == maria.booking is not None


def test_one_conversation_gone_at_twilio_fails_alone(account, twilio):
    # Listed for the phone, deleted before it is fetched.
    twilio.conversations.pop(account["group"].sid)
    twilio.conversations[account["maria"].sid].addresses.append("+14155550111")
    with pytest.raises(CommandError, match="1 conversation"):
        call_command("sync_twilio_conversations", "--conversation-sid", account["group"].sid,
                     stdout=io.StringIO(), stderr=(err := io.StringIO()))
    assert f"{account['group'].sid}: not brought in:" in err.getvalue()


def test_missing_counts_a_conversation_gone_at_twilio_and_a_reply_of_ours_is_no_gap(twilio):
    kept = twilio.add(Conversation(sid("CH"), at(0), addresses=[MARIA]))
    texts(kept, (MARIA, "one"), (MARIA, "two"))
    gone = twilio.add(Conversation(sid("CH"), at(1), addresses=[JONAS]))
    texts(gone, (JONAS, "hello"))
    sync()
    # Our answer, stored by send_message without an index, is Twilio's newest message.
    reply = Message(sid("IM"), 2, "ASSISTANT", "Sure", at(3))
    kept.messages.append(reply)
    ChatMessage.objects.create(message_sid=reply.sid, conversation=ChatConversation.objects.get(
        conversation_sid=kept.sid), author="ASSISTANT", body="Sure", direction="outbound")
    twilio.conversations.pop(gone.sid)
    twilio.seen.clear()
    out, _ = sync("--missing")
    assert "conversations: 0 new, 0 updated, 1 unchanged; messages: 0 new" in out, out
    assert "1 gone at Twilio; 0 failed" in out
    assert len(twilio.gets(f"/v1/Conversations/{kept.sid}")) == 1


def test_a_failed_page_and_twilios_problem_answers_are_api_errors():
    from twilio.base.exceptions import TwilioException
    from twilio.http.response import Response

    from django_twilio_convlink.history.reading import api_error

    page = api_error(TwilioException("Unable to fetch page", Response(
        429, '{"code": 20429, "message": "Too Many Requests", "status": 429}')))
    assert (page.status, page.code, page.transient) == (429, 20429, True)
    try:
        from twilio.base.exceptions import TwilioServiceException
    except ImportError:
        return
    problem = api_error(TwilioServiceException(type_uri="https://www.twilio.com/docs/errors/20404",
                                               title="Not Found", status=404, code=20404))
    assert (problem.status, problem.transient) == (404, False)


def test_progress_and_quiet(account, twilio):
    out, _ = sync("--conversation-sid", account["maria"].sid)
    # Without a terminal: a progress line at most every 10 seconds (the first at once).
    assert "1 conversations, 100 messages" in out and "pages read, at " + account["maria"].sid in out, out
    out, _ = sync("--conversation-sid", account["jonas"].sid, "-v", "0")
    assert out == ""
    out, _ = sync("--conversation-sid", account["ana"].sid, "-v", "2")
    assert f"{account['ana'].sid}: new, 2 new message(s), 0 already there" in out, out
