"""What every benchmark suite shares: the result and target records, the measuring loops."""

from __future__ import annotations

import os
import statistics
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: A suite's targets in the short form: scenario name -> (metric, bound); "p50_us" is an
#: upper bound, any other metric (e.g. "per_sec") a lower bound. A suite may instead list
#: :class:`Target` records (which also compare against a floor or peer of the same run).
Targets = dict[str, tuple[str, float]]


@dataclass
class Result:
    """One scenario's figures: round-trip p50/p99 in µs and operations per second.

    A figure that does not apply is None; ``skipped`` says why a scenario was not measured
    (a peer not installed, a service not reachable) and then every figure is None.
    ``extra`` holds what is particular to a scenario (slice rates, bytes per instance...).
    """

    name: str
    n: int
    p50_us: float | None
    p99_us: float | None
    per_sec: float | None
    ratio_to_floor: float | None = None
    group: str = ""
    skipped: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def skipped(name: str, reason: str, group: str = "") -> Result:
    """A scenario that was not measured, and why (it is reported so, never faked)."""
    return Result(name, 0, None, None, None, group=group, skipped=reason)


@dataclass(frozen=True)
class Target:
    """A target checked (never asserted) against a figure of the run.

    ``value`` is the scenario's ``metric`` (a field of :class:`Result` or a key of its
    ``extra``); with ``relative_to`` it is that figure divided by the same metric of the named
    scenario (a floor or a peer measured in the same run), and ``bound`` is a ratio. ``op`` is
    ``"<="`` or ``">="``.
    """

    scenario: str
    metric: str
    op: str
    bound: float
    relative_to: str | None = None
    label: str = ""

    @property
    def key(self) -> tuple[str, str, str | None]:
        return (self.scenario, self.metric, self.relative_to)


def as_targets(targets: Targets | Sequence[Target]) -> list[Target]:
    """A suite's ``TARGETS`` (short form or records) as records."""
    if isinstance(targets, dict):
        return [
            Target(name, metric, "<=" if metric == "p50_us" else ">=", bound)
            for name, (metric, bound) in targets.items()
        ]
    return list(targets)


def _result(name: str, samples_ns: list[int], n: int, elapsed: float) -> Result:
    samples_ns.sort()
    return Result(
        name=name,
        n=n,
        p50_us=statistics.median(samples_ns) / 1000,
        p99_us=samples_ns[max(int(len(samples_ns) * 0.99) - 1, 0)] / 1000,
        per_sec=n / elapsed,
    )


def measure(name: str, op: Callable[[], Any], n: int, warmup: int = 200) -> Result:
    """Call ``op`` ``n`` times one after the other (after ``warmup`` calls)."""
    for _ in range(warmup):
        op()
    samples = []
    start = time.perf_counter()
    for _ in range(n):
        t0 = time.perf_counter_ns()
        op()
        samples.append(time.perf_counter_ns() - t0)
    return _result(name, samples, n, time.perf_counter() - start)


def measure_interleaved(
    ops: Sequence[tuple[str, Callable[[], Any]]], n: int, warmup: int = 200, block: int = 100
) -> list[Result]:
    """:func:`measure` for several ops in turns of ``block`` calls each, so that what changes
    on the machine during the run weighs on all of them alike (for comparing them)."""
    for _, op in ops:
        for _ in range(warmup):
            op()
    samples: list[list[int]] = [[] for _ in ops]
    elapsed = [0.0 for _ in ops]
    for done in range(0, n, block):
        for k, (_, op) in enumerate(ops):
            start = time.perf_counter()
            for _ in range(min(block, n - done)):
                t0 = time.perf_counter_ns()
                op()
                samples[k].append(time.perf_counter_ns() - t0)
            elapsed[k] += time.perf_counter() - start
    return [_result(name, samples[k], n, elapsed[k]) for k, (name, _) in enumerate(ops)]


def pipelined(
    name: str,
    send: Callable[[int], Callable[[], Any]],
    n: int,
    in_flight: int,
    warmup: int = 0,
) -> Result:
    """Keep ``in_flight`` requests outstanding: ``send(i)`` sends request ``i`` and returns a
    callable that waits for its reply; the oldest reply is waited for before each new send.

    ``p50_us``/``p99_us`` are each request's time from send to its reply being seen,
    ``per_sec`` the replies per second over the whole run.
    """
    if warmup:
        pipelined(name, send, warmup, in_flight)
    pending: deque[tuple[int, Callable[[], Any]]] = deque()
    samples = []
    start = time.perf_counter()
    for i in range(n + in_flight):
        if len(pending) == in_flight or i >= n:
            if not pending:
                break
            t0, wait = pending.popleft()
            wait()
            samples.append(time.perf_counter_ns() - t0)
        if i < n:
            t0 = time.perf_counter_ns()
            pending.append((t0, send(i)))
    return _result(name, samples, n, time.perf_counter() - start)


NO_POSTGRES = "skipped (no PostgreSQL: set FLOWPLEX_BENCH_POSTGRES_URL)"


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
