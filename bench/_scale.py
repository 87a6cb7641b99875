"""The scaling table: p50 and throughput at 1, 100 and 10,000 instances and 1, 8 and 64 requests
in flight; memory per idle instance.

For each backend and instance count a fresh node mounts that many instances of the
ReverseNumber flow (one dispatch worker thread), sends each one message (so every instance has
been loaded and run once: the measured state is "idle after use"), then for each in-flight
level sends ``max(count, n)`` requests (on PostgreSQL ``n``) round robin over the instances,
keeping that many outstanding (see ``_common.pipelined``: p50 is a request's send-to-reply
time). With 1 in flight that is the sequential round trip.

Memory per idle instance, at the largest count: what mounting and the first message added,
divided by the instances, once as traced Python allocations (tracemalloc, exact) and once as
the process's resident set (/proc/self/statm, what the OS sees). Both include the caller's
proxy of each instance.
"""

from __future__ import annotations

import gc
import os
import sys
import tempfile
import tracemalloc
from pathlib import Path

from _common import Result, pipelined, postgres_url, scratch
from _serve import mount, sender, served_node

COUNTS = (1, 100, 10_000)
QUICK_COUNTS = (1, 100, 1_000)
IN_FLIGHT = (1, 8, 64)


def cell(label: str, count: int, in_flight: int) -> str:
    """The result name of one cell of the table."""
    return f"scale {label}: {count:,} instances, {in_flight} in flight"


def memory_name(label: str) -> str:
    return f"scale {label}: footprint per idle instance"


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def plan(quick: bool) -> list[tuple[str, str, tuple[int, ...]]]:
    """(label, db URL template, instance counts) per backend; ``{tmp}`` is filled per node."""
    counts = QUICK_COUNTS if quick else COUNTS
    out = [("memory", "memory://", counts), ("sqlite", "sqlite:///{tmp}/scale.db", counts)]
    pg = postgres_url()
    if pg:
        # PostgreSQL runs a few hundred round trips a second: the short run keeps it small.
        out.append(("postgres", pg, counts[:2] if quick else counts))
    return out


def run(quick: bool, only: str, tmp: Path) -> list[Result]:
    """Every cell (and memory figure) whose name contains ``only`` (all when empty)."""
    base_n = 300 if quick else 2_000
    results = []
    for label, template, counts in plan(quick):
        for count in counts:
            names = [cell(label, count, k) for k in IN_FLIGHT]
            measure_memory = count == max(counts)
            if measure_memory:
                names.append(memory_name(label))
            if only and not any(only in name for name in names):
                continue
            print(f"... scale {label} {count:,} instances", file=sys.stderr)
            home = Path(tempfile.mkdtemp(prefix="scale-", dir=tmp))
            db = template.format(tmp=home)
            with scratch(db) as url, served_node(url, home) as cl:
                gc.collect()
                tracemalloc.start()
                traced0, rss0 = tracemalloc.get_traced_memory()[0], rss_bytes()
                proxies = mount(cl, count)
                # Every instance runs once: loaded, then idle.
                pipelined("warm-up", sender(proxies), count, min(64, count))
                gc.collect()
                traced1, rss1 = tracemalloc.get_traced_memory()[0], rss_bytes()
                tracemalloc.stop()
                # Every instance gets a request in each cell, but on PostgreSQL (a few hundred
                # round trips a second), where the cells at 10,000 send to the first base_n.
                n = base_n if label == "postgres" else max(base_n, count)
                for k, name in zip(IN_FLIGHT, names, strict=False):
                    result = pipelined(name, sender(proxies), n, k, warmup=min(n // 10, 200))
                    result.group = "scaling"
                    result.extra.update(backend=label, instances=count, in_flight=k)
                    results.append(result)
                if measure_memory:
                    results.append(
                        Result(
                            memory_name(label),
                            count,
                            None,
                            None,
                            None,
                            group="scaling",
                            extra={
                                "backend": label,
                                "instances": count,
                                "traced_bytes_per_instance": (traced1 - traced0) / count,
                                "rss_bytes_per_instance": (rss1 - rss0) / count,
                            },
                        )
                    )
    return results
