"""What every benchmark part shares: the row it reports, timing, database setup.

A part is a module of this package with ``run(quick: bool) -> list[Row]``; it runs
inside a Django process configured by ``bench.settings`` on a fresh test database
(``bench.part`` creates it and drops it afterwards).
"""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass


@dataclass
class Row:
    """One figure. ``baseline`` is the same measure of the cheapest way to do the job,
    taken in the same run; ``ok`` is None when there is no goal to judge."""

    section: str
    case: str
    value: float
    unit: str
    baseline: float | None = None
    goal: str = ""
    ok: bool | None = None
    # A ceiling is exact (a statement count): when it breaks, the quick run fails.
    ceiling: bool = False
    database: str = ""

    @property
    def ratio(self) -> float | None:
        if self.baseline in (None, 0):
            return None
        return self.value / self.baseline

    def as_dict(self) -> dict:
        return asdict(self)


def median_seconds(fn: Callable[[], object], *, repeat: int = 5,
                   setup: Callable[[], object] | None = None) -> float:
    """The median wall time of ``fn`` over ``repeat`` runs (``setup`` untimed before each)."""
    times = []
    for _ in range(repeat):
        if setup is not None:
            setup()
        gc.collect()
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(pct / 100 * len(ordered)) - 1))
    return ordered[index]
