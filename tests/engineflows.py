"""Task handlers and functions the engine tests name by dotted path (``engineflows.<name>``)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from flowplex.engine import BaseTaskHandler, TaskContext
from flowplex.testing import FakeClock


def add(a: int, b: int) -> int:
    """A plain function for ``python`` tasks."""
    return a + b


def task_key_and_flow_label(prefix: str, ctx: TaskContext) -> str:
    """A function that takes the task context."""
    return f"{prefix}:{ctx.task['key']}:{ctx.flow.label}"


def explode(message: str) -> None:
    """A function whose failure the engine must see."""
    raise ValueError(message)


def not_json() -> object:
    """A result that cannot be saved with the flow."""
    return object()


def block_until_file(started: str, release: str) -> str:
    """Write ``started``, then wait (bounded) until ``release`` exists: a task that blocks."""
    Path(started).write_text("started")
    deadline = time.monotonic() + 60
    while not Path(release).exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{release} never appeared")
        time.sleep(0.01)
    return "released"


def raising_handler(ctx: TaskContext) -> None:
    """A function handler (task_type by dotted path) that raises."""
    raise RuntimeError(f"handler of {ctx.task['key']} broke")


def failing_handler(ctx: TaskContext) -> None:
    """A handler that fails its task without raising."""
    ctx.fail("refused politely")


def unstorable_handler(ctx: TaskContext) -> None:
    """A handler that leaves data no database can store."""
    ctx.data["handle"] = object()
    ctx.complete()


def nan_handler(ctx: TaskContext) -> None:
    """A handler that leaves a float no JSON database stores (PostgreSQL refuses NaN)."""
    ctx.data["ratio"] = float("nan")
    ctx.complete()


class MyCustomTask(BaseTaskHandler):
    """Runs initial, then intermediate, then completes (recording each step in its data)."""

    def validate_task_params(self, ctx: TaskContext) -> None:
        if "steps" not in ctx.params:
            raise ValueError("MyCustomTask needs 'steps'")

    def initial_tick(self, ctx: TaskContext) -> None:
        ctx.data["log"] = ["initial"]

    def intermediate_tick(self, ctx: TaskContext) -> None:
        log: list[Any] = ctx.data["log"]
        log.append("intermediate")
        if len(log) >= ctx.params["steps"]:
            log.append("completed")
            ctx.complete()


#: Fake clocks by name, each with what to do once it moved: see ``pass_time``.
CLOCKS: dict[str, tuple[FakeClock, Callable[[], object]]] = {}


def pass_time(clock: str, seconds: float) -> float:
    """A task that takes ``seconds`` on the fake clock ``CLOCKS[clock]``, then runs that
    clock's callback (a competitor trying its luck meanwhile)."""
    fake, then = CLOCKS[clock]
    fake.advance(seconds)
    then()
    return seconds
