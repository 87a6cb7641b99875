"""Task-graph engine (flowplex.engine): a 10-task chain and a 100-task fan-out.

"memory" runs spec -> flow -> ticks to the end in-process (``noop`` tasks, so the figure is the
engine's own overhead); the "per task" scenarios divide those runs by their task count
(``p50_us`` per task, ``per_sec`` tasks per second). "persisted" scenarios do what a runner
does with a new run: ``create_flow``, then one ``FlowRunner.tick`` (claim, tick to the end,
save and release), on a SQLite file and (when FLOWPLEX_BENCH_POSTGRES_URL or
FLOWPLEX_TEST_POSTGRES_URL is set) on PostgreSQL, in a scratch schema.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

from _common import Result, Targets, databases, measure, scratch
from flowplex.engine import FlowEngine, FlowRunner, FlowStore, TaskFlow

#: scenario -> (metric, bound): the issue's targets.
TARGETS: Targets = {
    "engine memory: per task, 10 chain": ("p50_us", 20.0),
    "engine memory: per task, 100 fan-out": ("p50_us", 20.0),
    "engine sqlite: persisted 10 chain": ("p50_us", 2_000.0),
    "engine postgres: persisted 10 chain": ("p50_us", 15_000.0),
}


def chain_spec(n: int) -> dict[str, Any]:
    return {"label": "chain", "tasks": [{"key": f"t{i}", "task_type": "noop"} for i in range(n)]}


def fan_out_spec(n: int) -> dict[str, Any]:
    return {
        "label": "fan-out",
        "tasks": [{"key": f"t{i}", "task_type": "noop", "precursors": ["ROOT"]} for i in range(n)],
    }


SHAPES: dict[str, tuple[Callable[[int], dict[str, Any]], int]] = {
    "10 chain": (chain_spec, 10),
    "100 fan-out": (fan_out_spec, 100),
}


def in_memory(spec: dict[str, Any]) -> Callable[[], Any]:
    engine = FlowEngine()

    def op() -> None:
        flow = engine.flow_spec_to_flow(spec)
        engine.tick_flow_until_has_no_pending(flow)
        assert flow.status == "COMPLETED"

    return op


def persisted(store: FlowStore, spec: dict[str, Any]) -> Callable[[], Any]:
    runner = FlowRunner(store)

    def op() -> None:
        store.create_flow(TaskFlow.from_flow_spec(spec))
        counts = runner.tick()
        assert counts == {"claimed": 1, "progressed": 1, "COMPLETED": 1}, counts

    return op


@contextmanager
def _opened(url: str) -> Iterator[FlowStore]:
    with scratch(url) as scoped, _store(scoped) as store:
        yield store


@contextmanager
def _store(url: str) -> Iterator[FlowStore]:
    store = FlowStore(url)
    store.ensure_tables()
    try:
        yield store
    finally:
        store.close()


def per_task(result: Result, name: str, tasks: int) -> Result:
    return replace(
        result,
        name=name,
        p50_us=result.p50_us / tasks,
        p99_us=result.p99_us / tasks,
        per_sec=result.per_sec * tasks,
    )


def run(quick: bool, only: str) -> list[Result]:
    results = []
    n = 500 if quick else 5_000
    for shape, (make, tasks) in SHAPES.items():
        name = f"engine memory: {shape}"
        per_name = f"engine memory: per task, {shape}"
        if only and only not in name and only not in per_name:
            continue
        whole = measure(name, in_memory(make(tasks)), max(n // (tasks // 10), 50), warmup=50)
        results.extend([whole, per_task(whole, per_name, tasks)])
    tmp = Path(tempfile.mkdtemp(prefix="flowplex-bench-engine-"))
    try:
        for label, url in databases(tmp, "engine"):
            names = {shape: f"engine {label}: persisted {shape}" for shape in SHAPES}
            if only and not any(only in name for name in names.values()):
                continue
            print(f"... engine {label}", file=sys.stderr)
            with _opened(url) as store:
                for shape, (make, tasks) in SHAPES.items():
                    if only and only not in names[shape]:
                        continue
                    count = (200 if quick else 2_000) // (tasks // 10)
                    results.append(
                        measure(names[shape], persisted(store, make(tasks)), count, warmup=20)
                    )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return results
