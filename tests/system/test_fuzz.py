"""Fuzzing the webhook: arbitrary fields and values, correctly signed.

"A hypothesis fuzz test posts arbitrary fields and values, correctly signed, and gets
only 2xx or 4xx, never 5xx, never a half-written row."

Two tests, each example on a clean database (``hypothesis.extra.django.TestCase``
rolls every example back):

* ``test_one_odd_field``: one event of tests/payloads.json with one field the app
  reads set to an odd value; dense where parsing and storing can go wrong;
* ``test_sequence_of_mutated_deliveries``: one to three deliveries in a row, each an
  event mutated several times: fields dropped, values replaced (unicode, control
  characters, NUL, strings up to 40,000 characters, wrong-shaped SIDs, odd Index
  values, arbitrary JSON and non-JSON in Attributes and Media, odd dates, arbitrary
  EventType), extra fields with arbitrary names, and repeated keys.

Every request is signed with the SDK over exactly the multi-valued parameters the
server parses. After each delivery:

* the answer is 2xx or 4xx (413 only for a body over MAX_REQUEST_BYTES, and never 403:
  the request is signed);
* a 4xx leaves the conversation and message tables exactly as they were, and adds at
  most one row to the delivery log;
* a 200 leaves the tables consistent (unique SIDs, every message in an existing
  conversation, a valid direction, every row readable), and a message or conversation
  row the delivery created holds the delivery's values, none truncated or mangled.

The after-commit work a delivery schedules (group chat forward, booking relink) runs
too, as it would after the real commit.
"""

from __future__ import annotations

import datetime
import json
import os
import traceback
from collections import Counter
from decimal import Decimal
from functools import partial
from typing import Any
from urllib.parse import urlencode

from django.conf import settings as django_settings
from django.db import DatabaseError
from django.http import QueryDict
from django.test import Client
from hypothesis import HealthCheck, example, given, note, settings
from hypothesis import strategies as st
from hypothesis.extra.django import TestCase
from hypothesis.provisional import domains
from twilio.request_validator import RequestValidator

from django_twilio_convlink import api, get_conversation_model, get_message_model
from django_twilio_convlink.conf import convlink_settings
from django_twilio_convlink.events import ConversationEvent, InvalidPayload, MessageEvent, parse_event
from django_twilio_convlink.models import WebhookDelivery
from django_twilio_convlink.persistence import conversation_fields
from django_twilio_convlink.signature import forged_today
from tests.helpers import PAYLOADS, WEBHOOK_PATH

# Tuned so the file runs in well under 60 s on 2 cores on SQLite, PostgreSQL and
# MariaDB. Hypothesis prints the seed (and a @reproduce_failure blob) on a failure; the
# example database is off so that the test leaves no .hypothesis directory behind.
# CONVLINK_FUZZ_SCALE multiplies the example counts: 1 in CI's database runs, less
# where the same suite runs again (tox), more for a long local hunt.
SCALE = float(os.environ.get("CONVLINK_FUZZ_SCALE", "1"))
ONE_FIELD_EXAMPLES = max(10, int(120 * SCALE))
SEQUENCE_EXAMPLES = max(5, int(40 * SCALE))
HOST_EXAMPLES = max(10, int(150 * SCALE))
FUZZ_SETTINGS = partial(
    settings, deadline=None, database=None, print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
)

EVENTS = {name: data for name, data in PAYLOADS.items() if not name.startswith("_")}
FIELDS = sorted({field for data in EVENTS.values() for field in data}
                | {"DateRemoved", "Media", "StateTo", "State", "FriendlyName", "UniqueName"})
SIGNED_URL = f"http://testserver{WEBHOOK_PATH}"

# -- text ----------------------------------------------------------------------------

CONTROL = st.text(alphabet=st.characters(codec=None, categories=["Cc", "Cf", "Zl", "Zp", "Zs"]),
                  max_size=20)
# Lengths around every limit the app knows: SIDs (34), Source/State (20), Author (255),
# names (256), binding address (1000), Body (32 KiB); and 40,000.
LENGTHS = [19, 20, 21, 33, 34, 35, 254, 255, 256, 257, 999, 1000, 1001,
           32 * 1024 - 1, 32 * 1024, 32 * 1024 + 1, 40_000]
LONG = st.builds(lambda unit, n: (unit * n)[:n], st.text(min_size=1, max_size=6),
                 st.sampled_from(LENGTHS) | st.integers(0, 40_000))
ANY_TEXT = st.one_of(
    st.text(),
    st.text(max_size=5),
    CONTROL,
    LONG,
    st.builds(lambda a, b: f"{a}\x00{b}", st.text(max_size=5), st.text(max_size=5)),
    st.sampled_from(["", " ", "\x00", "\n", "\r\n", "\ufeff", "\u202e", "\U0001f600", "null", "undefined"]),
)

# -- SIDs ----------------------------------------------------------------------------

KNOWN_SIDS = sorted({value for data in EVENTS.values() for field, value in data.items()
                     if field.endswith("Sid")})
HEX32 = st.text(alphabet="0123456789abcdef", min_size=32, max_size=32)
HEX32_ANY_CASE = st.text(alphabet="0123456789abcdefABCDEF", min_size=32, max_size=32)


