"""Conversations and messages into the database: once each, whatever the retries.

Twilio redelivers, delivers concurrently and out of order. Three rules keep the rows
single and complete, in as few statements as a webhook can take:

* before any transaction, one unlocked SELECT (``find_conversation``) reads the
  conversation and whether the message SID is already stored: a redelivery ends
  there, without opening a transaction;
* a conversation row is created with an upsert (INSERT ... ON CONFLICT DO UPDATE; ON
  DUPLICATE KEY UPDATE on MariaDB) and read back ``FOR UPDATE``, so two first
  messages racing each other share one row;
* a message is INSERTed straight away when that SELECT did not find it; the unique
  message SID refuses a concurrent duplicate (IntegrityError) and
  ``handlers.handle_event`` runs the event again, which then finds the stored row.
  The updates of a stored message lock that message's row.
"""

from __future__ import annotations

import dataclasses
import datetime
import weakref
from collections.abc import Callable
from functools import lru_cache
from typing import Any

from django.db import connections, transaction
from django.db.models import BooleanField, QuerySet
from django.db.models.expressions import RawSQL
from django.utils import timezone

from .choices import Direction
from .events import ConversationEvent, MessageEvent
from .exceptions import RefusedEvent
from .inserts import insert
from .models import AbstractTwilioConversation, AbstractTwilioMessage, WaitingReceipt
from .phones import is_system_author
from .receipts import apply_waiting, may_get_receipts, settle_after_commit
from .signals import HISTORY as HISTORY  # re-exported for the insert steps
from .signals import message_received, message_removed, message_updated, send_after_commit
from .swappable import get_conversation_model, get_message_model

# What runs inside the transaction of a new message row, before its INSERT: each step
# gets the unsaved row, its conversation and the origin, may set fields of the row,
# and may return a callable to run right after the INSERT, in the same transaction.
# For work that must commit with the row or not at all, which a signal (sent after
# the commit) cannot give: a process killed between the commit and the signal would
# lose it. Steps are added with register_insert_step (the group chat's "pending
# forward" mark, from AppConfig.ready).
InsertStep = Callable[[AbstractTwilioMessage, AbstractTwilioConversation, str], Callable[[], None] | None]
_insert_steps: list[InsertStep] = []


def register_insert_step(step: InsertStep) -> None:
    """Run ``step`` for every new message row, inside its transaction, before its
    INSERT (see ``InsertStep``): the registration point of the write path's
    consumers, called from their ``AppConfig.ready()``. Registering the same step
    again changes nothing: ``ready()`` may run more than once (tests, some runners).
    A step must cost no statement when the message is not its concern: it runs on
    the hottest path there is.
    """
    if step not in _insert_steps:
        _insert_steps.append(step)


def unregister_insert_step(step: InsertStep) -> None:
    """Undo ``register_insert_step`` (a site's tests); unknown steps are ignored."""
    if step in _insert_steps:
        _insert_steps.remove(step)


def find_conversation(conversation_sid: str, message_sid: str
                      ) -> tuple[AbstractTwilioConversation | None, Any, bool]:
    """The stored conversation ``conversation_sid`` (or None), the primary key of the
    conversation that message ``message_sid`` is stored in (None when it is not
    stored), and whether delivery receipts wait for that message (``receipts``): one
    SELECT, no lock. Returns (conversation, stored_in, receipts_waiting).

    When the conversation is not stored the SELECT finds no row, and so says nothing
    about the message: a message's row refers to its conversation, so it can only be
    in another one, which the INSERT's unique SID then finds out.
    """
    Message = get_message_model()
    manager = get_conversation_model()._default_manager
    alias = manager.db
    compiled = _find_conversation_sql(manager.model, Message, alias)
    if compiled is None:
        # The site's default manager adds values of its own to the query (a filter, an
        # annotation): they may change from call to call, so the ORM compiles it each time.
        for conversation in _find_conversation_query(manager.model, Message, alias, conversation_sid,
                                                     message_sid):
            stored_in = _key_of(Message, getattr(conversation, "_convlink_stored_in"))  # noqa: B009
            return conversation, stored_in, bool(getattr(conversation, "_convlink_receipts_waiting"))  # noqa: B009
        return None, None, False
    # SQL compiled once per process, run on a cursor: the ORM would compile the same
    # annotated SELECT on every call, and a raw query set resolves its columns and
    # converters on every call, on the hottest path there is (bench/README.rst:
    # in-process time). The row becomes an instance as a QuerySet makes one: the
    # fields' converters (cached per connection), then the model's from_db.
    values = {_CONVERSATION_SID: conversation_sid, _MESSAGE_SID: message_sid}
    db = connections[alias]
    with db.cursor() as cursor:
        cursor.execute(compiled.sql, [values[name] for name in compiled.order])
        row = cursor.fetchone()
    if row is None:
        return None, None, False
    row = list(row)
    for index, converters in compiled.converters(db):
        value, col = row[index], compiled.columns[index]
        for convert in converters:
            value = convert(value, col, db)
        row[index] = value
    fields = len(compiled.attnames)
    conversation = manager.model.from_db(alias, compiled.attnames, row[:fields])
    # The annotations on the instance too, as a QuerySet leaves them (the ORM branch above).
    setattr(conversation, "_convlink_stored_in", row[fields])  # noqa: B010 - annotations, as the ORM's
    setattr(conversation, "_convlink_receipts_waiting", row[fields + 1])  # noqa: B010
    return conversation, _key_of(Message, row[fields]), bool(row[fields + 1])


