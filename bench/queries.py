"""Placeholder, replaced below."""
from bench.common import Row


def run(quick: bool) -> list[Row]:
    return [Row("queries per webhook", "smoke", 1, "statements")]