def sids(prefix: str) -> st.SearchStrategy[str]:
    """Well-formed SIDs (known ones, so deliveries collide, and new ones) and SIDs of
    every wrong shape."""
    known = [s for s in KNOWN_SIDS if s.startswith(prefix)]
    good = st.one_of(
        *([st.sampled_from(known)] if known else []),
        HEX32.map(lambda h: prefix + h),
        HEX32_ANY_CASE.map(lambda h: prefix + h),
    )
    bad = st.one_of(
        good.map(lambda s: s + "\n"),
        good.map(lambda s: s + "\r\n"),
        good.map(lambda s: " " + s),
        good.map(lambda s: s + " "),
        good.map(str.lower),
        good.map(str.upper),
        good.map(lambda s: s + "0"),
        good.map(lambda s: s[:-1]),
        good.map(lambda s: s[:2] + s[2:].translate(FULLWIDTH)),
        st.text(alphabet="0123456789abcdef", max_size=40).map(lambda h: prefix + h),
        st.sampled_from(["CH", "IM", "MB", "IS", "MG", "AC", "XX", ""]).flatmap(
            lambda p: HEX32.map(lambda h: p + h)),
        good.map(lambda s: s + "'; DROP TABLE x; --"),
        st.text(max_size=40),
    )
    return st.one_of(good, bad)


FULLWIDTH = str.maketrans("0123456789abcdef", "０１２３４５６７８９ａｂｃｄｅｆ")

# -- numbers, dates, JSON --------------------------------------------------------------

INDEX = st.one_of(
    st.integers(0, 10**10).map(str),
    st.integers(-(10**40), 10**40).map(str),
    st.sampled_from(["", "0", "-0", "+1", " 1", "1 ", "1\n", "1.0", "1e3", "0x1f", "١٢", "１２", "²",
                     "999999999", "1000000000", "2147483647", "2147483648", "4294967296",
                     "0" * 20, "9" * 9]),
    st.text(alphabet=st.characters(codec=None, categories=["Nd", "No", "Nl"]), min_size=1, max_size=12),
    ANY_TEXT,
)

OFFSETS = st.integers(-1439, 1439).map(lambda m: datetime.timezone(datetime.timedelta(minutes=m)))
ARABIC_DIGITS = str.maketrans("0123456789", "٠١٢٣٤٥٦٧٨٩")
DATES = st.one_of(
    st.builds(lambda d, tz: d.replace(tzinfo=tz).isoformat(), st.datetimes(), OFFSETS),
    st.datetimes().map(lambda d: d.isoformat()),
    st.datetimes().map(lambda d: d.isoformat(sep=" ", timespec="milliseconds") + "Z"),
    st.datetimes().map(lambda d: d.isoformat() + "Z").map(lambda s: s.translate(ARABIC_DIGITS)),
    st.sampled_from([
        "2026-11-20T13:42:17.312Z", "0001-01-01T00:00:00Z", "0001-01-01T00:00:00+01:00",
        "9999-12-31T23:59:59Z", "9999-12-31T23:59:59-01:00", "9999-12-31T23:59:59.999999-23:59",
        "0999-12-31T23:59:59Z", "1000-01-01T00:00:00Z", "1970-01-01T00:00:00Z", "2038-01-19T03:14:08Z",
        "2026-02-30T00:00:00Z", "2026-11-20T24:00:00Z", "2026-11-20T13:42:60Z", "2026-11-20",
        "20261120T134217Z", "2026-11-20T13:42:17+99:99", "2026-11-20T13:42:17+24:00",
        "2026-11-20T13:42:17.1234567Z", "2026-11-20T13:42:17 Z", "2026-W47-5T10:00:00",
        "Fri, 20 Nov 2026 13:42:17 GMT", "1763646137", "-1", "0000-00-00 00:00:00",
    ]),
    ANY_TEXT,
)

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children,
                                                                        max_size=4),
    max_leaves=12,
)
JSON_TEXT = st.one_of(
    JSON_VALUES.map(json.dumps),  # floats() include NaN and infinities: "NaN", "Infinity"
    JSON_VALUES.map(lambda v: json.dumps(v, ensure_ascii=False)),
    st.lists(st.dictionaries(st.sampled_from(["Sid", "ContentType", "Filename", "Size", "Category"]),
                             JSON_VALUES, max_size=5), max_size=3).map(json.dumps),
    st.sampled_from([
        "{}", "[]", "null", "true", "0", '""', "NaN", "[Infinity]", '{"a": -Infinity}', "1e400",
        '"\\ud800"', '{"a": "\\udfff"}', '["\\ud83d\\ude00"]', '"\\u0000"', '{"\\u0000": 1}',
        "1" * 5000, "\ufeff{}", "{}x", "  []  ", "[1,]", "{'a': 1}", '{"a": 1, "a": 2}',
        '[{"Sid": "ME66666666666666666666666666666666"}]', '[{"Sid": null}]', "[1, 2, 3]",
    ]),
    st.integers(1, 20_000).map(lambda n: "[" * n + "]" * n),
    st.integers(1, 20_000).map(lambda n: '{"a":' * n + "1" + "}" * n),
    st.integers(1, 20_000).map(lambda n: "[" * n),
    ANY_TEXT,
)

# -- the other fields ------------------------------------------------------------------

