"""Run one benchmark part on one database, in this process, and write its rows as JSON.

    python -m bench.part queries --database-url postgres://postgres@127.0.0.1:5432/convlink_bench \
        --out rows.json

``bench`` (``python -m bench``) calls this once per part and database: Django's
settings are process-wide, so each database gets its own process.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("part")
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)

    os.environ["BENCH_DATABASE_URL"] = args.database_url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.settings")
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from django.db import connection
    from django.test.utils import setup_databases, teardown_databases

    module = importlib.import_module(f"bench.{args.part}")
    old_config = setup_databases(verbosity=0, interactive=False)
    try:
        rows = module.run(args.quick)
    finally:
        connection.close()
        teardown_databases(old_config, verbosity=0)
    for row in rows:
        row.database = connection.vendor
    Path(args.out).write_text(json.dumps([row.as_dict() for row in rows]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