def _key_of(Message: Any, stored_in: Any) -> Any:  # noqa: N803
    # Typed as the conversation's own key (a UUID on some sites) so that it compares
    # equal to conversation.pk on every database.
    return None if stored_in is None else Message._meta.get_field("conversation").target_field.to_python(
        stored_in)


# Stand-ins for the two values in find_conversation's compiled SQL: where each goes.
_CONVERSATION_SID, _MESSAGE_SID = "\x00convlink-conversation\x00", "\x00convlink-message\x00"


def _find_conversation_query(Conversation: Any, Message: Any, alias: str,  # noqa: N803
                             conversation_sid: str, message_sid: str) -> QuerySet:
    """find_conversation's SELECT: the conversation, the key of the conversation that
    holds the message, and whether receipts wait for it."""
    quote = connections[alias].ops.quote_name
    sid_column = Message._meta.get_field("message_sid").column
    stored_in = RawSQL(
        f"(SELECT {quote(Message._meta.get_field('conversation').column)}"
        f" FROM {quote(Message._meta.db_table)}"
        f" WHERE {quote(sid_column)} = %s)",
        (message_sid,), output_field=Message._meta.get_field("conversation").target_field,
    )
    # Receipts that overtook their message (rare: the table is nearly always empty,
    # and the probe is one index lookup) ride on the same SELECT rather than cost one
    # of their own on every message.
    waiting = RawSQL(
        f"EXISTS(SELECT 1 FROM {quote(WaitingReceipt._meta.db_table)}"
        " WHERE message_sid = %s)",
        (message_sid,), output_field=BooleanField(),
    )
    # A slice, not first(): the SID is unique, and first()'s ORDER BY costs a sort.
    return Conversation._default_manager.using(alias).filter(conversation_sid=conversation_sid).annotate(
        _convlink_stored_in=stored_in, _convlink_receipts_waiting=waiting)[:1]


@dataclasses.dataclass
class _CompiledFind:
    """find_conversation's SELECT, compiled: the SQL, where each value goes, the
    model's attnames in the order of the columns (the two annotations follow), and the
    columns as the ORM's expressions, whose converters each connection caches."""

    sql: str
    order: tuple[str, ...]
    attnames: tuple[str, ...]
    columns: tuple[Any, ...]
    _converters: weakref.WeakKeyDictionary = dataclasses.field(default_factory=weakref.WeakKeyDictionary)

    def converters(self, db: Any) -> list[tuple[int, list[Callable[..., Any]]]]:
        # Per connection object: a backend's converters are its operations' bound
        # methods, and each thread has a connection of its own.
        found = self._converters.get(db)
        if found is None:
            found = [(index, converters) for index, col in enumerate(self.columns)
                     if (converters := [*db.ops.get_db_converters(col), *col.get_db_converters(db)])]
            self._converters[db] = found
        return found


@lru_cache(maxsize=8)
def _find_conversation_sql(Conversation: Any, Message: Any, alias: str  # noqa: N803
                           ) -> _CompiledFind | None:
    """find_conversation's SELECT for these models on database ``alias``, compiled by
    the ORM once with stand-ins for the two values; None when the site's default
    manager puts values of its own in it, or selects anything but the model's columns
    and the two annotations (select_related, deferred fields)."""
    query = _find_conversation_query(Conversation, Message, alias, _CONVERSATION_SID, _MESSAGE_SID).query
    compiler = query.get_compiler(using=alias)
    sql, params = compiler.as_sql()
    if not set(params) <= {_CONVERSATION_SID, _MESSAGE_SID} or len(params) != 3:
        return None
    klass_info, select = compiler.klass_info, compiler.select
    if not klass_info or klass_info.get("related_klass_infos"):
        return None
    fields = [select[index][0].target for index in klass_info["select_fields"]]
    expected = [f.attname for f in Conversation._meta.concrete_fields]
    annotations = {"_convlink_stored_in": len(fields), "_convlink_receipts_waiting": len(fields) + 1}
    if (klass_info["select_fields"] != list(range(len(fields))) or len(select) != len(fields) + 2
            or [f.attname for f in fields] != expected or compiler.annotation_col_map != annotations):
        return None
    return _CompiledFind(sql, tuple(params), tuple(f.attname for f in fields),
                         tuple(expression for expression, _sql, _alias in select))