KNOWN_EVENT_TYPES = [
    "onMessageAdded", "onMessageUpdated", "onMessageRemoved", "onConversationAdded",
    "onConversationUpdated", "onConversationStateUpdated", "onConversationRemoved",
    "onParticipantAdded", "onParticipantUpdated", "onParticipantRemoved", "onDeliveryUpdated",
    "onUserAdded", "onMessageAdd", "onConversationAdd",
]
EVENT_TYPE = st.one_of(
    st.sampled_from(KNOWN_EVENT_TYPES),
    st.builds(lambda name, f: f(name), st.sampled_from(KNOWN_EVENT_TYPES), st.sampled_from(
        [str.lower, str.upper, lambda s: s + " ", lambda s: " " + s, lambda s: s + "\n",
         lambda s: s + "\x00", lambda s: s * 10])),
    ANY_TEXT,
)
PHONES = ["+14155550142", "+1 415 555 0142", "(415) 555-0142", "whatsapp:+14155550142", "sms:+14155550143",
          "+13153524379", "(561) 220-5252", "+1 555 000 9999", "+442079460958", "+٤١٥٥٥٥٠١٤٢",
          "+１４１５５５５０１４２", "123", "+" + "1" * 30, "+1" + "5" * 250]
AUTHOR = st.one_of(st.sampled_from([*PHONES, "ASSISTANT", "system", "night-desk", " ASSISTANT ",
                                    "CALL-ME-NOW", ""]), ANY_TEXT)
ADDRESSES = st.one_of(st.lists(st.sampled_from(PHONES) | ANY_TEXT, max_size=4).map(",".join), ANY_TEXT)
WORDS = st.sampled_from(["active", "inactive", "closed", "initializing", "SMS", "WHATSAPP", "API", "SDK",
                         "CHAT", "EMAIL", "convlink-group-CH11111111111111111111111111111111"])

FIELD_VALUES: dict[str, st.SearchStrategy[str]] = {
    "EventType": EVENT_TYPE,
    "AccountSid": sids("AC"),
    "ConversationSid": sids("CH"),
    "MessageSid": sids("IM"),
    "ParticipantSid": sids("MB"),
    "ChatServiceSid": sids("IS"),
    "MessagingServiceSid": sids("MG"),
    "Index": INDEX,
    "RetryCount": INDEX,
    "ErrorCode": INDEX,
    "DateCreated": DATES,
    "DateUpdated": DATES,
    "DateRemoved": DATES,
    "StateUpdated": DATES,
    "Attributes": JSON_TEXT,
    "Media": JSON_TEXT,
    "Author": AUTHOR,
    "MessagingBinding.Address": ADDRESSES,
    "MessagingBinding.AuthorAddress": ADDRESSES,
    "State": WORDS,
    "StateTo": WORDS,
    "StateFrom": WORDS,
    "Source": WORDS,
    "UniqueName": WORDS,
}


# The fields the app reads (parse_event, record_delivery, the signature check), drawn
# more often than the ones it ignores.
READ_FIELDS = sorted({*FIELD_VALUES, "Body", "FriendlyName"})


def values_for(field: str) -> st.SearchStrategy[str]:
    return st.one_of(FIELD_VALUES[field], ANY_TEXT) if field in FIELD_VALUES else ANY_TEXT


EXTRA_NAMES = st.one_of(
    st.text(max_size=30),
    st.sampled_from([
        "Media[0]", "Media[0][Sid]", "Attributes[]", "Attributes.key", "MessagingBinding.Address.",
        "MessagingBinding[Address]", "a.b[c]", "[]", ".", "", " ", "EventType ", "eventtype", "EVENTTYPE",
        "ÉventType", "Event\u200bType", "Body[]", "ConversationSid[0]", "x" * 300, "\x00", "名前",
        "__proto__", "constructor",
    ]),
    st.sampled_from(FIELDS),
)


def mutate(draw: st.DrawFn, pairs: list[tuple[str, str]], op: str) -> list[tuple[str, str]]:
    keys = sorted({key for key, _ in pairs})
    if op == "drop" and keys:
        key = draw(st.sampled_from(keys))
        return [(k, v) for k, v in pairs if k != key]
    if op == "set":
        key = draw(st.sampled_from(READ_FIELDS) | st.sampled_from(FIELDS))
        value = draw(values_for(key))
        at = next((i for i, (k, _) in enumerate(pairs) if k == key), len(pairs))
        pairs = [(k, v) for k, v in pairs if k != key]
        pairs.insert(min(at, len(pairs)), (key, value))
        return pairs
    if op == "add":
        key = draw(EXTRA_NAMES)
        return [*pairs, (key, draw(values_for(key)))]
    if op == "repeat":
        # The same field twice (or more) with another value, before or after it:
        # QueryDict.get() answers the last one.
        key = draw(st.sampled_from(keys) if keys else st.sampled_from(FIELDS))
        pairs = list(pairs)
        pairs.insert(draw(st.integers(0, len(pairs))), (key, draw(values_for(key))))
    return pairs


@st.composite
def deliveries(draw: st.DrawFn, max_mutations: int = 6) -> tuple[str, list[tuple[str, str]]]:
    """(payload name, form fields as (name, value) pairs, repeated names allowed)."""
    name = draw(st.sampled_from(sorted(EVENTS)))
    pairs = list(EVENTS[name].items())
    for _ in range(draw(st.integers(0, max_mutations))):
        pairs = mutate(draw, pairs, draw(st.sampled_from(["drop", "set", "set", "add", "repeat"])))
    return name, pairs


@st.composite
def one_field_changed(draw: st.DrawFn) -> tuple[str, list[tuple[str, str]]]:
    """An event with one field the app reads set to an odd value: dense where it counts."""
    name = draw(st.sampled_from(sorted(EVENTS)))
    return name, mutate(draw, list(EVENTS[name].items()), "set")



def changed(name: str, **fields: str) -> tuple[str, list[tuple[str, str]]]:
    """An event of payloads.json with ``fields`` set: for @example."""
    return name, list({**EVENTS[name], **fields}.items())


