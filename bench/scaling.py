"""How the linking work scales with the size of the site's tables.

Four measures, each timing a median of several runs and reported against a baseline
taken in the same run, on the same database:

1. **Booking lookup** (``get_booking_from_phone``) with 1k, 10k, 100k and 1M bookings
   (quick: 1k and 10k). Every customer has two bookings, so a lookup finds the same
   number of candidates at every size and only the table size changes; the median
   time per lookup (200 random customers, 5 runs) against the 1k time shows whether
   the lookup is indexed. Goal: 1M within 2x of 1k, one statement per lookup. (Most
   of a lookup's time is Django building its ordered query, the same at every size.)
2. **Retroactive relink** (``link_conversations_to_booking``, what a booking save runs
   after its commit) of 10, 1,000, 10,000 and 100,000 unlinked conversations of one
   phone, among all the bookings of (1) and 100,000 unlinked conversations of other
   customers (quick: up to 10,000 among 10,000). Goal: the same statement count at
   every size (a ceiling), and a time per conversation no worse than 1.5x the time at
   1,000 (linear): the 10-conversation case is all fixed cost, shown without a goal.
3. **update_conversation_links** (the management command) over 1k, 10k and 100k
   unlinked conversations, 20 per customer phone, nine phones in ten belonging to a
   customer of (1), one conversation in fifty cleared by hand (never touched). Goal:
   a flat time per conversation against 1k, statements that grow with chunks of
   phones, not with phones (a ceiling: at most one per 20 phones), and the peak RSS
   of a fresh process running the command within 100 MB of the same process idle
   (Django set up and connected). A sample of phones is checked against
   ``find_booking``, so a faster command that links differently fails the run.
4. **check_twilio_status** over 1M messages (quick: 100k) against the cheapest query
   that answers its main question, ``SELECT direction, count(*) ... GROUP BY
   direction``. Goal: within 3x.

The rows are written with set-based SQL into the real tables (PostgreSQL
``generate_series``, SQLite a recursive CTE, MariaDB a sequence table), and the
``BookingPhone`` index with the same SQL from the same numbers, exactly what
``index_booking_phone`` writes for them (checked on a sample): loading 1M bookings
through the ORM and ``rebuild_booking_phones`` would take longer than everything
measured. PostgreSQL gets ANALYZE after each load, as autovacuum would give it.
"""

from __future__ import annotations

import datetime
import io
import json
import math
import os
import random
import subprocess
import sys
from functools import partial
from pathlib import Path

from django.core.management import call_command
from django.core.management.color import no_style
from django.db import connection, models
from django.utils import timezone

from bench.common import Row, median_seconds
from django_twilio_convlink.linking import (
    find_booking,
    get_booking_from_phone,
    index_booking_phone,
    link_conversations_to_booking,
    relink_phone,
)
from django_twilio_convlink.models import BookingPhone
from django_twilio_convlink.phones import normalize_phone
from django_twilio_convlink.testing import CaptureStatements
from tests.testapp.models import ChatConversation, ChatMessage, Guest, Property, Reservation

ROOT = Path(__file__).resolve().parent.parent
UNITS = 500
# Guest g's phone is +1 (2000000000 + g): valid E.164 that normalize_phone keeps as is.
GUEST_PHONE_BASE = 2_000_000_000
# Phones nobody booked with (update_conversation_links finds nothing for them).
STRANGER_PHONE_BASE = 4_000_000_000
RELINK_PHONE = "+13000000001"
CONVERSATIONS_PER_PHONE = 20
LOOKUPS = 200


# --- set-based loading ----------------------------------------------------------------

