"""A long backlog on PostgreSQL: N messages queued to one instance, then drained.

With no worker running, the caller queues N requests (``get_reply_future``, one committed
send each) to one instance of the ReverseNumber flow; then one dispatch worker thread starts
and drains them. The drain is timed in ten slices of N/10 messages: a slice ends when the
reply to its last message is in (an instance runs its messages in order), so the caller
waits on ten futures only and takes no time from the worker. Reported: the overall drain
rate, the rate of each slice (``extra["slice_per_sec"]``), the enqueue rate, and the slowest
slice against the first (the target: no slice below 0.8x the first, i.e. no slowdown as
the queue's table fills with dead rows).

N is 10,000 by default and with ``--quick``; ``--long`` queues 100,000 (several minutes).
"""

from __future__ import annotations

import itertools
import sys
import tempfile
import time
from pathlib import Path

from _common import NO_POSTGRES, Result, postgres_url, scratch, skipped
from _serve import mount, served_node
from flowplex.workers import run_dispatch_worker_thread

SLICES = 10
NAME = "backlog postgres: drain"


def drain(url: str, home: Path, total: int) -> Result:
    per_slice = total // SLICES
    with served_node(url, home, worker_threads=0) as cl:
        (proxy,) = mount(cl, 1)
        marks = []
        start = time.perf_counter()
        for i in range(1, total + 1):
            future = proxy.get_reply_future(proxy.package_input_message({"number": i}))
            if i % per_slice == 0:
                marks.append(future)
        enqueue_per_sec = total / (time.perf_counter() - start)
        run_dispatch_worker_thread(cl)
        times = [time.perf_counter()]
        for future in marks:
            future.get_data(timeout=3_600)
            times.append(time.perf_counter())
        left = cl.node.backend.pending_count()
    rates = [per_slice / (b - a) for a, b in itertools.pairwise(times)]
    return Result(
        NAME,
        total,
        None,
        None,
        total / (times[-1] - times[0]),
        group="backlog",
        extra={
            "messages": total,
            "slice": per_slice,
            "slice_per_sec": [round(r, 1) for r in rates],
            "enqueue_per_sec": round(enqueue_per_sec, 1),
            "slowest_over_first": min(rates) / rates[0],
            "pending_after": left,
        },
    )


def run(long: bool, only: str, tmp: Path) -> list[Result]:
    if only and only not in NAME:
        return []
    url = postgres_url()
    if not url:
        return [skipped(NAME, NO_POSTGRES, "backlog")]
    total = 100_000 if long else 10_000
    print(f"... {NAME} {total:,}", file=sys.stderr)
    home = Path(tempfile.mkdtemp(prefix="backlog-", dir=tmp))
    with scratch(url) as scoped:
        return [drain(scoped, home, total)]