MESSAGE, CONVERSATION = "onMessageAdded_sms_from_customer", "onConversationAdded_sms_autocreated"
# Deliveries this test found answered with a 500 or stored wrongly on one of the
# databases, tried first on every run. Found on: S SQLite, P PostgreSQL, M MariaDB.
FOUND = [
    changed(MESSAGE, DateCreated="0001-01-01T00:00:00+01:00"),  # S M: OverflowError; P: unreadable row
    changed(MESSAGE, DateCreated="9999-12-31T23:59:59-01:00"),  # S M: OverflowError; P: unreadable row
    changed(CONVERSATION, DateCreated="0001-01-01T00:00:00+01:00"),  # P: DataError
    changed(MESSAGE, DateCreated="2026-11-20T13:42:17-19:50"),  # P: time zone displacement out of range
    changed(MESSAGE, Attributes="null"),  # S P M: NOT NULL
    changed(MESSAGE, Attributes="NaN"),  # S P M: not JSON to the database
    changed(MESSAGE, Media="[Infinity]"),
    changed(CONVERSATION, Attributes="1e400"),
    changed(MESSAGE, Attributes='"\\ud800"'),  # P M: unpaired surrogate
    changed(CONVERSATION, Attributes='{"a": "\\udfff"}'),
    changed(MESSAGE, Attributes="[" * 32 + "]" * 32),  # M: JSON_VALID refuses 32 levels
    changed(CONVERSATION, Attributes="[" * 32 + "]" * 32),
    changed(MESSAGE, Attributes="[" * 5000 + "]" * 5000),  # S P M: RecursionError
    changed(MESSAGE, Media="[" * 920 + "]" * 920),  # S: RecursionError in the ORM's json.dumps
    changed(MESSAGE, ConversationSid="CH" + "1" * 32 + "\n"),  # P: too long; M: DoesNotExist
    changed(MESSAGE, MessageSid="IM" + "2" * 32 + "\n"),  # P: too long; M: stored truncated
    changed(MESSAGE, ParticipantSid="MB" + "4" * 32 + "\n"),
    changed(CONVERSATION, ChatServiceSid="IS" + "8" * 32 + "\n"),
]


def found_examples(test):
    for delivery in reversed(FOUND):
        test = example(delivery)(test)
    return test

# -- checks ----------------------------------------------------------------------------

def snapshot() -> tuple[list[dict], list[dict]]:
    Conversation, Message = get_conversation_model(), get_message_model()
    try:
        return (list(Conversation._default_manager.order_by("pk").values()),
                list(Message._default_manager.order_by("pk").values()))
    except DatabaseError as exc:
        raise AssertionError(f"a stored row cannot be read back: {type(exc).__name__}: {exc}") from exc


def assert_consistent() -> None:
    Conversation, Message = get_conversation_model(), get_message_model()
    conversation_sids = Counter(Conversation._default_manager.values_list("conversation_sid", flat=True))
    message_sids = Counter(Message._default_manager.values_list("message_sid", flat=True))
    assert [s for s, n in conversation_sids.items() if n > 1] == []
    assert [s for s, n in message_sids.items() if n > 1] == []
    conversation_pks = set(Conversation._default_manager.values_list("pk", flat=True))
    for message_sid, conversation_id, direction in Message._default_manager.values_list(
            "message_sid", "conversation_id", "direction"):
        assert conversation_id in conversation_pks, f"message {message_sid!r} has no conversation"
        assert direction in {"inbound", "outbound"}, f"message {message_sid!r}: direction {direction!r}"
    snapshot()  # every row reads back


def _json_numbers(value: Any) -> Any:
    # PostgreSQL's jsonb keeps numbers as numeric: 1e300 comes back as the int 10**300,
    # which Python does not call equal to the float. Compare numbers by decimal value.
    if isinstance(value, dict):
        return {k: _json_numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_numbers(v) for v in value]
    if isinstance(value, float):
        return Decimal(repr(value))
    if isinstance(value, int) and not isinstance(value, bool):
        return Decimal(value)
    return value


def _comparable(values: dict[str, Any]) -> dict[str, Any]:
    return {k: _json_numbers(v) if k in ("attributes", "media") else v for k, v in values.items()}


def assert_stored_as_sent(event: MessageEvent | ConversationEvent) -> None:
    """The row this event just created holds exactly what the delivery said:
    nothing truncated, converted or dropped on the way into the database."""
    if isinstance(event, MessageEvent):
        message = (get_message_model()._default_manager.select_related("conversation")
                   .filter(message_sid=event.message_sid).first())
        assert message is not None, f"200, but no message row has the SID {event.message_sid!r}"
        stored = {name: getattr(message, name) for name in (
            "message_sid", "author", "body", "index", "date_created", "date_updated", "date_removed",
            "source", "participant_sid", "attributes", "media")}
        stored["conversation_sid"] = message.conversation.conversation_sid
        sent = {name: getattr(event, name) for name in stored}
        if event.event_type == "onMessageRemoved":
            # A removal that creates the row records when: DateRemoved, else DateUpdated,
            # else the moment it arrived (not predictable here: only that it is set).
            sent["date_removed"] = event.date_removed or event.date_updated or message.date_removed
            assert message.date_removed is not None, "a removal stored a message not removed"
    else:
        conversation = (get_conversation_model()._default_manager
                        .filter(conversation_sid=event.conversation_sid).first())
        assert conversation is not None, f"200, but no conversation has the SID {event.conversation_sid!r}"
        sent = {name: value for name, value in conversation_fields(event).items() if value not in (None, "")}
        stored = {name: getattr(conversation, name) for name in sent}
        sent["conversation_sid"], stored["conversation_sid"] = (event.conversation_sid,
                                                                conversation.conversation_sid)
    try:
        stored, sent = _comparable(stored), _comparable(sent)
    except RecursionError:
        raise AssertionError("200 for JSON nested too deeply to compare (the app should refuse it)") from None
    assert stored == sent