class Sql:
    """The few expressions that differ between the databases, as SQL text of ``n``.

    Everything is inlined (numbers and dates are ours, not user input), so no driver
    parameter substitution runs and ``%`` is plain modulo everywhere.
    """

    def __init__(self) -> None:
        self.vendor = connection.vendor
        self.q = connection.ops.quote_name

    def text(self, expr: str) -> str:
        if self.vendor == "postgresql":
            return f"({expr})::text"
        if self.vendor == "mysql":
            return f"CAST({expr} AS CHAR)"
        return f"CAST({expr} AS TEXT)"

    def concat(self, *exprs: str) -> str:
        if self.vendor == "mysql":
            return f"CONCAT({', '.join(exprs)})"
        return "(" + " || ".join(exprs) + ")"

    def phone(self, number_expr: str) -> str:
        """'+1' followed by a ten-digit number."""
        return self.concat("'+1'", self.text(number_expr))

    def sid(self, prefix: str, expr: str) -> str:
        """A 34-character Twilio-like SID: the prefix and ``expr`` zero-padded to 32."""
        if self.vendor == "sqlite":
            return f"('{prefix}' || substr('{'0' * 32}' || ({expr}), -32, 32))"
        return self.concat(f"'{prefix}'", f"LPAD({self.text(expr)}, 32, '0')")

    def day(self, base: datetime.date, offset_expr: str) -> str:
        """The date ``offset_expr`` days after ``base``."""
        if self.vendor == "postgresql":
            return f"(DATE '{base.isoformat()}' + ({offset_expr}))"
        if self.vendor == "mysql":
            return f"DATE_ADD('{base.isoformat()}', INTERVAL ({offset_expr}) DAY)"
        return f"date('{base.isoformat()}', ({offset_expr}) || ' days')"

    def timestamp(self, moment: datetime.datetime) -> str:
        naive = timezone.make_naive(moment, datetime.UTC)
        if self.vendor == "postgresql":
            return f"TIMESTAMPTZ '{naive.isoformat(sep=' ')}+00:00'"
        return f"'{naive.isoformat(sep=' ', timespec='microseconds')}'"

    def boolean(self, value: bool) -> str:
        if self.vendor == "postgresql":
            return "TRUE" if value else "FALSE"
        return "1" if value else "0"

    def literal(self, value: object) -> str:
        if value is None:
            return "NULL"
        if isinstance(value, bool):
            return self.boolean(value)
        if isinstance(value, int | float):
            return str(value)
        if isinstance(value, dict | list):
            return "'" + json.dumps(value) + "'"
        return "'" + str(value).replace("'", "''") + "'"

    def insert_series(self, model: type[models.Model], columns: dict[str, str], first: int,
                      last: int) -> None:
        """One row of ``model`` per n in [first, last], each column the SQL expression
        given (by attname), every other column its Python default, NULL, or now."""
        now = self.timestamp(timezone.now())
        names, exprs = [], []
        for f in model._meta.concrete_fields:
            if f.attname in columns:
                expr = columns[f.attname]
            elif getattr(f, "auto_now", False) or getattr(f, "auto_now_add", False):
                expr = now
            elif f.has_default():
                expr = self.literal(f.get_default())
            elif f.null:
                expr = "NULL"
            elif f.empty_strings_allowed and f.blank:
                expr = "''"  # what a form leaves in a blank CharField
            else:
                raise ValueError(f"no value for {model.__name__}.{f.name}")
            names.append(self.q(f.column))
            exprs.append(expr)
        table = self.q(model._meta.db_table)
        insert = f"INSERT INTO {table} ({', '.join(names)}) SELECT {', '.join(exprs)}"
        if self.vendor == "postgresql":
            sql = f"{insert} FROM generate_series({first}, {last}) AS s(n)"
        elif self.vendor == "mysql":
            # MariaDB's sequence engine; MySQL 8 has no equivalent and is not benchmarked.
            sql = f"{insert} FROM (SELECT CAST(seq AS SIGNED) AS n FROM seq_{first}_to_{last}) AS s"
        else:
            sql = (f"WITH RECURSIVE s(n) AS (SELECT {first} UNION ALL SELECT n + 1 FROM s WHERE n < {last}) "
                   f"{insert} FROM s")
        with connection.cursor() as cursor:
            cursor.execute(sql)

    def after_load(self, *loaded: type[models.Model]) -> None:
        """Move the key sequences past the explicit ids and refresh the planner's
        statistics, as a site's autovacuum would after such a load."""
        with connection.cursor() as cursor:
            for statement in connection.ops.sequence_reset_sql(no_style(), list(loaded)):
                cursor.execute(statement)
            if self.vendor == "postgresql":
                for model in loaded:
                    cursor.execute(f"ANALYZE {self.q(model._meta.db_table)}")

    def vacuum(self, model: type[models.Model]) -> None:
        # Each run updates every row twice (reset, link): without this PostgreSQL would
        # time a table of growing dead rows, and autovacuum would start mid-run.
        if self.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute(f"VACUUM ANALYZE {self.q(model._meta.db_table)}")

    def delete_all(self, model: type[models.Model]) -> None:
        with connection.cursor() as cursor:
            cursor.execute(f"DELETE FROM {self.q(model._meta.db_table)}")