def refuse_if_stored_elsewhere(event: MessageEvent) -> None:
    """Raise RefusedEvent when the event's message is stored under another
    conversation than the event names. Message SIDs are unique across Twilio: such an
    event is not Twilio's, and applying it would edit (or file) a message of one
    conversation under another. One query; called only where that is suspected."""
    elsewhere = get_message_model()._default_manager.filter(message_sid=event.message_sid).values_list(
        "conversation__conversation_sid", flat=True).first()
    if elsewhere is not None and elsewhere != event.conversation_sid:
        raise not_part_of(event.message_sid, event.conversation_sid, elsewhere)


def not_part_of(message_sid: str, conversation_sid: str, stored_in: str) -> RefusedEvent:
    """The refusal of an event naming message ``message_sid`` in ``conversation_sid``
    when it is stored in ``stored_in``."""
    # The answer must not name the other conversation: it may be another account's.
    public = f"Message {message_sid} is not part of conversation {conversation_sid}."
    return RefusedEvent(public, detail=f"{public[:-1]}: it belongs to conversation {stored_in}.")


def save_conversation_to_db(
    conversation_sid: str, *, overwrite: bool = False, absent: bool = False,
    account_sid: str | None = None, **fields: Any
) -> tuple[AbstractTwilioConversation, bool]:
    """Fetch or create the conversation ``conversation_sid``, locked for this transaction.

    ``fields`` complete the row: on creation they are its values (the friendly name
    defaults to the model's ``placeholder_name``); on an existing row see
    ``complete_conversation``. ``account_sid`` is a new row's account. ``absent``: the
    caller has just seen no such row (``find_conversation``), so the first SELECT is
    skipped and the upsert runs at once. Returns (conversation, created).

    Which account may write the row is not checked here: the webhook does that
    (``handlers``), between ``lock_conversation`` and ``complete_conversation``.
    """
    with transaction.atomic(savepoint=False):
        conversation, created = lock_conversation(conversation_sid, absent=absent,
                                                  account_sid=account_sid, **fields)
        if not created:
            complete_conversation(conversation, fields, overwrite=overwrite)
    return conversation, created


def lock_conversation(conversation_sid: str, *, absent: bool = False, account_sid: str | None = None,
                      **fields: Any) -> tuple[AbstractTwilioConversation, bool]:
    """The conversation row ``conversation_sid``, locked (SELECT ... FOR UPDATE), and
    whether this call created it, with ``fields`` (and ``account_sid``) as its values.
    A row that existed, or that a concurrent delivery created first, is returned as
    stored: ``complete_conversation`` applies the fields to it. Call inside a
    transaction."""
    Conversation = get_conversation_model()
    manager = Conversation._default_manager
    locked = manager.select_for_update()
    conversation = None if absent else locked.filter(conversation_sid=conversation_sid).first()
    if conversation is not None:
        return conversation, False
    values = {k: v for k, v in fields.items() if v not in (None, "")}
    if account_sid:
        values["account_sid"] = account_sid
    values.setdefault("friendly_name", Conversation.placeholder_name(conversation_sid))
    # An upsert instead of an IntegrityError: a concurrent delivery may insert the
    # same SID between our SELECT and INSERT; both then read the one row. DO UPDATE
    # (not DO NOTHING / INSERT IGNORE) takes the row's exclusive lock at once:
    # InnoDB's INSERT IGNORE takes a shared one, and two of those waiting to upgrade
    # for the SELECT ... FOR UPDATE below deadlock.
    target = connections[manager.db].features.supports_update_conflicts_with_target
    mine = Conversation(conversation_sid=conversation_sid, **values)
    manager.bulk_create([mine], update_conflicts=True, update_fields=["conversation_sid"],
                        unique_fields=["conversation_sid"] if target else None)
    conversation = locked.get(conversation_sid=conversation_sid)
    # The upsert answers alike whether it inserted or met a row a concurrent delivery
    # committed in between: only the creation stamp tells them apart. The loser's
    # fields (a name, a service SID, a state) then complete the winner's row.
    return conversation, conversation.created_at == mine.created_at


