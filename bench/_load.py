"""Under load: 4 sender processes, 50 instances, 2 ``flowplex worker`` processes, 60 s.

The node serves the ReverseNumber flow; two ``flowplex worker`` processes run its messages.
Four sender processes open the same node (its database and home), each mounts its share of
the 50 instances, and once all are ready each sends round trips one after the other for the
duration, going through its instances in turn and waiting with ``get_data(timeout=30)``, as
users are told to. Reported: round trips per second (all senders) and the p50/p99 of one
round trip.
"""

from __future__ import annotations

import multiprocessing
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import NO_POSTGRES, Result, postgres_url, scratch, skipped
from _serve import ENDPOINT, mount, served_node

SENDERS = 4
INSTANCES = 50
WORKERS = 2


def name(label: str) -> str:
    return f"load {label}: {SENDERS} senders, {INSTANCES} instances, {WORKERS} worker procs"


def _sender(
    db: str, home: str, instances: int, ready: Any, go: Any, seconds: float, out: Any
) -> None:
    """One sender process: mount, warm up, wait for ``go``, send round trips for ``seconds``;
    put (round trips, latencies in ns) or an error string on ``out``."""
    try:
        import flowplex

        cl = flowplex.start_node(path=home, db=db)
        proxies = mount(cl, instances, ENDPOINT)
        for proxy in proxies:
            proxy.get_reply_future(proxy.package_input_message({"number": 1})).get_data(timeout=30)
        ready.release()
        go.wait(60)
        latencies = []
        end = time.perf_counter() + seconds
        i = 0
        while time.perf_counter() < end:
            proxy = proxies[i % len(proxies)]
            i += 1
            t0 = time.perf_counter_ns()
            proxy.get_reply_future(proxy.package_input_message({"number": i})).get_data(timeout=30)
            latencies.append(time.perf_counter_ns() - t0)
        out.put(latencies)
        cl.node.close()
    except BaseException as exc:
        ready.release()
        out.put(f"{type(exc).__name__}: {exc}")


def load(label: str, db: str | None, tmp: Path, seconds: float) -> Result:
    """The scenario on ``db`` (None: a SQLite file of its own)."""
    home = Path(tempfile.mkdtemp(prefix="load-", dir=tmp))
    db = db or f"sqlite:///{home}/load.db"
    ctx = multiprocessing.get_context("spawn")
    with scratch(db) as url, served_node(url, home, worker_threads=0, worker_procs=WORKERS):
        ready = ctx.Semaphore(0)
        go = ctx.Event()
        out = ctx.Queue()
        shares = [INSTANCES // SENDERS + (i < INSTANCES % SENDERS) for i in range(SENDERS)]
        procs = [
            ctx.Process(
                target=_sender, args=(url, str(home), share, ready, go, seconds, out), daemon=True
            )
            for share in shares
        ]
        for proc in procs:
            proc.start()
        for _ in procs:
            if not ready.acquire(timeout=120):
                raise RuntimeError("a sender did not get ready within 120 s")
        go.set()
        start = time.perf_counter()
        answers = [out.get(timeout=seconds + 120) for _ in procs]
        elapsed = time.perf_counter() - start
        for proc in procs:
            proc.join(timeout=30)
    errors = [a for a in answers if isinstance(a, str)]
    if errors:
        raise RuntimeError(f"sender failed: {errors[0]}")
    samples = sorted(ns for a in answers for ns in a)
    return Result(
        name(label),
        len(samples),
        statistics.median(samples) / 1000,
        samples[max(int(len(samples) * 0.99) - 1, 0)] / 1000,
        len(samples) / elapsed,
        group="load",
        extra={
            "senders": SENDERS,
            "instances": INSTANCES,
            "worker_procs": WORKERS,
            "seconds": round(elapsed, 2),
        },
    )


def run(quick: bool, only: str, tmp: Path) -> list[Result]:
    """The load scenario on SQLite and (when configured) PostgreSQL."""
    results = []
    pg = postgres_url()
    for label, db in [("sqlite", None), ("postgres", pg)]:
        if only and only not in name(label):
            continue
        if label == "postgres" and not pg:
            results.append(skipped(name(label), NO_POSTGRES, "load"))
            continue
        print(f"... {name(label)}", file=sys.stderr)
        results.append(load(label, db, tmp, 10.0 if quick else 60.0))
    return results
