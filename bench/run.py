"""flowplex benchmarks: one run measures flowplex, its floors and its peers side by side, prints
the figures and one table of targets (met/missed), and writes JSON.

    python bench/run.py                 # everything but the 100k backlog (15-20 minutes)
    python bench/run.py --quick         # fewer iterations, smaller tables (a few minutes)
    python bench/run.py --long          # also drains a 100,000-message backlog on PostgreSQL
    python bench/run.py --only sqlite   # scenarios whose name contains "sqlite" (floors always)
    python bench/run.py --profile sqlite  # cProfile of one backend's sequential round trip
    python bench/run.py --show bench/results/2026-12-03.json   # a saved run's tables

PostgreSQL scenarios run when FLOWPLEX_BENCH_POSTGRES_URL (or FLOWPLEX_TEST_POSTGRES_URL) is
set, each in a scratch schema. Peers that need the ``bench`` extra (Ray, Celery with Redis) or
a service are reported as skipped, with the reason, when they cannot run.

What is measured (each figure beside floors and peers measured in the same run, so runs on
machines of different speed compare as ratios):

- floors: a plain Python call, an asyncio hand-off (a future set by the loop and awaited).
- "local": a LocalRuntime round trip (the caller runs the message).
- served, per backend (memory, sqlite, "sqlite 2 procs" whose worker is a ``flowplex worker``
  process, postgres): "sequential" sends one request and waits for its reply with
  ``get_reply_future(...).get_data()``, again and again (p50/p99); "sequential, timeout=30"
  the same with ``get_data(timeout=30)`` (the two are measured in alternating blocks, so the
  ratio is fair); "2-hop composite" a blocking composite calling the atomic flow; "8 in
  flight" keeps eight requests outstanding over eight instances (replies per second).
- peers (``_peers.py``): a naive SQLite WAL queue, a naive PostgreSQL SKIP LOCKED queue, a
  Ray actor, Celery with Redis, doing the same round trip, sequential and 8 in flight; the
  table "flowplex / peer" divides flowplex's figures by theirs.
- scaling (``_scale.py``): p50 and throughput at 1, 100, 10,000 instances x 1, 8, 64 in
  flight on memory, SQLite and PostgreSQL; memory per idle instance.
- load (``_load.py``): 4 sender processes, 50 instances, 2 ``flowplex worker`` processes,
  60 s (10 s with ``--quick``), on SQLite and PostgreSQL: round trips/s, p50/p99.
- backlog (``_backlog.py``): 10,000 (``--long``: 100,000) messages queued to one instance on
  PostgreSQL, drained; the rate per tenth.
- suites: every ``bench/suite_*.py`` (engine, mesh, artifacts, ...).

Suites: a ``bench/suite_*.py`` module has ``run(quick: bool, only: str)`` returning
``_common.Result`` records (it filters its scenarios by ``only``) and ``TARGETS``, either the
short form ``{scenario: (metric, bound)}`` or a list of ``_common.Target``. ``run`` may also
return ``Target`` records among its results (targets known only once it ran). A target may be
relative: ``Target("network: cross-node hop", "p50_us", "<=", 3.0,
relative_to="network floor: HTTP keep-alive")`` is met when the hop's p50 is at most 3x the
floor's, both from the same run; a target with the same (scenario, metric, relative_to) as
one below replaces it. The runner already lists the cross-node hop target under those two
scenario names: a network suite that reports them gets its row filled.

JSON (``--out``, default ``bench/results/latest.json``), schema 2::

    {
      "schema": 2,
      "started_at": "2026-11-01T14:00:00+00:00",   # UTC
      "duration_s": 900.1,
      "options": {"quick": false, "long": false, "only": ""},
      "sections_s": {"served": 120.5, "peers": 60.2, ...},   # wall time of each part
      "machine": {"python", "implementation", "platform", "machine", "cpus",
                  "loadavg_start": [1m, 5m, 15m], "loadavg_end": [...],
                  "flowplex", "git_commit", "git_dirty", "sqlite",
                  "postgres": server version or null,
                  "peers": {"ray": version or null, "celery": ..., "redis": ...}},
      "results": [                                  # every scenario, in run order
        {"name", "group",                           # floors|local|served|peers|scaling|
                                                    # load|backlog|<suite name>
         "n", "p50_us", "p99_us", "per_sec",        # null where it does not apply
         "ratio_to_floor",                          # p50 / the asyncio hand-off's p50
         "skipped",                                 # null, or why it was not measured
         "extra": {...}}                            # e.g. slice_per_sec, bytes per instance
      ],
      "comparisons": [                              # flowplex / peer, same run
        {"flowplex": "sqlite", "peer": "sqlite WAL queue",
         "p50_ratio": 1.8, "per_sec_ratio": 0.4}    # p50: < 1 is faster; per_sec: > 1 is more
      ],
      "targets": [
        {"label", "scenario", "metric", "op", "bound",
         "relative_to",                             # null, or the floor/peer it is divided by
         "measured",                                # the scenario's own figure (or null)
         "reference",                               # the floor/peer's figure (or null)
         "value",                                   # compared with bound (a ratio if relative)
         "status": "met" | "missed" | "skipped", "reason"}
      ]
    }
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import datetime
import importlib
import importlib.metadata
import json
import os
import platform
import pstats
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict
from pathlib import Path
from types import ModuleType
from typing import Any

import _backlog
import _load
import _peers
import _scale
from _common import (
    NO_POSTGRES,
    Result,
    Target,
    as_targets,
    measure,
    measure_interleaved,
    pipelined,
    postgres_url,
    scratch,
    skipped,
)
from _serve import COMPOSITE, mount, round_trip, sender, served_node
from flowplex import LocalRuntime
from flowplex.examples import ReverseNumberAtomicFlow, ReverseNumberBlockingSequentialFlow

FLOOR = "floor: asyncio hand-off"


def floor_call() -> Callable[[], Any]:
    def handler(data: dict[str, int]) -> dict[str, int]:
        return {"output_number": int(str(data["number"])[::-1])}

    return lambda: handler({"number": 1234})


def floor_asyncio_handoff() -> Callable[[], Any]:
    loop = asyncio.new_event_loop()

    async def roundtrip() -> int:
        fut = loop.create_future()
        loop.call_soon(fut.set_result, 4321)
        return await fut

    return lambda: loop.run_until_complete(roundtrip())


def local_roundtrip(flow: type) -> Callable[[], Any]:
    rt = LocalRuntime()
    proxy = rt.get_flow_instance(flow)

    def op() -> Any:
        return proxy.get_reply_future(proxy.package_input_message({"number": 1234})).get_data()

    return op


LOCAL_SCENARIOS: dict[str, tuple[str, Callable[[], Callable[[], Any]]]] = {
    "floor: plain call": ("floors", floor_call),
    FLOOR: ("floors", floor_asyncio_handoff),
    "local: ReverseNumber round trip": ("local", lambda: local_roundtrip(ReverseNumberAtomicFlow)),
    "local: 2-hop blocking composite": (
        "local",
        lambda: local_roundtrip(ReverseNumberBlockingSequentialFlow),
    ),
}


def backends(tmp: Path) -> list[tuple[str, str, bool]]:
    """(label, db url, worker in another process) for every backend to measure."""
    out = [
        ("memory", "memory://", False),
        ("sqlite", f"sqlite:///{tmp}/one.db", False),
        ("sqlite 2 procs", f"sqlite:///{tmp}/two.db", True),
    ]
    pg = postgres_url()
    if pg:
        out.append(("postgres", pg, False))
    return out


def served_names(label: str) -> list[str]:
    return [
        f"{label}: sequential",
        f"{label}: sequential, timeout=30",
        f"{label}: 2-hop composite",
        f"{label}: 8 in flight",
    ]


def served_results(n: int, only: str, tmp: Path) -> list[Result]:
    results = []
    labels = [label for label, _, _ in backends(tmp)]
    if "postgres" not in labels and (not only or only in "postgres: "):
        results.extend(skipped(name, NO_POSTGRES, "served") for name in served_names("postgres"))
    for label, db, cross in backends(tmp):
        names = served_names(label)
        if only and not any(only in name for name in names):
            continue
        print(f"... {label}", file=sys.stderr)
        # PostgreSQL's round trips take milliseconds: a quarter as many keep the run short.
        count = n // 4 if label == "postgres" else n
        home = Path(tempfile.mkdtemp(prefix="served-", dir=tmp))
        threads, procs = (0, 1) if cross else (1, 0)
        with (
            scratch(db) as url,
            served_node(url, home, worker_threads=threads, worker_procs=procs) as cl,
        ):
            (proxy,) = mount(cl, 1)
            untimed, timed = measure_interleaved(
                [(names[0], round_trip(proxy)), (names[1], round_trip(proxy, timeout=30))],
                count,
                warmup=100,
            )
            (composite,) = mount(cl, 1, COMPOSITE)
            hop = measure(names[2], round_trip(composite), max(count // 4, 50), 20)
            flight = pipelined(names[3], sender(mount(cl, 8)), count, 8, warmup=count // 10)
        for result in (untimed, timed, hop, flight):
            result.group = "served"
            result.extra["backend"] = label
        results.extend([untimed, timed, hop, flight])
    return results


def peer_name(label: str, shape: str) -> str:
    return _peers.scenario(label, shape)


def _targets() -> list[Target]:
    """The issue's targets (item 2, the timed wait of item 1, the peers of item 5, the
    backlog of item 3), checked and reported, never asserted by tests."""
    targets = [
        Target("memory: sequential", "p50_us", "<=", 2.0, FLOOR, "memory p50 <= 2x floor"),
        Target("memory: 8 in flight", "per_sec", ">=", 100_000, label="memory msg/s"),
        Target("sqlite: sequential", "p50_us", "<=", 200, label="sqlite p50"),
        Target("sqlite: 8 in flight", "per_sec", ">=", 20_000, label="sqlite msg/s"),
        Target("sqlite 2 procs: sequential", "p50_us", "<=", 250, label="sqlite 2 procs p50"),
        Target("postgres: sequential", "p50_us", "<=", 2_000, label="postgres p50"),
        Target("postgres: 8 in flight", "per_sec", ">=", 5_000, label="postgres msg/s"),
    ]
    for label in ("memory", "sqlite", "sqlite 2 procs", "postgres"):
        seq, timed, hop, _ = served_names(label)
        targets.append(Target(timed, "p50_us", "<=", 1.10, seq, f"{label} timed wait / untimed"))
        targets.append(Target(hop, "p50_us", "<=", 3.0, seq, f"{label} 2-hop / one (1.5x a hop)"))
    flight = f"{_peers.IN_FLIGHT} in flight"
    for backend, peer in [
        ("sqlite", "sqlite WAL queue"),
        ("postgres", "postgres SKIP LOCKED queue"),
    ]:
        targets.append(
            Target(
                f"{backend}: sequential",
                "p50_us",
                "<=",
                1.0,
                peer_name(peer, "sequential"),
                f"{backend} p50 vs {peer}",
            )
        )
    for backend, peer in [
        ("sqlite", "sqlite WAL queue"),
        ("postgres", "postgres SKIP LOCKED queue"),
        ("postgres", "ray actor"),
        ("postgres", "celery+redis"),
    ]:
        targets.append(
            Target(
                f"{backend}: {flight}",
                "per_sec",
                ">=",
                1.0,
                peer_name(peer, flight),
                f"{backend} msg/s vs {peer}",
            )
        )
    targets.append(
        Target(
            _backlog.NAME,
            "slowest_over_first",
            ">=",
            0.8,
            label="postgres backlog: slowest tenth / first",
        )
    )
    targets.append(
        Target(
            "network: cross-node hop",
            "p50_us",
            "<=",
            3.0,
            "network floor: HTTP keep-alive",
            "cross-node hop <= 3x HTTP floor",
        )
    )
    return targets


def load_suites() -> list[ModuleType]:
    """The other subsystems' suites: each ``bench/suite_*.py`` (see the module docstring)."""
    return [
        importlib.import_module(path.stem)
        for path in sorted(Path(__file__).parent.glob("suite_*.py"))
    ]


