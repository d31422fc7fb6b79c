"""Running a unit of database work again when the database, not the work, failed.

One mechanism for the two places that need it: a webhook's event (handlers) and the
storing of a group chat (group_chat). The database picks a transaction as a deadlock
victim (InnoDB does so to concurrent upserts of one new row under load), or a lock
wait times out: the work is sound, and runs again after a short jittered pause. A
unique INSERT that lost a race to a concurrent duplicate is run again once, at once:
the next attempt finds the row the winner committed.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import TypeVar

from django.db import IntegrityError, OperationalError, transaction

logger = logging.getLogger(__name__)

T = TypeVar("T")
ATTEMPTS = 3
# MySQL error 1213 (deadlock), 1205 (lock wait timeout); PostgreSQL SQLSTATE 40P01
# (deadlock) and 40001 (serialization failure).
TRANSIENT_CODES = {1213, 1205, "40P01", "40001"}


def is_transient(error: BaseException) -> bool:
    """Whether ``error`` is a deadlock or a lock timeout: worth running again."""
    cause = error.__cause__
    code = getattr(cause, "sqlstate", None) or (getattr(cause, "args", None) or [None])[0]
    return code in TRANSIENT_CODES


def run_with_retries(work: Callable[[], T], *, what: str, duplicates: bool = False,
                     on_duplicate: Callable[[IntegrityError], None] | None = None) -> T:
    """``work()``, run up to ATTEMPTS times while it fails transiently, and, with
    ``duplicates``, once more when its first attempt hit a unique constraint
    (``on_duplicate`` may raise instead, when no attempt can succeed). An
    IntegrityError that comes back is something else (a site's own constraint) and
    goes up. Inside a caller's transaction nothing is retried: a victim's whole
    transaction is gone, and the error goes up to that caller."""
    retry = not transaction.get_connection().in_atomic_block
    for attempt in range(1, ATTEMPTS + 1):
        try:
            return work()
        except (OperationalError, IntegrityError) as error:
            duplicate = False
            if duplicates and isinstance(error, IntegrityError):
                duplicate = True
                if on_duplicate is not None:
                    on_duplicate(error)
            transient = isinstance(error, OperationalError) and is_transient(error)
            again = (duplicate and attempt == 1) or transient
            if not (retry and attempt < ATTEMPTS and again):
                raise
            logger.info("Retrying %s after %s (attempt %d)", what, error, attempt)
            if isinstance(error, OperationalError):
                time.sleep(random.uniform(0.01, 0.05) * attempt)
    raise AssertionError("unreachable")  # the last attempt returns or raises
