"""What every benchmark suite shares: the result record and the measuring loop."""

from __future__ import annotations

import os
import statistics
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: A suite's targets: scenario name -> (metric, bound); "p50_us" is an upper bound, any other
#: metric (e.g. "per_sec") a lower bound.
Targets = dict[str, tuple[str, float]]


@dataclass
class Result:
    name: str
    n: int
    p50_us: float
    p99_us: float
    per_sec: float
    ratio_to_floor: float | None = None


def measure(name: str, op: Callable[[], Any], n: int, warmup: int = 200) -> Result:
    for _ in range(warmup):
        op()
    samples = []
    start = time.perf_counter()
    for _ in range(n):
        t0 = time.perf_counter_ns()
        op()
        samples.append(time.perf_counter_ns() - t0)
    elapsed = time.perf_counter() - start
    samples.sort()
    return Result(
        name=name,
        n=n,
        p50_us=statistics.median(samples) / 1000,
        p99_us=samples[int(len(samples) * 0.99) - 1] / 1000,
        per_sec=n / elapsed,
    )


def postgres_url() -> str | None:
    """The PostgreSQL to measure on: FLOWPLEX_BENCH_POSTGRES_URL or FLOWPLEX_TEST_POSTGRES_URL."""
    return os.environ.get("FLOWPLEX_BENCH_POSTGRES_URL") or os.environ.get(
        "FLOWPLEX_TEST_POSTGRES_URL"
    )


def databases(tmp: Path, stem: str) -> list[tuple[str, str]]:
    """(label, URL) of each database to measure on: a SQLite file in ``tmp``, and PostgreSQL
    when one is configured (see :func:`postgres_url`)."""
    found = [("sqlite", f"sqlite:///{tmp}/{stem}.db")]
    pg = postgres_url()
    if pg:
        found.append(("postgres", pg))
    return found


@contextmanager
def scratch(url: str) -> Iterator[str]:
    """``url`` as it is, or for PostgreSQL a URL whose search_path is a fresh schema, dropped
    afterwards (benchmarks never write to the database's own schemas)."""
    if not url.startswith("postgresql"):
        yield url
        return
    import psycopg

    schema = f"bench_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    sep = "&" if "?" in url else "?"
    try:
        yield f"{url}{sep}options=-csearch_path%3D{schema}"
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
