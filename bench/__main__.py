"""Run the benchmarks on SQLite and PostgreSQL and print one table.

    python -m bench             # everything (about N minutes on a 2-core machine)
    python -m bench --quick     # small sizes; exits 1 if a statement count differs from bench/statements.py
    python -m bench --parts queries --databases postgres

BENCH_POSTGRES_URL (default postgres://postgres@127.0.0.1:5432/convlink_bench) names
the server; a test database ``test_<name>`` is created and dropped per part.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.common import Row

PARTS = ("queries", "scaling", "throughput", "history", "rq")
DATABASES = {
    "sqlite": "sqlite:///convlink_bench.sqlite3",
    "postgres": os.environ.get("BENCH_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/convlink_bench"),
}
ROOT = Path(__file__).resolve().parent.parent


def variants(part: str, database: str, quick: bool) -> list[tuple[str, dict[str, str]]]:
    """Each run of ``part`` on ``database``: its database URL and what its environment adds."""
    url = DATABASES[database]
    if part == "throughput" and database == "postgres" and not quick:
        # Django's default (a connection per request, CONN_MAX_AGE=0) and persistent
        # connections: the fixed cost of connecting narrows the gap to the baseline.
        # Two and four gunicorn workers: one per core, and more workers than cores.
        persistent = url + ("&" if "?" in url else "?") + "conn_max_age=600"
        return [(u, {"BENCH_WORKERS": str(workers)}) for workers in (2, 4) for u in (url, persistent)]
    return [(url, {})]


def run_part(part: str, database: str, quick: bool) -> list[Row]:
    return [row for url, env in variants(part, database, quick)
            for row in run_once(part, database, url, quick, env)]


def run_once(part: str, database: str, url: str, quick: bool, env: dict[str, str]) -> list[Row]:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "rows.json"
        command = [sys.executable, "-m", "bench.part", part, "--database-url", url,
                   "--out", str(out)] + (["--quick"] if quick else [])
        result = subprocess.run(command, cwd=ROOT, env={**os.environ, **env})
        if result.returncode != 0 or not out.exists():
            return [Row("error", f"{part} failed (exit {result.returncode})", float("nan"), "",
                        ok=False, ceiling=True, database=database)]
        return [Row(**row) for row in json.loads(out.read_text())]


def format_value(value: float | None, unit: str = "") -> str:
    if value is None:
        return ""
    if value != value:  # NaN
        return "n/a"
    text = f"{value:,.0f}" if abs(value) >= 100 or float(value).is_integer() else f"{value:,.3g}"
    return f"{text} {unit}".strip()


def table(rows: list[Row]) -> str:
    header = ("database", "section", "case", "figure", "baseline", "ratio", "goal", "")
    lines = [header]
    for row in rows:
        verdict = "" if row.ok is None else ("ok" if row.ok else "MISSED")
        ratio = "" if row.ratio is None else f"{row.ratio:.2f}"
        lines.append((row.database, row.section, row.case, format_value(row.value, row.unit),
                      format_value(row.baseline, row.unit), ratio, row.goal, verdict))
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    rendered = ["  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
                for line in lines]
    rendered.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(rendered)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="django-twilio-convlink benchmarks")
    parser.add_argument("--quick", action="store_true", help="small sizes, a minute or two")
    parser.add_argument("--parts", default=",".join(PARTS))
    parser.add_argument("--databases", default="sqlite,postgres")
    args = parser.parse_args(argv)

    started = datetime.datetime.now(datetime.UTC)
    rows: list[Row] = []
    for database in args.databases.split(","):
        for part in args.parts.split(","):
            rows.extend(run_part(part, database, args.quick))
    print()
    print(f"django-twilio-convlink benchmarks, {started:%Y-%m-%d %H:%M} UTC"
          f"{' (quick)' if args.quick else ''}, {os.cpu_count()} CPUs, Python {sys.version.split()[0]}")
    print(table(rows))
    broken = [row for row in rows if row.ceiling and row.ok is False]
    missed = [row for row in rows if not row.ceiling and row.ok is False]
    if missed:
        print(f"\n{len(missed)} goal(s) missed (reported, not enforced: timings are noisy).")
    if broken:
        print(f"\n{len(broken)} ceiling(s) broken:", file=sys.stderr)
        for row in broken:
            print(f"  {row.database} {row.section}: {row.case} = {format_value(row.value, row.unit)}"
                  f" ({row.goal})", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