def run_suites(quick: bool, only: str) -> tuple[list[Result], list[Target]]:
    results: list[Result] = []
    targets: list[Target] = []
    for suite in load_suites():
        print(f"... suite {suite.__name__}", file=sys.stderr)
        group = suite.__name__.removeprefix("suite_")
        targets.extend(as_targets(getattr(suite, "TARGETS", {})))
        for item in suite.run(quick=quick, only=only):
            if isinstance(item, Target):
                targets.append(item)
            else:
                item.group = item.group or group
                results.append(item)
    return results, targets


# -- evaluating and printing -------------------------------------------------------------------


#: What a target's default label (its scenario) says of its metric.
_UNIT_SUFFIX = {"p50_us": " p50"}


def figure(result: Result, metric: str) -> float | None:
    value = getattr(result, metric, None)
    if value is None:
        value = result.extra.get(metric)
    return None if value is None else float(value)


def evaluate(target: Target, by_name: dict[str, Result]) -> dict[str, Any]:
    verdict: dict[str, Any] = {
        "label": target.label or target.scenario + _UNIT_SUFFIX.get(target.metric, ""),
        "scenario": target.scenario,
        "metric": target.metric,
        "op": target.op,
        "bound": target.bound,
        "relative_to": target.relative_to,
        "measured": None,
        "reference": None,
        "value": None,
        "status": "skipped",
        "reason": None,
    }
    result = by_name.get(target.scenario)
    if result is None or result.skipped:
        verdict["reason"] = result.skipped if result else "not measured in this run"
        return verdict
    measured = verdict["measured"] = figure(result, target.metric)
    value = measured
    if target.relative_to is not None:
        ref = by_name.get(target.relative_to)
        if ref is None or ref.skipped:
            reason = ref.skipped if ref else "not measured in this run"
            verdict["reason"] = f"{target.relative_to}: {reason}"
            return verdict
        reference = verdict["reference"] = figure(ref, target.metric)
        value = None if measured is None or not reference else measured / reference
    if value is None:
        verdict["reason"] = f"no {target.metric} figure"
        return verdict
    verdict["value"] = value
    met = value <= target.bound if target.op == "<=" else value >= target.bound
    verdict["status"] = "met" if met else "missed"
    return verdict