def complete_conversation(conversation: AbstractTwilioConversation, fields: dict[str, Any], *,
                          overwrite: bool = False) -> None:
    """Apply an event's ``fields`` to a stored conversation: they fill what is still
    blank or the placeholder name, so a late onConversationAdded never undoes what a
    newer event set. With ``overwrite`` (onConversationUpdated,
    onConversationStateUpdated: events that report a change) every non-empty field
    replaces the stored one, unless the change is older (``date_updated``) than the
    newest one stored: Twilio retries and reorders, and a retried 09:00 "inactive"
    must not undo a 10:00 "closed"."""
    overwrite = overwrite and not _older(fields, conversation)
    changed = []
    for name, value in fields.items():
        if value in (None, "", {}, []):
            continue
        current = getattr(conversation, name)
        blank = current in (None, "", {}, []) or (
            name == "friendly_name" and conversation.has_placeholder_name())
        if (blank or overwrite) and current != value:
            setattr(conversation, name, value)
            changed.append(name)
    if changed:
        conversation.save(update_fields=[*changed, "updated_at"])


def _older(fields: dict[str, Any], conversation: AbstractTwilioConversation) -> bool:
    when, stored = fields.get("date_updated"), conversation.date_updated
    return when is not None and stored is not None and when < stored


def direction_of(author: str | None) -> str:
    return Direction.OUTBOUND if is_system_author(author) else Direction.INBOUND


def save_message_to_db(
    conversation: AbstractTwilioConversation, event: MessageEvent, *,
    stored: bool | None = None, origin: str = "webhook", receipts_waiting: bool | None = None,
) -> tuple[AbstractTwilioMessage, bool]:
    """Store the message of ``event`` in ``conversation`` or update the stored one.
    Returns (message, created).

    onMessageAdded for a stored SID is a redelivery and changes nothing. Updated and
    Removed events change body, attributes, media and dates, and create the row when
    they overtake its onMessageAdded: nothing the customer sent is dropped. A new
    row goes through the registered insert steps (``register_insert_step``) before
    its INSERT.

    ``stored`` is what the caller read just before (``find_conversation``): False
    inserts at once (a concurrent duplicate then raises IntegrityError, and the caller
    runs the event again), True goes straight to the stored row, None looks first.
    ``receipts_waiting`` likewise: True applies the delivery receipts that arrived
    before the new row (``apply_waiting``), False skips that, None looks.

    Each change sends its signal after the commit (``message_received``,
    ``message_updated``, ``message_removed``, with ``origin``); a redelivery or a
    stale update changes nothing and sends nothing.
    """
    Message = get_message_model()
    manager = Message._default_manager
    message = None
    if stored is not False:
        # Locked: two updates of one message must not interleave their stale checks.
        message = manager.select_for_update().filter(message_sid=event.message_sid).first()
    if message is None:
        message = new_message(conversation, event)
        after_insert = _before_insert(message, conversation, origin)
        insert(message, using=manager.db)
        _inserted([message], conversation, origin, after_insert,
                  look_for_receipts=receipts_waiting is not False)
        return message, True
    stale = (event.date_updated is not None and message.date_updated is not None
             and event.date_updated < message.date_updated)
    if event.event_type == "onMessageUpdated" and not stale:
        values = {"body": event.body, "attributes": event.attributes,
                  "media": event.media or message.media,
                  "date_updated": event.date_updated or message.date_updated}
        changed = [name for name, value in values.items() if getattr(message, name) != value]
        if changed:  # a redelivered update is no change
            for name in changed:
                setattr(message, name, values[name])
            message.save(update_fields=[*changed, "updated_at"])
            _changed(message_updated, message, conversation, origin)
    elif event.event_type == "onMessageRemoved" and message.date_removed is None:
        # The row and its body stay: the removal is recorded, the customer's words kept.
        message.date_removed = removal_time(event)
        message.save(update_fields=["date_removed", "updated_at"])
        _changed(message_removed, message, conversation, origin)
    return message, False


def new_message(conversation: AbstractTwilioConversation, event: MessageEvent) -> AbstractTwilioMessage:
    """The unsaved row of ``event``'s message, as every path stores one."""
    # django-stubs types the swappable foreign key by the settings mypy runs with
    # (the test site's ChatConversation); the app only knows the abstract model.
    return get_message_model()(  # type: ignore[misc]
        message_sid=event.message_sid,
        conversation=conversation,
        author=event.author,
        body=event.body,
        direction=direction_of(event.author),
        index=event.index,
        date_created=event.date_created,
        date_updated=event.date_updated,
        # A removal whose onMessageAdded has not arrived yet is still a removal.
        date_removed=(removal_time(event) if event.event_type == "onMessageRemoved"
                      else event.date_removed),
        source=event.source,
        participant_sid=event.participant_sid,
        attributes=event.attributes,
        media=event.media,
    )


