"""Malformed deliveries get a 400 and a reason, database failures a 500,
and neither leaves anything half-written."""

import json

import pytest
from django.db import DatabaseError, OperationalError, connection

from django_twilio_convlink.models import WebhookDelivery
from tests.helpers import payload
from tests.testapp.models import ChatConversation, ChatMessage

pytestmark = pytest.mark.django_db

GOOD = "onMessageAdded_sms_from_customer"


def nothing_written() -> bool:
    return not ChatConversation.objects.exists() and not ChatMessage.objects.exists()


def without(name: str, field: str) -> dict[str, str]:
    data = payload(name)
    del data[field]
    return data


@pytest.mark.parametrize(("data", "reason"), [
    (without(GOOD, "ConversationSid"), "ConversationSid is missing"),
    (without(GOOD, "MessageSid"), "MessageSid is missing"),
    (without(GOOD, "EventType"), "EventType is missing"),
    (without("onConversationAdded_sms_autocreated", "ConversationSid"), "ConversationSid is missing"),
    (payload(GOOD, ConversationSid="CH123"), "is not a Twilio SID"),
    (payload(GOOD, ConversationSid="IM" + "1" * 32), "is not a Twilio SID"),
    (payload(GOOD, MessageSid="IMzz" + "1" * 30), "is not a Twilio SID"),
    (payload(GOOD, ConversationSid="CH" + "1" * 32 + "'; DROP TABLE x; --"), "is not a Twilio SID"),
    (payload(GOOD, ParticipantSid="nope"), "is not a Twilio SID"),
    (payload(GOOD, Index="seven"), "Index"),
    (payload(GOOD, Index="-1"), "Index"),
    (payload(GOOD, Index="1.5"), "Index"),
    (payload(GOOD, Index="٣"), "Index"),
    (payload(GOOD, Index="9" * 30), "Index"),
    (payload(GOOD, Attributes="{not json"), "Attributes is not valid JSON"),
    (payload(GOOD, Media="[{"), "Media is not valid JSON"),
    (payload(GOOD, Media='{"Sid": "ME1"}'), "Media must be a JSON list"),
    (payload(GOOD, Attributes='{"a": "\\u0000"}'), "NUL"),
    (payload(GOOD, Body="nul\x00byte"), "NUL"),
    (payload(GOOD, DateCreated="yesterday"), "DateCreated"),
    (payload(GOOD, DateCreated="2026-13-45T99:00:00Z"), "DateCreated"),
    (payload(GOOD, Body="x" * (32 * 1024 + 1)), "Body is 32769 characters long"),
    (payload(GOOD, Author="a" * 300), "Author"),
])
def test_malformed_delivery_is_refused_with_a_reason(twilio_client, data, reason):
    response = twilio_client.webhook(data)
    assert response.status_code == 400
    assert reason in response.content.decode()
    assert nothing_written()


def test_body_at_the_limit_is_accepted(twilio_client):
    assert twilio_client.webhook(payload(GOOD, Body="x" * 32 * 1024)).status_code == 200


def test_body_limit_is_a_setting(twilio_client, settings):
    settings.TWILIO_CONVLINK = {**settings.TWILIO_CONVLINK, "MAX_BODY_LENGTH": 10}
    assert twilio_client.webhook(payload(GOOD, Body="x" * 11)).status_code == 400