def guest_phone(guest_id: int) -> str:
    return f"+1{GUEST_PHONE_BASE + guest_id}"


def load_bookings(sql: Sql, first: int, last: int) -> None:
    """Bookings ``first``..``last`` (ids), two per guest, with their guests and phone
    index rows. Stays are spread over 800 days around today (most outside the lookup
    window, as on a site with years of history), one to ten nights."""
    today = timezone.localdate()
    first_guest, last_guest = (first + 1) // 2, last // 2
    sql.insert_series(Guest, {
        "id": "n", "full_name": sql.concat("'Guest '", sql.text("n")),
        "mobile": sql.phone(f"{GUEST_PHONE_BASE} + n"),
    }, first_guest, last_guest)
    # (n * 7919) % 800, kept inside 32-bit integers: days scattered over 800.
    check_in = "(n % 800) * 719 % 800 - 400"
    guest_of = "(n + 1) / 2" if sql.vendor != "mysql" else "(n + 1) DIV 2"  # integer division
    sql.insert_series(Reservation, {
        "id": "n", "guest_id": guest_of,
        "unit_id": f"1 + n % {UNITS}",
        "check_in": sql.day(today, check_in), "check_out": sql.day(today, f"{check_in} + 1 + n % 10"),
    }, first, last)
    # What index_booking_phone writes: the key as text, the guest's phone in E.164.
    sql.insert_series(BookingPhone, {
        "id": "n", "booking_key": sql.text("n"), "phone": sql.phone(f"{GUEST_PHONE_BASE} + {guest_of}"),
    }, first, last)
    sql.after_load(Guest, Reservation, BookingPhone)


def check_index_sample(last: int) -> None:
    """The SQL-written index agrees with what the library writes, on a sample."""
    for pk in random.Random(last).sample(range(1, last + 1), 20):
        written = BookingPhone.objects.get(booking_key=str(pk)).phone
        if index_booking_phone(pk) != written or normalize_phone(written) != written:
            raise AssertionError(f"bench index row of booking {pk} differs from index_booking_phone's")


def reset_links(sql: Sql) -> None:
    """Undo the links a run made, and let the database reclaim the dead rows."""
    unlink_retroactive()
    sql.vacuum(ChatConversation)


def ratio_of(value: float, baseline: float) -> float:
    return value / baseline if baseline else math.inf


# --- 1. booking lookup ---------------------------------------------------------------

