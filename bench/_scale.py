"""The scaling table: p50 and throughput at 1, 100 and 10,000 instances and 1, 8 and 64 requests
in flight; memory per idle instance.

For each backend and instance count a fresh node mounts that many instances of the
ReverseNumber flow (one dispatch worker thread) and sends each one message (every instance
has then been loaded and run once: the measured state is "idle after use"); then, for each
in-flight level, it sends ``max(count, n)`` requests round robin over the instances, keeping
that many outstanding (``_common.pipelined``: p50 is a request's send-to-reply time). With 1
in flight that is the sequential round trip. PostgreSQL runs a few hundred round trips a
second: there the cells send ``n`` requests to the first ``n`` instances (only those are
warmed), and the footprint is not measured.

Memory per idle instance, at the largest count on memory and SQLite: what mounting and the
first message added, divided by the instances, once as traced Python allocations
(tracemalloc, exact) and once as the process's resident set (/proc/self/statm, what the OS
sees; it can read low when the process reuses memory freed earlier). Both include the
caller's proxy of each instance.
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


def plan(quick: bool) -> list[tuple[str, str, tuple[int, ...], bool]]:
    """(label, db URL template, instance counts, whether every instance gets every cell's
    requests) per backend; ``{tmp}`` is filled per node."""
    counts = QUICK_COUNTS if quick else COUNTS
    out = [
        ("memory", "memory://", counts, True),
        ("sqlite", "sqlite:///{tmp}/scale.db", counts, True),
    ]
    pg = postgres_url()
    if pg:
        # A few hundred round trips a second: the short run keeps to 100 instances, and the
        # cells at 10,000 use the first n (the footprint is measured on the other backends).
        out.append(("postgres", pg, counts[:2] if quick else counts, False))
    return out


def run(quick: bool, only: str, tmp: Path) -> list[Result]:
    """Every cell (and footprint) whose name contains ``only`` (all when empty)."""
    results = []
    for label, template, counts, whole in plan(quick):
        base_n = (300 if quick else 2_000) if whole else (300 if quick else 1_000)
        for count in counts:
            n = max(base_n, count) if whole else base_n
            names = [cell(label, count, k) for k in IN_FLIGHT]
            footprint = whole and count == max(counts)
            if footprint:
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
                # Every instance the cells use runs once first: loaded, then idle.
                used = min(count, n)
                pipelined("warm-up", sender(proxies[:used]), used, min(64, used))
                gc.collect()
                traced1, rss1 = tracemalloc.get_traced_memory()[0], rss_bytes()
                tracemalloc.stop()
                for k, name in zip(IN_FLIGHT, names, strict=False):
                    result = pipelined(name, sender(proxies), n, k, warmup=min(n // 10, 200))
                    result.group = "scaling"
                    result.extra.update(backend=label, instances=count, in_flight=k)
                    results.append(result)
                if footprint:
                    per_instance = {
                        "traced_bytes_per_instance": (traced1 - traced0) / count,
                        "rss_bytes_per_instance": (rss1 - rss0) / count,
                    }
                    extra = {"backend": label, "instances": count, **per_instance}
                    results.append(
                        Result(
                            memory_name(label),
                            count,
                            None,
                            None,
                            None,
                            group="scaling",
                            extra=extra,
                        )
                    )
    return results