def test_request_larger_than_django_allows_is_400(twilio_client, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    response = twilio_client.webhook(payload(GOOD, Body="x" * 2000))
    assert response.status_code == 400
    assert nothing_written()


def fail_on(table_fragment: str):
    """A database that fails on the first statement touching ``table_fragment``:
    installed with Django's own execute_wrapper hook, below the code under test."""
    def wrapper(execute, sql, params, many, context):
        if table_fragment in sql and sql.lstrip().upper().startswith("INSERT"):
            raise DatabaseError("simulated: server closed the connection unexpectedly")
        return execute(sql, params, many, context)
    return wrapper


def test_database_failure_is_500_and_rolls_everything_back(twilio_client):
    with connection.execute_wrapper(fail_on("testapp_chatmessage")):
        response = twilio_client.webhook(payload(GOOD))
    assert response.status_code == 500
    # The conversation INSERT that succeeded before the failure was rolled back too.
    assert nothing_written()


def test_retry_after_database_failure_stores_the_message(twilio_client):
    data = payload(GOOD)
    with connection.execute_wrapper(fail_on("testapp_chatmessage")):
        assert twilio_client.webhook(data).status_code == 500
    assert twilio_client.webhook({**data, "RetryCount": "1"}).status_code == 200
    assert ChatMessage.objects.get().message_sid == data["MessageSid"]


class DriverDeadlock(Exception):
    """Stands in for the driver's exception: MySQLdb puts the error number first."""


@pytest.mark.django_db(transaction=True)
def test_deadlock_victim_is_retried_and_stored(twilio_client):
    failures = []

    def deadlock_once(execute, sql, params, many, context):
        if "testapp_chatmessage" in sql and sql.lstrip().upper().startswith("INSERT") and not failures:
            failures.append(sql)
            raise OperationalError("Deadlock found") from DriverDeadlock(1213, "Deadlock found")
        return execute(sql, params, many, context)

    with connection.execute_wrapper(deadlock_once):
        response = twilio_client.webhook(payload(GOOD))
    assert failures and response.status_code == 200
    customer = ChatConversation.objects.get(is_group_chat=False)
    assert customer.messages.count() == 1


@pytest.mark.django_db(transaction=True)
def test_persistent_deadlock_gives_500_and_nothing_written(twilio_client):
    def always(execute, sql, params, many, context):
        if "testapp_chatmessage" in sql and sql.lstrip().upper().startswith("INSERT"):
            raise OperationalError("Deadlock found") from DriverDeadlock(1213, "Deadlock found")
        return execute(sql, params, many, context)

    with connection.execute_wrapper(always):
        assert twilio_client.webhook(payload(GOOD)).status_code == 500
    assert nothing_written()


@pytest.mark.parametrize("date", [
    "0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00", "1066-10-14T09:00:00Z"])
def test_dates_outside_any_column_are_refused(twilio_client, date):
    response = twilio_client.webhook(payload(GOOD, DateCreated=date))
    assert response.status_code == 400 and "DateCreated" in response.content.decode()
    assert nothing_written()


@pytest.mark.parametrize(("field", "stored"), [("Attributes", {}), ("Media", [])])
def test_json_null_is_stored_as_empty(twilio_client, field, stored):
    assert twilio_client.webhook(payload(GOOD, **{field: "null"})).status_code == 200
    assert getattr(ChatMessage.objects.get(), field.lower()) == stored


def test_json_nested_beyond_reason_is_refused(twilio_client):
    response = twilio_client.webhook(payload(GOOD, Attributes="[" * 5_000 + "]" * 5_000))
    # Python 3.11 raises RecursionError while parsing; 3.12+ parses it and the depth
    # limit refuses it. Either way a 400.
    assert response.status_code == 400
    assert b"Attributes is not valid JSON" in response.content or b"nests deeper" in response.content
    assert nothing_written()


def test_sid_with_a_trailing_newline_is_refused(twilio_client):
    """A regex "$" matches before a final newline; a SID must match exactly
    (found by the fuzz test: the 35-character value broke a varchar(34) on PostgreSQL)."""
    data = payload(GOOD)
    response = twilio_client.webhook({**data, "MessageSid": data["MessageSid"] + "\n"})
    assert response.status_code == 400
    assert nothing_written()


@pytest.mark.parametrize("value", ["NaN", '{"a": Infinity}', "[-Infinity]", '{"big": 1e400}'])
def test_json_that_only_python_accepts_is_refused(twilio_client, value):
    """Python's json reads NaN and Infinity; JSON and the databases do not (found by
    the fuzz test on SQLite)."""
    response = twilio_client.webhook(payload(GOOD, Attributes=value))
    assert response.status_code == 400
    assert nothing_written()


def test_json_deeper_than_any_database_takes_is_refused(twilio_client):
    response = twilio_client.webhook(payload(GOOD, Attributes="[" * 21 + "]" * 21))
    assert response.status_code == 400 and b"nests deeper than 20" in response.content
    assert twilio_client.webhook(payload(GOOD, Attributes="[" * 20 + "]" * 20)).status_code == 200


@pytest.mark.parametrize("value", ['"\\ud800"', '{"a": "\\udfff"}'])
def test_json_with_unpaired_surrogates_is_refused(twilio_client, value):
    response = twilio_client.webhook(payload(GOOD, Attributes=value))
    assert response.status_code == 400 and b"unpaired surrogate" in response.content
    assert nothing_written()


MEDIA_SID = "ME" + "6" * 32


@pytest.mark.parametrize(("media", "reason"), [
    pytest.param([{"ContentType": "image/jpeg"}], "Media[0].Sid is missing", id="no-sid"),
    pytest.param([MEDIA_SID], "Media[0] is not a JSON object", id="bare-sid"),
    pytest.param([{"Sid": MEDIA_SID}, None], "Media[1] is not a JSON object", id="null-item"),
    pytest.param([[{"Sid": MEDIA_SID}]], "Media[0] is not a JSON object", id="nested-list"),
    pytest.param([7], "Media[0] is not a JSON object", id="number"),
    pytest.param([{"Sid": "ME1"}], "is not a Twilio media SID", id="short-sid"),
    pytest.param([{"Sid": "IM" + "6" * 32}], "is not a Twilio media SID", id="message-sid"),
    pytest.param([{"Sid": MEDIA_SID + "\n"}], "is not a Twilio media SID", id="trailing-newline"),
    pytest.param([{"Sid": 7}], "is not a Twilio media SID", id="numeric-sid"),
    pytest.param([{"Sid": MEDIA_SID, "ContentType": 5}], "Media[0].ContentType is not a string", id="type"),
    pytest.param([{"Sid": MEDIA_SID, "Filename": ["a.jpg"]}], "Media[0].Filename", id="filename"),
    pytest.param([{"Sid": MEDIA_SID, "Size": -1}], "Media[0].Size", id="negative-size"),
    pytest.param([{"Sid": MEDIA_SID, "Size": 1.5}], "Media[0].Size", id="fractional-size"),
    pytest.param([{"Sid": MEDIA_SID, "Size": "482113"}], "Media[0].Size", id="text-size"),
    pytest.param([{"Sid": MEDIA_SID, "Size": True}], "Media[0].Size", id="boolean-size"),
    pytest.param([{"Sid": MEDIA_SID}] * 51, "the limit is 50", id="too-many"),
])
def test_malformed_media_is_refused_and_logged_as_rejected(twilio_client, media, reason):
    """Each of these was stored before, and the conversation's admin page then
    answered 500: what the admin and the group chat read must be there."""
    response = twilio_client.webhook(payload(GOOD, Media=json.dumps(media)))
    assert response.status_code == 400 and reason in response.content.decode()
    assert nothing_written()
    delivery = WebhookDelivery.objects.get()
    assert delivery.status == "rejected" and reason in delivery.error