def describe_failure(response, delivered_before: int) -> str:
    if getattr(response, "exc_info", None):
        return "".join(traceback.format_exception(*response.exc_info))
    failed = WebhookDelivery.objects.order_by("pk")[delivered_before:]
    return "\n".join(f"{d.error}\n{d.traceback}" for d in failed) or response.content.decode(errors="replace")


class WebhookFuzzTest(TestCase):
    """Each example runs in its own transaction, rolled back after it."""

    def post_signed(self, client: Client, pairs: list[tuple[str, str]]):
        body = urlencode(pairs)
        # Sign what the server will parse (request.POST is QueryDict(body)); the SDK's
        # RequestValidator reads every value of a repeated key through getlist().
        params = QueryDict(body)
        assert [(k, v) for k, vs in params.lists() for v in vs] == [
            (k, v) for k, vs in _grouped(pairs) for v in vs], "the form encoding lost a field"
        signature = RequestValidator(django_settings.AUTH_TOKEN).compute_signature(SIGNED_URL, params)
        with self.captureOnCommitCallbacks(execute=True):
            response = client.post(WEBHOOK_PATH, data=body, content_type="application/x-www-form-urlencoded",
                                   headers={"X-Twilio-Signature": signature})
        return response, body, params

    def check_delivery(self, client: Client, name: str, pairs: list[tuple[str, str]]) -> None:
        """Post one delivery and check the answer and the tables (AssertionError if not)."""
        Message = get_message_model()
        before = snapshot()
        delivered_before = WebhookDelivery.objects.count()
        try:
            event = parse_event(QueryDict(urlencode(pairs)))
        except InvalidPayload:
            event = None
        except Exception as exc:  # the view would answer 500; the assertions below say so
            event = exc
        existed = False
        if isinstance(event, MessageEvent):
            existed = Message._default_manager.filter(message_sid=event.message_sid).exists()
        elif isinstance(event, ConversationEvent):
            existed = get_conversation_model()._default_manager.filter(
                conversation_sid=event.conversation_sid).exists()

        response, body, params = self.post_signed(client, pairs)
        status = response.status_code
        note(f"from {name}: {len(body)} bytes -> {status} {response.content[:300]!r}")

        assert status < 500, f"{status} for {pairs!r}:\n{describe_failure(response, delivered_before)}"
        assert status != 403, "the fuzz test signed a request the view refused"
        if status == 413:
            assert len(body.encode()) > convlink_settings.MAX_REQUEST_BYTES
        assert 200 <= status < 300 or 400 <= status < 500, status
        assert WebhookDelivery.objects.count() - delivered_before <= 1

        if status >= 400:
            assert snapshot() == before, f"a {status} changed the conversation or message rows"
            return
        assert status == 200
        assert event is not None and not isinstance(event, Exception), (
            f"200 for a delivery parse_event refuses: {event!r}")
        assert_consistent()
        if isinstance(event, MessageEvent | ConversationEvent) and not existed:
            assert_stored_as_sent(event)

    @FUZZ_SETTINGS(max_examples=ONE_FIELD_EXAMPLES)
    @found_examples
    @given(one_field_changed())
    def test_one_odd_field(self, delivery):
        api.LocmemBackend.reset()
        self.check_delivery(Client(raise_request_exception=False), *delivery)

    @FUZZ_SETTINGS(max_examples=SEQUENCE_EXAMPLES)
    @given(st.lists(deliveries(), min_size=1, max_size=3))
    def test_sequence_of_mutated_deliveries(self, sequence):
        api.LocmemBackend.reset()
        client = Client(raise_request_exception=False)
        for name, pairs in sequence:
            self.check_delivery(client, name, pairs)


def _grouped(pairs: list[tuple[str, str]]) -> list[tuple[str, list[str]]]:
    grouped: dict[str, list[str]] = {}
    for key, value in pairs:
        grouped.setdefault(key, []).append(value)
    return list(grouped.items())


# -- hosts -----------------------------------------------------------------------------
# "Host: 127.0.0.1:99999" answered 500 on a live server: Django accepted the Host, the
# SDK's URL parsing raised inside RequestValidator.validate. Any Host, X-Forwarded-Host
# or X-Forwarded-Port must end as a 200 (signed for a URL Django and the SDK accept) or
# a counted 4xx, never a 5xx, never an ERROR log.

