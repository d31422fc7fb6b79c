"""Relinking in bulk: ``update_conversation_links`` over any number of conversations.

Batched by phone, three statements per batch of up to ``PHONE_BATCH`` phones (their
index rows, their candidate bookings, one UPDATE whose CASE on the phone gives each
row its booking), so the cost grows with phones, not conversations, and memory stays
flat when the conversations are not listed. The command, the admin's relink action
and a site's own code all come through here.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterator
from contextlib import nullcontext
from dataclasses import dataclass, field
from itertools import groupby
from operator import itemgetter
from typing import TYPE_CHECKING, Any

from django.core.exceptions import EmptyResultSet
from django.db import connections, transaction
from django.db.models import Count, F, Func, QuerySet
from django.utils import timezone

from .. import get_conversation_model
from ..models import LinkMethod
from ..phones import normalize_phone
from .bookings import booking_fields
from .lookup import best_bookings
from .phone_index import PhoneIndexRepair, repair_index
from .rules import bulk_link

if TYPE_CHECKING:
    from django.db.backends.base.base import BaseDatabaseWrapper
    from django.db.models.sql.compiler import SQLCompiler

logger = logging.getLogger(__name__)


@dataclass
class PlannedLink:
    """The conversations of one phone and the booking they are (to be) linked to."""

    phone: str
    booking_pk: Any
    apartment_pk: Any
    # One UPDATE links a whole batch of phones, so when someone linked some of these
    # meanwhile only the report's total (rows the UPDATEs changed) shows it.
    conversation_sids: list[str] = field(default_factory=list)


@dataclass
class LinkReport:
    """What ``update_conversation_links`` linked (or, in a dry run, would link)."""

    examined: int = 0
    # Rows the UPDATEs changed; in a dry run, the conversations that would be linked.
    linked: int = 0
    # Per phone, only when the conversations were listed (list_conversations=True).
    links: list[PlannedLink] = field(default_factory=list)
    # What was done to the phone index first (index_missing or reindex), else None.
    # In a dry run: what would have been done.
    index: PhoneIndexRepair | None = None

    @property
    def unmatched(self) -> int:
        return self.examined - self.linked


def _phone_groups(qs: QuerySet, with_sids: bool) -> Iterator[tuple[str, int, list[str]]]:
    """(phone, number of conversations, their SIDs or []) per distinct phone of ``qs``,
    in phone order, streamed: memory does not grow with the number of conversations."""
    if not with_sids:
        # The database counts; only one row per phone comes back.
        counts = qs.order_by("customer_phone").values_list("customer_phone").annotate(n=Count("pk"))
        for phone, count in counts.iterator(chunk_size=2000):
            yield phone, count, []
        return
    rows = qs.order_by("customer_phone", "pk").values_list("customer_phone", "conversation_sid")
    for phone, group in groupby(rows.iterator(chunk_size=2000), key=itemgetter(0)):
        sids = [sid for _, sid in group]
        yield phone, len(sids), sids


def _batches(groups: Iterator[tuple[str, int, list[str]]], size: int
             ) -> Iterator[list[tuple[str, int, list[str]]]]:
    batch = []
    for group in groups:
        batch.append(group)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


# Phones linked per batch: three statements (index, candidates, UPDATE) each. Larger
# batches save round trips but lengthen the CASE every updated row runs through.
PHONE_BATCH = 500


def _max_query_params(alias: str) -> int | None:
    """How many parameters one statement of this database takes (None: no limit)."""
    conn = connections[alias]
    if conn.vendor == "sqlite":
        # Asked of SQLite itself, as newer Djangos do: older ones report the limit of
        # old SQLite releases. Bigger batches mean fewer write transactions,
        # each of which journals and syncs every page its scattered rows sit on.
        conn.ensure_connection()
        return conn.connection.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)
    return conn.features.max_query_params


def _phone_batch_size(qs: QuerySet) -> int:
    """Phones per batch: PHONE_BATCH, or fewer where one UPDATE could not take them all
    as parameters: it names each phone five times (twice in each CASE, once in the IN
    list) besides the parameters of ``qs`` itself."""
    limit = _max_query_params(qs.db)
    if not limit:
        return PHONE_BATCH
    try:
        own = len(qs.query.sql_with_params()[1]) + 8  # + the four new values, with room
    except EmptyResultSet:
        return PHONE_BATCH  # an empty selection (pk__in=[]): nothing to batch anyway
    return max(1, min(PHONE_BATCH, (limit - own) // 5))


class _PhoneCase(Func):
    """``CASE <phone> WHEN %s THEN %s ... ELSE <default> END``: the simple CASE, one
    node however many phones. The ORM's Case(When(customer_phone=...)) builds and
    resolves a filter per phone in Python, which took as long as the UPDATE itself
    (bench/README.rst, update_conversation_links)."""

    def __init__(self, phone: Any, values: list[tuple[str, Any]], default: Any, output_field: Any) -> None:
        self.values = values
        super().__init__(phone, default, output_field=output_field)

    def as_sql(self, compiler: SQLCompiler, connection: BaseDatabaseWrapper, function: str | None = None,
               template: str | None = None, arg_joiner: str | None = None, **extra_context: Any
               ) -> tuple[str, tuple[Any, ...]]:
        phone_sql, phone_params = compiler.compile(self.source_expressions[0])
        default_sql, default_params = compiler.compile(self.source_expressions[1])
        params = [*phone_params]
        for phone, value in self.values:
            params += [phone, self.output_field.get_db_prep_value(value, connection)]
        whens = " ".join(["WHEN %s THEN %s"] * len(self.values))
        return f"CASE {phone_sql} {whens} ELSE {default_sql} END", (*params, *default_params)


def _link_batch(qs: QuerySet, targets: dict[str, tuple[Any, Any]]) -> int:
    """Link the conversations of ``qs`` whose phone is a key of ``targets`` (phone ->
    (booking pk, apartment pk)) in one UPDATE: a CASE on the phone picks each row's keys."""
    model = qs.model

    def case(name: str, position: int) -> _PhoneCase:
        # The ELSE is never taken (every row's phone has a WHEN); it types the CASE as
        # the column where all the values are NULL, which PostgreSQL would take for text.
        return _PhoneCase(F("customer_phone"), [(phone, keys[position]) for phone, keys in targets.items()],
                          F(name), model._meta.get_field(name).target_field)

    phones = list(targets)
    return bulk_link(qs.filter(customer_phone__in=phones), phones, case("booking", 0), case("apartment", 1),
                     LinkMethod.RETROACTIVE)


