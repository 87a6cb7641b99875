"""Run every fault scenario of ``faultkit`` once and print a table of what happened.

    python tests/fault_report.py [--postgres URL]

Each row: the fault, how many times it was injected, the messages (or tasks) sent, how many
were lost or done twice, and the recovery time (from the fault to the work going on again; for
the unwritable-storage faults, to the worker's exit with its error line). Runs on a SQLite file
in a temporary directory, and on PostgreSQL too when a URL is given (or
``FLOWPLEX_TEST_POSTGRES_URL`` is set): each scenario there gets a fresh schema.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import faultkit

Scenario = Callable[[str, Path], faultkit.Outcome]

BOTH: list[Scenario] = [
    faultkit.kill_workers,
    faultkit.kill_worker_mid_message,
    faultkit.kill_node_with_queue,
    faultkit.long_runs,
    faultkit.kill_runner,
    faultkit.first_start_race,
]
SQLITE_ONLY: list[Scenario] = [faultkit.disk_full, faultkit.read_only, faultkit.deleted_file]
#: Notes the tests check that would only clutter the table.
HIDDEN = ("sender", "lines", "traceback")


@contextmanager
def schema(base: str) -> Iterator[str]:
    """A PostgreSQL URL whose search_path is a fresh schema, dropped afterwards."""
    import psycopg

    name = f"fault_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{name}"')
    try:
        sep = "&" if "?" in base else "?"
        yield f"{base}{sep}options=-csearch_path%3D{name}"
    finally:
        with psycopg.connect(base, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{name}" CASCADE')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--postgres", default=os.environ.get("FLOWPLEX_TEST_POSTGRES_URL"))
    args = parser.parse_args()
    rows = []
    started = time.monotonic()
    for scenario in [*BOTH, *SQLITE_ONLY]:
        backends = ["sqlite"] + (["postgres"] if args.postgres and scenario in BOTH else [])
        for backend in backends:
            with tempfile.TemporaryDirectory(prefix="flowplex-faults-") as tmp:
                home = Path(tmp)
                if backend == "sqlite":
                    outcome = scenario(f"sqlite:///{home}/node.db", home)
                else:
                    with schema(args.postgres) as url:
                        outcome = scenario(url, home)
            rows.append((backend, outcome))
            print(f"  done: {outcome.fault} on {backend}", file=sys.stderr, flush=True)
    header = ("fault", "db", "injected", "sent", "lost", "dup", "recovery s", "notes")
    table = [header] + [
        (
            o.fault,
            backend,
            str(o.injected),
            str(o.sent),
            str(o.lost),
            str(o.duplicated),
            f"{o.recovery:.2f}",
            "; ".join(
                f"{k}: {v}" for k, v in o.notes.items() if k not in ("sender", "lines", "traceback")
            ),
        )
        for backend, o in rows
    ]
    widths = [max(len(row[i]) for row in table) for i in range(len(header) - 1)]
    for row in table:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        print(" | ".join([*cells, row[-1]]).rstrip())
    print(f"({time.monotonic() - started:.0f} s in all)")


if __name__ == "__main__":
    main()