NAMES = st.one_of(
    st.sampled_from(["testserver", "public.example.com", "127.0.0.1", "localhost", "[::1]", "[2001:db8::7]",
                     "xn--bcher-kva.example", "TestServer", "example.com."]),
    domains(),
)
VALID_HOSTS = st.one_of(NAMES, st.builds("{}:{}".format, NAMES, st.integers(1, 65535)))
PORTS = st.one_of(st.integers(0, 10**30).map(str), INDEX)
ODD_HOSTS = st.one_of(
    ANY_TEXT,
    # What a WSGI server hands over for UTF-8 bytes in a header: their latin-1 reading.
    ANY_TEXT.map(lambda text: text.encode("utf-8", "surrogatepass").decode("latin-1")),
    st.builds("{}:{}".format, NAMES, PORTS),
    st.builds("{}{}".format, VALID_HOSTS, CONTROL | st.sampled_from(
        [".", ":", "..", ":80:80", "/x", "@evil.test", ", evil.test", "#", "?", "%00", "\\", "]"])),
    st.builds("[{}]".format, st.text(alphabet="0123456789abcdefABCDEF:.%", max_size=45)),
    st.sampled_from([
        "", ":", ":80", "[", "]", "[]", "[::1", "::1", "[a:b]", "[::1]:99999", "[:1.2.3.4]", "0",
        "127.0.0.1:99999", "127.0.0.1:65536", "127.0.0.1:-1", "127.0.0.1:٨٠", "testserver:８０", "host:",
        "ｔｅｓｔｓｅｒｖｅｒ", "host::80", "a" * 300, "a." * 200, "user@testserver", "http://testserver",
        "testserver/path",
    ]),
    VALID_HOSTS,
)
# CommonMiddleware reads the Host before any view, and answers one Django refuses itself
# (400, logged by Django at ERROR on django.security.DisallowedHost): the view never
# sees it. Without it, every Host reaches the view, which is what is under test.
VIEW_READS_THE_HOST = [m for m in django_settings.MIDDLEWARE
                       if m != "django.middleware.common.CommonMiddleware"]


def host_django_reads(host: str | None, forwarded_host: str | None, forwarded_port: str | None, *,
                      use_forwarded_host: bool, use_forwarded_port: bool) -> str:
    """The host HttpRequest.get_host() starts from (before deciding whether it accepts
    it): the test signs for it, so that a 200 is possible wherever Django and the SDK
    accept the URL."""
    if use_forwarded_host and forwarded_host is not None:
        return forwarded_host
    if host is not None:
        return host
    port = forwarded_port if use_forwarded_port and forwarded_port is not None else "80"
    return "testserver" if port == "80" else f"testserver:{port}"


# -- content types and charsets ---------------------------------------------------------
# An unsigned multipart POST with "charset=rot13" or "hex" answered 500 before the
# signature was checked (Django decodes with any codec Python knows: LookupError), and
# "unicode_escape" handed the SDK a lone surrogate (UnicodeEncodeError). Any Content-Type,
# any charset, any body and any X-Twilio-Signature value: a counted 4xx, nothing written.

# Header-safe characters; no "*", so no RFC 2231 parameter (Django refuses an unknown
# charset in one while it builds the request, before any view runs).
TOKEN_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$%&'+-.^_`|~/;= \""
CONTENT_TYPES = st.one_of(
    st.sampled_from([
        "multipart/form-data", "multipart/form-data; boundary=b", "multipart/form-data; boundary=",
        "multipart/form-data; boundary=\x7f", "multipart/mixed; boundary=b",
        "application/x-www-form-urlencoded", "text/plain", "application/json", "application/octet-stream",
        "", "*/*",
    ]),
    st.text(alphabet=TOKEN_CHARS, max_size=30),
)
CHARSETS = st.one_of(
    st.sampled_from(["rot13", "hex", "unicode_escape", "raw_unicode_escape"]),  # the 500s
    st.sampled_from([
        "utf-16", "utf-32", "latin-1", "utf-8-sig", "base64", "zip", "idna", "punycode", "undefined",
        "no-such-codec", "", "utf-8", "UTF-8", "utf8", "us-ascii", '"utf-8"', '"rot13"',
    ]),
    st.none(),
    st.text(alphabet=TOKEN_CHARS, max_size=20),
)
# Escapes that a codec such as unicode_escape reads as a lone surrogate, a NUL, a name.
ESCAPES = st.sampled_from(["\\ud800", "\\udfff\\x00", "\\U0010ffff", "\\N{BOM}", "\\", "%ED%A0%80"])


def multipart_body(fields: dict[str, str]) -> str:
    return "".join(f'--b\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'
                   for name, value in fields.items()) + "--b--\r\n"


# A Body that is odd text, an escape, or a lone surrogate as the bytes UTF-8 would give
# it (surrogatepass): no UTF-8.
MULTIPART_BODIES = st.one_of(
    st.just(multipart_body(EVENTS[MESSAGE]).encode()),
    st.builds(lambda value: multipart_body({**EVENTS[MESSAGE], "Body": value}).encode(
        "utf-8", "surrogatepass"), ANY_TEXT | ESCAPES),
)
URLENCODED_BODIES = st.one_of(
    st.just(urlencode(EVENTS[MESSAGE]).encode()),
    st.builds(lambda value: urlencode({**EVENTS[MESSAGE], "Body": value}, errors="surrogatepass").encode(),
              ANY_TEXT | ESCAPES),
)
# (Content-Type, body): mostly a form the parser reads, so that the charset reaches it.
FORMS = st.one_of(
    st.tuples(st.sampled_from(["multipart/form-data; boundary=b", 'multipart/form-data; boundary="b"']),
              MULTIPART_BODIES),
    st.tuples(st.just("application/x-www-form-urlencoded"), URLENCODED_BODIES),
    st.tuples(CONTENT_TYPES, MULTIPART_BODIES | URLENCODED_BODIES | st.binary(max_size=300)),
)
SIGNATURES = st.one_of(
    st.just("c2lnbmVk"),
    # What a WSGI server hands over for a header's bytes: their latin-1 reading.
    ANY_TEXT.map(lambda text: text.encode("utf-8", "surrogatepass").decode("latin-1")),
)
# What Twilio sends, and the spellings of it Django reads as UTF-8.
SIGNED_CONTENT_TYPES = ["application/x-www-form-urlencoded",
                        "application/x-www-form-urlencoded; charset=UTF-8",
                        "application/x-www-form-urlencoded; charset=utf-8"]