def update_conversation_links(
    *, phone: str | None = None, conversation_sid: str | None = None, dry_run: bool = False,
    conversations: QuerySet | None = None, list_conversations: bool = True,
    index_missing: bool = False, reindex: bool = False,
) -> LinkReport:
    """Look up a booking for every unlinked conversation with a known customer phone,
    optionally only for one phone (any format), one conversation SID, or the unlinked
    ones among ``conversations`` (a queryset of the conversation model: the admin's
    selection). Each phone gets the booking ``find_booking`` would give it.

    The lookup trusts the phone index. With ``index_missing`` the bookings missing
    from it are added first (``index_missing_booking_phones``: one statement more
    when none is missing); with ``reindex`` the whole index is rebuilt first
    (``rebuild_booking_phones``), which also sees phones changed behind the app's
    back. Either is for all bookings, whatever the selection; ``report.index`` says
    what it did. A dry run changes nothing, the index included: its repair is rolled
    back after the run that saw it.

    Batched by phone: one query streams the distinct phones, then per batch of up to
    500 phones one query reads their index rows, one their candidate bookings and one
    UPDATE links their conversations: statements grow with batches of phones, not
    two per phone (bench/README.rst has the figures). Manual links and conversations whose
    manager unlinked them by hand are never touched. With ``list_conversations``
    false the report has counts only (``links`` stays empty) and memory does not grow
    with the number of conversations. Raises ValueError for a phone that does not parse.
    """
    Conversation = get_conversation_model()
    qs = (
        # "NOT (booking_id IS NOT NULL)", not "booking_id IS NULL": the same rows, but
        # SQLite (no statistics unless someone runs ANALYZE) takes IS NULL for a
        # selective index lookup and would walk every unlinked conversation through
        # the booking index in each batch's UPDATE instead of using the phone index
        # for its IN list, making the run quadratic. PostgreSQL reads both as IS NULL.
        Conversation._default_manager.exclude(booking__isnull=False)
        .exclude(customer_phone="").exclude(link_method=LinkMethod.MANUAL)
    )
    if phone is not None:
        normalized = normalize_phone(phone)
        if normalized is None:
            raise ValueError(f"{phone!r} is not a phone number.")
        qs = qs.filter(customer_phone=normalized)
    if conversation_sid is not None:
        qs = qs.filter(conversation_sid=conversation_sid)
    if conversations is not None:
        qs = qs.filter(pk__in=conversations.values("pk"))

    if not (index_missing or reindex):
        return _link_unlinked(qs, dry_run, list_conversations)
    # A dry run must see the repaired index to say what a real run would link, and
    # leave it as it was: the repair happens in a transaction that is rolled back.
    with transaction.atomic() if dry_run else nullcontext():
        repair = repair_index(reindex)
        report = _link_unlinked(qs, dry_run, list_conversations)
        if dry_run:
            transaction.set_rollback(True)
    report.index = repair
    return report


def _link_unlinked(qs: QuerySet, dry_run: bool, list_conversations: bool) -> LinkReport:
    fields = booking_fields()
    today = timezone.localdate()  # one day for the whole run, as one lookup would have
    report = LinkReport()
    for batch in _batches(_phone_groups(qs, list_conversations), _phone_batch_size(qs)):
        targets = best_bookings([group[0] for group in batch], fields, today)
        planned = 0
        for customer_phone, count, sids in batch:
            report.examined += count
            if customer_phone not in targets:
                continue
            planned += count
            if list_conversations:
                booking_pk, apartment_pk = targets[customer_phone]
                report.links.append(PlannedLink(customer_phone, booking_pk, apartment_pk, sids))
        if dry_run or not targets:
            report.linked += planned
            continue
        linked = _link_batch(qs, targets)
        report.linked += linked
        logger.info("Linked %d conversation(s) of %d phone(s) to bookings", linked, len(targets))
    return report
