"""The commands' option types: argparse ``type=`` functions shared by every command.

A value that cannot be what the option asks for is refused while the arguments are
parsed, before any query: a usage error (exit status 2) from the command line, a
``CommandError`` through ``call_command()``. Without them an impossible date
(``2026-02-30``, an offset of ``+25:00``) was a ``ValueError`` from ``datetime``, and
a number past what the database takes an ``OverflowError`` or a database error, each
with a traceback.
"""

from __future__ import annotations

import argparse
import datetime
from collections.abc import Callable
from typing import TypeVar

from django.core.management.base import CommandError
from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime

T = TypeVar("T")

MOMENT_FORMAT = "YYYY-MM-DD, or YYYY-MM-DD HH:MM[:SS] with an optional UTC offset (+HH:MM or Z)"

# The largest integer SQLite, PostgreSQL and MariaDB all take, in a LIMIT or a bigint
# primary key: one more and SQLite raises OverflowError while binding it.
MAX_INTEGER = 2**63 - 1


def moment(value: str) -> datetime.datetime:
    """An aware datetime from a date (its midnight) or a date and time, with or without
    a UTC offset; one without is in the current time zone (``TIME_ZONE``)."""
    try:
        parsed = parse_datetime(value)
        if parsed is None and (day := parse_date(value)) is not None:
            parsed = datetime.datetime.combine(day, datetime.time.min)
    except ValueError as error:
        # The right shape, no such moment: datetime's own reason says which field is
        # wrong, except for an offset, where it quotes a timedelta repr.
        reason = "a UTC offset must be under 24 hours" if "offset" in str(error) else str(error)
        raise argparse.ArgumentTypeError(
            f"{value!r} is not a real date or time ({reason}); expected {MOMENT_FORMAT}.") from None
    if parsed is None:
        raise argparse.ArgumentTypeError(
            f"{value!r} is not a date or a date and time; expected {MOMENT_FORMAT}.")
    aware = timezone.make_aware(parsed) if timezone.is_naive(parsed) else parsed
    try:
        # The databases get UTC: 0001-01-01 east of Greenwich is still year 0 there.
        aware.astimezone(datetime.UTC)
    except OverflowError:
        raise argparse.ArgumentTypeError(
            f"{value!r} falls outside the years 1 to 9999 in UTC; expected {MOMENT_FORMAT}.") from None
    return aware


def whole_number(low: int, high: int = MAX_INTEGER) -> Callable[[str], int]:
    """A type that takes the integers from ``low`` to ``high`` and refuses the others."""

    def parse(value: str) -> int:
        try:
            number = int(value)
        except ValueError:
            number = None
        if number is None or not low <= number <= high:
            raise argparse.ArgumentTypeError(f"{value!r} is not a whole number from {low} to {high}.")
        return number

    return parse


row_limit = whole_number(0)  # a --limit: at most this many rows
row_id = whole_number(1)  # a bigint primary key, as the app's models have


def from_keyword(parse: Callable[[str], T], value: object, option: str) -> T:
    """``value`` through ``parse`` as argparse would have put it: ``call_command()``
    hands a keyword argument (``since="2026-11-20"``) to ``handle()`` without its
    option's ``type=``. Idempotent on what ``parse`` returned, so ``handle()`` may
    call it on every value."""
    try:
        return parse(str(value))
    except argparse.ArgumentTypeError as error:
        raise CommandError(f"Error: argument {option}: {error}") from None