def fmt(value: float | None, metric: str) -> str:
    if value is None:
        return "-"
    if metric.endswith("_us"):
        return f"{value:,.1f} µs" if value < 100 else f"{value:,.0f} µs"
    if metric == "per_sec":
        return f"{value:,.0f}/s"
    return f"{value:.2f}"


def fmt_num(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def print_results(results: Iterable[Result]) -> None:
    print(f"{'scenario':<52} {'p50 µs':>9} {'p99 µs':>9} {'msg/s':>9} {'x floor':>8}")
    group = None
    for r in results:
        if r.group == "scaling":
            continue
        if r.group != group:
            group = r.group
            print(f"-- {group}")
        if r.skipped:
            print(f"{r.name:<52} {r.skipped}")
            continue
        line = (
            f"{r.name:<52} {fmt_num(r.p50_us):>9} {fmt_num(r.p99_us):>9} "
            f"{fmt_num(r.per_sec, 0):>9} {fmt_num(r.ratio_to_floor):>8}"
        )
        if r.group == "backlog":
            line += f"  per tenth: {', '.join(f'{x:,.0f}' for x in r.extra['slice_per_sec'])}/s"
            line += f"; enqueue {r.extra['enqueue_per_sec']:,.0f}/s"
        print(line)


def comparisons(by_name: dict[str, Result]) -> list[dict[str, Any]]:
    """flowplex's sequential p50 and 8-in-flight throughput divided by each measured peer's."""
    out = []
    flight = f"{_peers.IN_FLIGHT} in flight"
    for backend in ("memory", "sqlite", "sqlite 2 procs", "postgres"):
        seq = by_name.get(f"{backend}: sequential")
        thr = by_name.get(f"{backend}: {flight}")
        if seq is None or thr is None or seq.skipped or thr.skipped:
            continue
        for peer in _peers.PEERS:
            pseq = by_name.get(peer_name(peer, "sequential"))
            pthr = by_name.get(peer_name(peer, flight))
            if pseq is None or pthr is None or pseq.skipped or pthr.skipped:
                continue
            out.append(
                {
                    "flowplex": backend,
                    "peer": peer,
                    "p50_ratio": seq.p50_us / pseq.p50_us,
                    "per_sec_ratio": thr.per_sec / pthr.per_sec,
                }
            )
    return out


def print_matrix(
    heads: list[str], rows: dict[tuple[str, ...], dict[str, str]], columns: list[str]
) -> None:
    """A table: each row's key fills the ``heads`` columns (left), then one cell per column."""
    print("".join(f"{h:<16}" for h in heads) + "".join(f"{c:>28}" for c in columns))
    for key, cells in rows.items():
        left = "".join(f"{k:<15} " for k in key)
        print(left + "".join(f"{cells.get(c, '-'):>28}" for c in columns))


def print_comparisons(compared: list[dict[str, Any]]) -> None:
    if not compared:
        return
    print("\nflowplex / peer, same run: p50 sequential (< 1x: flowplex faster) | msg/s 8 in flight")
    print("(> 1x: flowplex more)")
    rows: dict[tuple[str, ...], dict[str, str]] = {}
    for c in compared:
        text = f"{c['p50_ratio']:.2f}x | {c['per_sec_ratio']:.2f}x"
        rows.setdefault((c["flowplex"],), {})[c["peer"]] = text
    print_matrix(["flowplex"], rows, list(dict.fromkeys(c["peer"] for c in compared)))


def print_scaling(results: list[Result]) -> None:
    cells = [r for r in results if r.group == "scaling"]
    if not cells:
        return
    print("\nscaling: p50 µs | msg/s")
    rows: dict[tuple[str, ...], dict[str, str]] = {}
    for r in cells:
        if r.p50_us is not None:
            key = (r.extra["backend"], f"{r.extra['instances']:>10,}")
            rows.setdefault(key, {})[f"{r.extra['in_flight']} in flight"] = (
                f"{r.p50_us:,.0f} | {r.per_sec:,.0f}"
            )
    levels = sorted({r.extra["in_flight"] for r in cells if r.p50_us is not None})
    print_matrix(["backend", " instances"], rows, [f"{k} in flight" for k in levels])
    for r in cells:
        if r.p50_us is None:
            print(
                f"{r.extra['backend']}: memory per idle instance at {r.n:,} instances: "
                f"{r.extra['traced_bytes_per_instance']:,.0f} B traced (Python heap), "
                f"{r.extra['rss_bytes_per_instance']:,.0f} B resident"
            )


def print_targets(verdicts: list[dict[str, Any]], only: str) -> None:
    shown = [v for v in verdicts if not only or v["status"] != "skipped"]
    if shown:
        print(f"\n{'target':<44} {'measured':>22} {'bound':>12}  {'against (same run)':<58} status")
    else:
        print("\nno target measured in this run")
    for v in shown:
        metric = v["metric"]
        measured = fmt(v["measured"], metric)
        if v["relative_to"] is not None:
            if v["value"] is not None:
                measured += f" = {v['value']:.2f}x"
            bound = f"{v['op']} {v['bound']:g}x"
            against = f"{v['relative_to']} {fmt(v['reference'], metric)}"
        else:
            bound = f"{v['op']} {fmt(v['bound'], metric)}"
            against = "-"
        status = v["status"].upper() if v["status"] == "missed" else v["status"]
        if v["reason"]:
            status += f" ({v['reason']})"
        print(f"{v['label']:<44} {measured:>22} {bound:>12}  {against:<58} {status}")
    counts = {s: sum(v["status"] == s for v in verdicts) for s in ("met", "missed", "skipped")}
    hidden = len(verdicts) - len(shown)
    note = f" ({hidden} not measured with --only, not shown)" if hidden else ""
    print(
        f"targets: {counts['met']} met, {counts['missed']} missed, "
        f"{counts['skipped']} skipped{note}"
    )


def print_tables(
    results: list[Result], compared: list[dict[str, Any]], verdicts: list[dict[str, Any]], only: str
) -> None:
    print_results(results)
    print_comparisons(compared)
    print_scaling(results)
    print_targets(verdicts, only)


# -- machine ---------------------------------------------------------------------------------


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def machine_info() -> dict[str, Any]:
    root = Path(__file__).resolve().parent.parent

    def git(*args: str) -> str | None:
        try:
            return subprocess.run(
                ["git", *args], cwd=root, capture_output=True, text=True, check=True, timeout=10
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return None

    pg_version = None
    url = postgres_url()
    if url:
        with contextlib.suppress(Exception):
            import psycopg

            with psycopg.connect(url, connect_timeout=5) as conn:
                row = conn.execute("SHOW server_version").fetchone()
                pg_version = row[0] if row else None
    status = git("status", "--porcelain", "--untracked-files=no")
    return {
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "loadavg_start": list(os.getloadavg()),
        "flowplex": _version("flowplex"),
        "git_commit": git("rev-parse", "HEAD"),
        "git_dirty": None if status is None else bool(status),
        "sqlite": sqlite3.sqlite_version,
        "postgres": pg_version,
        "peers": {name: _version(name) for name in ("ray", "celery", "redis", "psycopg")},
    }


# -- profile -----------------------------------------------------------------------------------


def profile(label: str, n: int) -> None:
    """Print a cProfile of ``label``'s sequential round trip (``n`` of them)."""
    tmp = Path(tempfile.mkdtemp(prefix="flowplex-profile-"))
    try:
        match = [b for b in backends(tmp) if b[0] == label]
        if not match:
            raise SystemExit(f"--profile: no backend {label!r} (postgres needs a URL)")
        _, db, cross = match[0]
        threads, procs = (0, 1) if cross else (1, 0)
        with (
            scratch(db) as url,
            served_node(url, tmp, worker_threads=threads, worker_procs=procs) as cl,
        ):
            (proxy,) = mount(cl, 1)
            op = round_trip(proxy)
            for _ in range(200):
                op()
            prof = cProfile.Profile()
            prof.enable()
            for _ in range(n):
                op()
            prof.disable()
        stats = pstats.Stats(prof).strip_dirs().sort_stats("tottime")
        print(f"{label}: sequential round trip, {n} calls, by own time")
        stats.print_stats(25)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# -- main --------------------------------------------------------------------------------------


@contextlib.contextmanager
def scratch_dir() -> Iterator[Path]:
    tmp = Path(tempfile.mkdtemp(prefix="flowplex-bench-"))
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def measure_everything(
    args: argparse.Namespace,
) -> tuple[list[Result], list[Target], dict[str, float]]:
    """Every scenario ``args`` ask for: the results, the suites' targets, each part's time."""
    quick, only = args.quick, args.only
    results: list[Result] = []
    for name, (group, make) in LOCAL_SCENARIOS.items():
        if only and only not in name and group != "floors":
            continue
        result = measure(name, make(), 2_000 if quick else 20_000)
        result.group = group
        results.append(result)
    sections: dict[str, float] = {}
    suite_targets: list[Target] = []

    def section(name: str, run: Callable[[], list[Result]]) -> None:
        start = time.perf_counter()
        results.extend(run())
        sections[name] = round(time.perf_counter() - start, 1)
        if sections[name] >= 1:
            print(f"... {name}: {sections[name]:.0f} s", file=sys.stderr)

    def suites() -> list[Result]:
        suite_results, found = run_suites(quick, only)
        suite_targets.extend(found)
        return suite_results

    with scratch_dir() as tmp:
        section("served", lambda: served_results(1_000 if quick else 10_000, only, tmp))
        section("peers", lambda: _peers.run(quick, only, tmp))
        section("scaling", lambda: _scale.run(quick, only, tmp))
        section("load", lambda: _load.run(quick, only, tmp))
        section("backlog", lambda: _backlog.run(args.long, only, tmp))
    section("suites", suites)
    return results, suite_targets, sections


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer iterations, smaller tables")
    parser.add_argument("--long", action="store_true", help="drain a 100,000-message backlog")
    parser.add_argument("--only", default="", help="run scenarios whose name contains this")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results/latest.json")
    parser.add_argument("--profile", metavar="BACKEND", help="profile a sequential round trip")
    parser.add_argument("--show", type=Path, metavar="JSON", help="print a saved run's tables")
    args = parser.parse_args(argv)
    if args.profile:
        profile(args.profile, 2_000 if args.quick else 10_000)
        return 0
    if args.show:
        saved = json.loads(args.show.read_text())
        print_tables(
            [Result(**r) for r in saved["results"]],
            saved["comparisons"],
            saved["targets"],
            saved["options"]["only"],
        )
        return 0

    started = datetime.datetime.now(datetime.UTC)
    t_start = time.perf_counter()
    machine = machine_info()
    results, suite_targets, sections = measure_everything(args)

    floor = next(r for r in results if r.name == FLOOR)
    for r in results:
        if r.p50_us is not None and floor.p50_us:
            r.ratio_to_floor = r.p50_us / floor.p50_us
    by_name = {r.name: r for r in results}
    targets: dict[tuple[str, str, str | None], Target] = {}
    for target in [*_targets(), *suite_targets]:
        targets[target.key] = target
    verdicts = [evaluate(t, by_name) for t in targets.values()]
    compared = comparisons(by_name)

    print_tables(results, compared, verdicts, args.only)

    machine["loadavg_end"] = list(os.getloadavg())
    report = {
        "schema": 2,
        "started_at": started.isoformat(timespec="seconds"),
        "duration_s": round(time.perf_counter() - t_start, 1),
        "options": {"quick": args.quick, "long": args.long, "only": args.only},
        "sections_s": sections,
        "machine": machine,
        "results": [asdict(r) for r in results],
        "comparisons": compared,
        "targets": verdicts,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {args.out} ({report['duration_s']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