def bench_lookup(sql: Sql, sizes: list[int]) -> list[Row]:
    rows: list[Row] = []
    loaded = 0
    base_us = 0.0
    for size in sizes:
        load_bookings(sql, loaded + 1, size)
        loaded = size
        check_index_sample(size)
        phones = [guest_phone(g) for g in random.Random(size).sample(range(1, size // 2 + 1), LOOKUPS)]

        def lookups(phones: list[str] = phones) -> None:
            for phone in phones:
                get_booking_from_phone(phone)

        lookups()  # warm the caches the real site would have warm
        per_lookup_us = median_seconds(lookups, repeat=5) / LOOKUPS * 1e6
        if not base_us:
            base_us = per_lookup_us
            rows.append(Row("booking lookup", f"{size:,} bookings, per lookup", per_lookup_us, "µs",
                            baseline=base_us, goal="baseline"))
        else:
            rows.append(Row("booking lookup", f"{size:,} bookings, per lookup", per_lookup_us, "µs",
                            baseline=base_us, goal="≤ 2x 1k",
                            ok=ratio_of(per_lookup_us, base_us) <= 2))
        with CaptureStatements(connection) as statements:
            get_booking_from_phone(phones[0])
        rows.append(Row("booking lookup", f"{size:,} bookings, statements per lookup", len(statements),
                        "statements", goal="1", ok=len(statements) == 1, ceiling=True))
    return rows


# --- 2. retroactive relink -----------------------------------------------------------

def insert_conversations(sql: Sql, first: int, last: int, phone_expr: str, method_expr: str = "''") -> None:
    now = sql.timestamp(timezone.now())
    sql.insert_series(ChatConversation, {
        "id": "n", "conversation_sid": sql.sid("CH", "n"), "customer_phone": phone_expr,
        "link_method": method_expr, "booking_lookup_at": now,
    }, first, last)
    sql.after_load(ChatConversation)


def unlink_retroactive() -> int:
    return ChatConversation.objects.filter(link_method="retroactive").update(
        booking=None, apartment=None, link_method="", linked_at=None)


def bench_relink(sql: Sql, sizes: list[int], baseline_size: int, background: int) -> list[Row]:
    # Other customers' unlinked conversations around the relinked ones: the UPDATE
    # must find its phone's rows through the phone index, not walk every unlinked one.
    insert_conversations(sql, 1, background,
                         sql.phone(f"{STRANGER_PHONE_BASE} + n % {background // CONVERSATIONS_PER_PHONE}"))
    guest = Guest.objects.create(full_name="Relink", mobile="(300) 000-0001")
    unit = Property.objects.get(pk=1)
    today = timezone.localdate()
    # Saved through the ORM: the signals index it as a site's booking form would.
    booking = Reservation.objects.create(guest=guest, unit=unit, check_in=today,
                                         check_out=today + datetime.timedelta(days=3))
    assert normalize_phone(guest.mobile) == RELINK_PHONE
    timings: dict[int, float] = {}
    rows: list[Row] = []
    for size in sizes:
        with connection.cursor() as cursor:
            cursor.execute(f"DELETE FROM {sql.q(ChatConversation._meta.db_table)} WHERE "
                           f"{sql.q('customer_phone')} = '{RELINK_PHONE}'")
        insert_conversations(sql, background + 1, background + size, f"'{RELINK_PHONE}'")
        reset = partial(reset_links, sql)

        def link(size: int = size) -> None:
            assert link_conversations_to_booking(booking.pk) == size

        timings[size] = median_seconds(link, repeat=3 if size >= 100_000 else 5, setup=reset)
        reset()
        with CaptureStatements(connection) as statements:
            link()
        rows.append(Row("retroactive relink", f"{size:,} conversations, statements", len(statements),
                        "statements", goal="2 at every size", ok=len(statements) == 2, ceiling=True))
        if size == sizes[-1]:
            reset()
            with CaptureStatements(connection) as statements:
                assert relink_phone(RELINK_PHONE) == size
            rows.append(Row("retroactive relink", f"{size:,} conversations, statements (tenant saved)",
                            len(statements), "statements", goal="2 at every size",
                            ok=len(statements) == 2, ceiling=True))
    sql.delete_all(ChatConversation)
    base = timings[baseline_size] / baseline_size * 1e6
    for size in sizes:
        per = timings[size] / size * 1e6
        judged = size > baseline_size
        rows.append(Row("retroactive relink", f"{size:,} conversations, per conversation", per, "µs",
                        baseline=base, goal="≤ 1.5x 1,000 (linear)" if judged else
                        ("baseline" if size == baseline_size else ""),
                        ok=ratio_of(per, base) <= 1.5 if judged else None))
    return rows


# --- 3. update_conversation_links -----------------------------------------------------

def load_unlinked(sql: Sql, size: int, guests: int) -> int:
    """``size`` conversations, 20 per phone; returns the number of phones."""
    phones = max(1, size // CONVERSATIONS_PER_PHONE)
    k = f"(n % {phones})"
    # 7919 is prime and no guest count here is a multiple of it: distinct guests.
    phone = (f"CASE WHEN {k} % 10 = 9 THEN {sql.phone(f'{STRANGER_PHONE_BASE} + {k}')} "
             f"ELSE {sql.phone(f'{GUEST_PHONE_BASE} + 1 + ({k} * 7919) % {guests}')} END")
    manual = "CASE WHEN n % 50 = 49 THEN 'manual' ELSE '' END"
    sql.delete_all(ChatConversation)
    insert_conversations(sql, 1, size, phone, manual)
    return phones


def check_links(phones: list[str]) -> None:
    """Every conversation linked as find_booking says, manual ones untouched."""
    for phone in phones:
        booking = find_booking(phone)
        for booking_id, method in ChatConversation.objects.filter(customer_phone=phone).values_list(
                "booking_id", "link_method"):
            expected = (None, "manual") if method == "manual" else (
                (None, "") if booking is None else (booking.pk, "retroactive"))
            if (booking_id, method) != expected:
                raise AssertionError(f"{phone}: linked to {booking_id} ({method}), expected {expected}")


def peak_rss_of_command(command: str) -> tuple[float, float]:
    """(idle, after) peak RSS in MB of a fresh process running ``command`` on this
    run's test database: idle is Django set up, connected, the command imported.

    Read from VmHWM, the peak of the process's own memory: getrusage's ru_maxrss
    survives exec, so a child forked from this (large) process would report our peak.
    """
    script = (
        "import io, json, django\n"
        "def hwm():\n"
        "    status = open('/proc/self/status').read()\n"
        "    return int(status.split('VmHWM:')[1].split()[0])\n"
        "django.setup()\n"
        "from django.core.management import call_command, load_command_class\n"
        "from django.db import connection\n"
        "connection.ensure_connection()\n"
        f"load_command_class('django_twilio_convlink', {command!r})\n"
        "idle = hwm()\n"
        f"call_command({command!r}, stdout=io.StringIO())\n"
        "print(json.dumps([idle, hwm()]))\n"
    )
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "bench.settings",
           "BENCH_TEST_DATABASE_NAME": connection.settings_dict["NAME"]}
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True,
                            text=True, check=True)
    idle_kib, peak_kib = json.loads(result.stdout.strip().splitlines()[-1])
    return idle_kib / 1024, peak_kib / 1024


def bench_update_links(sql: Sql, sizes: list[int], guests: int) -> list[Row]:
    rows: list[Row] = []
    timings: dict[int, float] = {}
    for size in sizes:
        phones = load_unlinked(sql, size, guests)
        reset = partial(reset_links, sql)

        def update() -> None:
            call_command("update_conversation_links", stdout=io.StringIO())

        timings[size] = median_seconds(update, repeat=3 if size >= 100_000 else 5, setup=reset)
        seen = list(ChatConversation.objects.order_by("customer_phone")
                    .values_list("customer_phone", flat=True).distinct())
        check_links(random.Random(size).sample(seen, min(20, len(seen))))
        reset()
        with CaptureStatements(connection) as statements:
            update()
        ceiling = phones // 20 + 5
        rows.append(Row("update_conversation_links", f"{size:,} conversations, {phones:,} phones: statements",
                        len(statements), "statements", goal=f"≤ {ceiling:,} (1 per 20 phones + 5)",
                        ok=len(statements) <= ceiling, ceiling=True))
        if size == sizes[-1]:
            reset()
            idle, peak = peak_rss_of_command("update_conversation_links")
            rows.append(Row("update_conversation_links", f"{size:,} conversations: peak RSS", peak, "MB",
                            baseline=idle, goal="≤ idle + 100 MB", ok=peak - idle <= 100))
    base = timings[sizes[0]] / sizes[0] * 1e6
    for size in sizes:
        per = timings[size] / size * 1e6
        first = size == sizes[0]
        rows.append(Row("update_conversation_links", f"{size:,} conversations, per conversation", per, "µs",
                        baseline=base, goal="baseline" if first else "≤ 1.5x 1k (flat)",
                        ok=None if first else ratio_of(per, base) <= 1.5))
    return rows


# --- 4. check_twilio_status -----------------------------------------------------------

def bench_status(sql: Sql, messages: int) -> list[Row]:
    bounds = ChatConversation.objects.aggregate(first=models.Min("pk"), last=models.Max("pk"))
    first_id, last_id = bounds["first"], bounds["last"]
    conversations = last_id - first_id + 1
    now = sql.timestamp(timezone.now())
    sql.delete_all(ChatMessage)
    sql.insert_series(ChatMessage, {
        "id": "n", "message_sid": sql.sid("IM", "n"),
        "conversation_id": f"{first_id} + n % {conversations}",
        "author": "CASE WHEN n % 9 < 4 THEN '+14155550142' ELSE 'ASSISTANT' END",
        "body": "'Hi, the heater in unit 4B is not working since this morning'",
        "direction": "CASE WHEN n % 9 < 4 THEN 'inbound' ELSE 'outbound' END",
        "index": f"n / {conversations}" if sql.vendor != "mysql" else f"n DIV {conversations}",
        "date_created": now, "source": "'SMS'",
    }, 1, messages)
    sql.after_load(ChatMessage)
    table = sql.q(ChatMessage._meta.db_table)
    direction = sql.q(ChatMessage._meta.get_field("direction").column)

    def bare() -> None:
        with connection.cursor() as cursor:
            cursor.execute(f"SELECT {direction}, COUNT(*) FROM {table} GROUP BY {direction}")
            cursor.fetchall()

    def command() -> None:
        call_command("check_twilio_status", stdout=io.StringIO())

    command()  # both measured with the table in the cache
    base = median_seconds(bare, repeat=5) * 1e3
    took = median_seconds(command, repeat=5) * 1e3
    with CaptureStatements(connection) as statements:
        command()
    return [
        Row("check_twilio_status", f"{messages:,} messages, {conversations:,} conversations", took, "ms",
            baseline=base, goal="≤ 3x GROUP BY direction", ok=ratio_of(took, base) <= 3),
        Row("check_twilio_status", "statements", len(statements), "statements", goal="2",
            ok=len(statements) == 2, ceiling=True),
    ]


def run(quick: bool) -> list[Row]:
    sql = Sql()
    booking_sizes = [1_000, 10_000] if quick else [1_000, 10_000, 100_000, 1_000_000]
    rows: list[Row] = []
    sql.insert_series(Property, {"id": "n", "title": sql.concat("'Unit '", sql.text("n"))}, 1, UNITS)
    sql.after_load(Property)
    rows += bench_lookup(sql, booking_sizes)
    rows += bench_relink(sql, [10, 1_000, 10_000] if quick else [10, 1_000, 10_000, 100_000], 1_000,
                         background=10_000 if quick else 100_000)
    guests = booking_sizes[-1] // 2
    rows += bench_update_links(sql, [1_000, 10_000] if quick else [1_000, 10_000, 100_000], guests)
    rows += bench_status(sql, 100_000 if quick else 1_000_000)
    return rows