def stored_rows() -> int:
    return (WebhookDelivery.objects.count() + get_conversation_model()._default_manager.count()
            + get_message_model()._default_manager.count())


class HostFuzzTest(TestCase):
    """Each example runs in its own transaction, rolled back after it."""

    def post(self, *, host: str | None, forwarded_host: str | None = None, forwarded_port: str | None = None,
             use_forwarded_host: bool = False, use_forwarded_port: bool = False, allowed_hosts=("*",),
             content_type: str = "application/x-www-form-urlencoded"):
        """POST a delivery signed for the URL built from the host Django reads; answer
        (response, forged requests it added)."""
        data = EVENTS[MESSAGE]
        signed_host = host_django_reads(host, forwarded_host, forwarded_port,
                                        use_forwarded_host=use_forwarded_host,
                                        use_forwarded_port=use_forwarded_port)
        signature = RequestValidator(django_settings.AUTH_TOKEN).compute_signature(
            f"http://{signed_host}{WEBHOOK_PATH}", data)
        headers = {"X-Twilio-Signature": signature}
        for name, value in (("Host", host), ("X-Forwarded-Host", forwarded_host),
                            ("X-Forwarded-Port", forwarded_port)):
            if value is not None:
                headers[name] = value
        before = forged_today()
        with self.settings(USE_X_FORWARDED_HOST=use_forwarded_host, USE_X_FORWARDED_PORT=use_forwarded_port,
                           ALLOWED_HOSTS=list(allowed_hosts), MIDDLEWARE=VIEW_READS_THE_HOST), \
                self.assertNoLogs(level="ERROR"):
            response = Client(raise_request_exception=False).post(
                WEBHOOK_PATH, data=urlencode(data), content_type=content_type, headers=headers)
        note(f"Host={host!r} X-Forwarded-Host={forwarded_host!r} X-Forwarded-Port={forwarded_port!r} "
             f"-> {response.status_code} {response.content[:300]!r}")
        return response, forged_today() - before

    def post_unsigned(self, *, host: str | None, content_type: str, body: bytes, signature: str):
        """POST ``body`` as it is, whatever charset ``content_type`` names, with an
        X-Twilio-Signature that matches nothing; answer (response, forged requests it
        added, rows it wrote)."""
        headers = {"X-Twilio-Signature": signature, **({"Host": host} if host is not None else {})}
        before, rows_before = forged_today(), stored_rows()
        with self.settings(ALLOWED_HOSTS=["*"], MIDDLEWARE=VIEW_READS_THE_HOST), \
                self.assertNoLogs(level="ERROR"):
            # generic(), not post(): post() encodes the body in the declared charset,
            # and "rot13" is no text encoding (LookupError in the test client).
            response = Client(raise_request_exception=False).generic(
                "POST", WEBHOOK_PATH, data=body, content_type=content_type, headers=headers)
        note(f"Host={host!r} Content-Type={content_type!r} body={body[:200]!r} "
             f"-> {response.status_code} {response.content[:300]!r}")
        return response, forged_today() - before, stored_rows() - rows_before

    @FUZZ_SETTINGS(max_examples=HOST_EXAMPLES)
    @example(host="127.0.0.1:99999", forwarded_host=None, forwarded_port=None, use_forwarded_host=False,
             use_forwarded_port=False, allowed_hosts=["*"])
    @example(host="testserver", forwarded_host="127.0.0.1:99999", forwarded_port=None,
             use_forwarded_host=True, use_forwarded_port=False, allowed_hosts=["*"])
    @example(host=None, forwarded_host=None, forwarded_port="99999", use_forwarded_host=False,
             use_forwarded_port=True, allowed_hosts=["*"])
    @example(host="[a:b]", forwarded_host=None, forwarded_port=None, use_forwarded_host=False,
             use_forwarded_port=False, allowed_hosts=["*"])
    @example(host="evil.test", forwarded_host=None, forwarded_port=None, use_forwarded_host=False,
             use_forwarded_port=False, allowed_hosts=["testserver"])
    @given(host=st.none() | ODD_HOSTS, forwarded_host=st.none() | ODD_HOSTS, forwarded_port=st.none() | PORTS,
           use_forwarded_host=st.booleans(), use_forwarded_port=st.booleans(),
           allowed_hosts=st.sampled_from([["*"], ["testserver", ".example.com"]]))
    def test_any_host_is_answered_without_a_5xx_or_an_error_log(self, **request):
        response, counted = self.post(**request)
        assert response.status_code in (200, 400, 403), (
            f"{response.status_code}:\n{describe_failure(response, 0)}")
        assert counted == (0 if response.status_code == 200 else 1), counted

    @FUZZ_SETTINGS(max_examples=max(10, HOST_EXAMPLES // 3))
    @given(host=VALID_HOSTS, forwarded=st.booleans(), content_type=st.sampled_from(SIGNED_CONTENT_TYPES))
    def test_signed_request_for_a_valid_host_is_accepted(self, host, forwarded, content_type):
        if forwarded:
            response, counted = self.post(host="proxy.internal:8080", forwarded_host=host,
                                          use_forwarded_host=True, content_type=content_type)
        else:
            response, counted = self.post(host=host, content_type=content_type)
        assert (response.status_code, counted) == (200, 0), response.content[:300]

    @FUZZ_SETTINGS(max_examples=HOST_EXAMPLES)
    @example(host=None, form=("multipart/form-data; boundary=b", multipart_body(EVENTS[MESSAGE]).encode()),
             charset="rot13", signature="c2lnbmVk")
    @example(host=None, form=("multipart/form-data; boundary=b",
                              multipart_body({**EVENTS[MESSAGE], "Body": "\\ud800"}).encode()),
             charset="unicode_escape", signature="c2lnbmVk")
    @given(host=st.none() | ODD_HOSTS, form=FORMS, charset=CHARSETS, signature=SIGNATURES)
    def test_unsigned_request_of_any_content_type_and_charset_is_a_counted_4xx(self, host, form, charset,
                                                                              signature):
        content_type, body = form
        if charset is not None:
            content_type = f"{content_type}; charset={charset}"
        response, counted, written = self.post_unsigned(host=host, content_type=content_type, body=body,
                                                        signature=signature)
        assert 400 <= response.status_code < 500, f"{response.status_code}:\n{describe_failure(response, 0)}"
        assert (counted, written) == (1, 0), (counted, written)


# --- Events about data they do not own -----------------------------------------------------

OWNERSHIP_EXAMPLES = max(10, int(60 * SCALE))
MAIN_ACCOUNT = EVENTS[MESSAGE]["AccountSid"]
SUBACCOUNT = "AC" + "5" * 32
SUBACCOUNT_TOKEN = "fuzz-subaccount-token"
# Two stored conversations (the main account's, the sub-account's), a message in each.
STORED = {"main": ("CH" + "a" * 32, "IM" + "a" * 32, MAIN_ACCOUNT),
          "sub": ("CH" + "b" * 32, "IM" + "b" * 32, SUBACCOUNT)}
ORIGINAL_BODY = "as the customer wrote it"


class OwnershipFuzzTest(TestCase):
    """Signed events of any message type, naming any stored or unknown conversation and
    message, for the main account (under its own or another main AccountSid) or the
    sub-account: a stored message never moves, never changes unless the event names
    its own conversation for its own account, and nothing lands in a conversation of
    another account. Each example runs in its own transaction, rolled back after it."""

    def setUp(self) -> None:
        Conversation, Message = get_conversation_model(), get_message_model()
        for conversation_sid, message_sid, account in STORED.values():
            conversation = Conversation._default_manager.create(conversation_sid=conversation_sid,
                                                                account_sid=account)
            Message._default_manager.create(message_sid=message_sid, conversation=conversation,
                                            author="+14155550142", body=ORIGINAL_BODY, direction="inbound")

    @FUZZ_SETTINGS(max_examples=OWNERSHIP_EXAMPLES)
    @given(st.lists(st.tuples(
        st.sampled_from(["onMessageAdded", "onMessageUpdated", "onMessageRemoved"]),
        st.sampled_from(["main", "sub", "unknown"]),  # the conversation the event names
        st.sampled_from(["main", "sub", "new"]),  # the message it names
        st.sampled_from([MAIN_ACCOUNT, "AC" + "c" * 32, SUBACCOUNT]),  # its AccountSid (signer)
    ), min_size=1, max_size=4))
    def test_events_change_only_what_their_account_and_conversation_own(self, events):
        with self.settings(TWILIO_CONVLINK={**django_settings.TWILIO_CONVLINK, "GROUP_CHAT": False,
                                            "SUBACCOUNT_AUTH_TOKENS": {SUBACCOUNT: SUBACCOUNT_TOKEN}}):
            before = self.messages()
            for event_type, named_conversation, named_message, account in events:
                conversation_sid = (STORED[named_conversation][0] if named_conversation != "unknown"
                                    else "CH" + "d" * 32)
                message_sid = STORED[named_message][1] if named_message != "new" else "IM" + "e" * 32
                data = {**EVENTS["onMessageUpdated"], "EventType": event_type, "AccountSid": account,
                        "ConversationSid": conversation_sid, "MessageSid": message_sid,
                        "Body": "rewritten", "DateUpdated": "2030-01-01T00:00:00Z"}
                token = SUBACCOUNT_TOKEN if account == SUBACCOUNT else django_settings.AUTH_TOKEN
                signature = RequestValidator(token).compute_signature(SIGNED_URL, data)
                response = Client().post(WEBHOOK_PATH, data=urlencode(data),
                                         content_type="application/x-www-form-urlencoded",
                                         headers={"X-Twilio-Signature": signature})
                note(f"{event_type} {named_conversation}/{named_message} as {account} -> "
                     f"{response.status_code} {response.content[:200]!r}")
                assert response.status_code in (200, 400, 403), response.status_code
                owner = SUBACCOUNT if account == SUBACCOUNT else MAIN_ACCOUNT
                after = self.messages()
                for sid, (conversation, account_sid, state) in after.items():
                    if sid not in before:  # created by this event: where it said, for its account
                        assert (conversation, owner_of(account_sid)) == (conversation_sid, owner), (
                            f"{sid} filed under {conversation} of {account_sid}")
                        continue
                    assert conversation == before[sid][0], f"{sid} moved"
                    if state != before[sid][2]:
                        assert (sid, conversation, owner) == (message_sid, conversation_sid,
                                                              owner_of(account_sid)), (
                            f"{sid} changed by {event_type} of {conversation_sid} as {account}")
                before = after

    def messages(self) -> dict[str, tuple[str, str, tuple]]:
        """message SID -> (conversation SID, its account, (body, removed))."""
        return {m.message_sid: (m.conversation.conversation_sid, m.conversation.account_sid,
                                (m.body, m.date_removed))
                for m in get_message_model()._default_manager.select_related("conversation")}


def owner_of(account_sid: str) -> str:
    return SUBACCOUNT if account_sid == SUBACCOUNT else MAIN_ACCOUNT