def save_new_messages_to_db(
    conversation: AbstractTwilioConversation, events: list[MessageEvent], *, origin: str,
    prepare: Callable[[AbstractTwilioMessage, MessageEvent], None] | None = None,
) -> list[AbstractTwilioMessage]:
    """Store, in one INSERT, the messages of ``events`` not stored yet: a page of
    history. A message already stored is left as it is; returns the new rows.

    Each new row is what ``save_message_to_db`` would have made of an onMessageAdded
    (``new_message``, then ``prepare``, then the registered insert steps), its
    waiting receipts are applied and ``message_received`` is sent with ``origin``
    after the commit. Call inside a transaction: a webhook storing one of these
    messages at the same moment makes the INSERT raise IntegrityError, and the
    caller runs the page again (``db.run_with_retries``), which then leaves that
    message alone. Costs a constant number of statements however many messages:
    one SELECT of the stored SIDs, one INSERT, and the receipts' looks.
    """
    Message = get_message_model()
    manager = Message._default_manager
    sids = list(dict.fromkeys(event.message_sid for event in events))
    stored = set(manager.filter(message_sid__in=sids).values_list("message_sid", flat=True))
    rows: list[AbstractTwilioMessage] = []
    after_insert: list[Callable[[], None]] = []
    for event in events:
        if event.message_sid in stored:
            continue
        stored.add(event.message_sid)
        row = new_message(conversation, event)
        if prepare is not None:
            prepare(row, event)
        after_insert += _before_insert(row, conversation, origin)
        rows.append(row)
    if not rows:
        return rows
    manager.bulk_create(rows)
    if rows[0].pk is None:  # a database that does not return the new keys
        keys = dict(manager.filter(message_sid__in=[row.message_sid for row in rows])
                    .values_list("message_sid", "pk"))
        for row in rows:
            row.pk = keys[row.message_sid]
    for row in rows:
        # As save() leaves a new row: a receiver's later save() writes only what it changed.
        row.__dict__["_convlink_stored"] = row._stored_values()
    _inserted(rows, conversation, origin, after_insert, look_for_receipts=True)
    return rows


def _before_insert(row: AbstractTwilioMessage, conversation: AbstractTwilioConversation,
                   origin: str) -> list[Callable[[], None]]:
    """The registered insert steps, run on a new row before its INSERT; what each asks
    to run after it."""
    return [then for step in _insert_steps if (then := step(row, conversation, origin))]


def _inserted(rows: list[AbstractTwilioMessage], conversation: AbstractTwilioConversation, origin: str,
              after_insert: list[Callable[[], None]], *, look_for_receipts: bool) -> None:
    """What follows the INSERT of new message rows, in the same transaction, whichever
    path stored them: their ``message_received``, the receipts that waited for them,
    the look again after the commit, then the insert steps' own work."""
    # Announced before the steps' own after-commit work (the group chat's forward,
    # which the immediate task backend runs in the commit's callbacks): receivers
    # hear of the customer's message before of its copy in the group chat.
    for row in rows:
        _changed(message_received, row, conversation, origin)
    if look_for_receipts:
        apply_waiting([row.message_sid for row in rows], origin=origin)
    if settle := [row.message_sid for row in rows if may_get_receipts(row, conversation)]:
        # A receipt processed at this same moment cannot see these rows yet.
        settle_after_commit(settle, origin=origin, using=rows[0]._state.db)
    for then in after_insert:
        then()


def _changed(signal: Any, message: AbstractTwilioMessage, conversation: AbstractTwilioConversation,
             origin: str) -> None:
    send_after_commit(signal, type(message), using=message._state.db, message=message,
                              conversation=conversation, origin=origin)


def removal_time(event: MessageEvent) -> datetime.datetime:
    return event.date_removed or event.date_updated or timezone.now()


def conversation_fields(event: ConversationEvent) -> dict[str, Any]:
    return {
        "friendly_name": event.friendly_name,
        "unique_name": event.unique_name,
        "state": event.state,
        "chat_service_sid": event.chat_service_sid,
        "messaging_service_sid": event.messaging_service_sid,
        "attributes": event.attributes,
        "date_created": event.date_created,
        "date_updated": event.date_updated,
    }
