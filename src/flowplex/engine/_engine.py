"""The tick engine: it advances every ready task of a flow, one tick at a time.

Pure logic: no database, web or CLI imports. What a task needs from outside (a store for
nested runs, a client of the serving runtime for ``call``) is handed to the engine.

How this engine differs from the original engine (whose behaviour it otherwise follows):

- A task starts when **all** its precursors are COMPLETED (the original: when any path from
  ROOT had completed).
- Every failure is seen by the engine, whether the handler raises or sets the task FAILED
  itself: the error goes to ``task["error"]`` and ``flow.data["errors"]``, and ``fail_fast``
  applies (the original's built-in handlers swallowed their errors, so a failed task could
  leave the flow COMPLETED).
- **A flow never stays RUNNING when no task can progress**: without ``fail_fast``, the
  independent branches finish and then the flow ends FAILED (the original stayed RUNNING for
  ever).
- ``tick_flow_until_has_no_pending`` ticks at least once, so a flow with no tasks completes.
- ``num_tickable_tasks`` counts each task once (a task reachable by two paths was counted
  twice).
"""

from __future__ import annotations

import importlib
import re
import time
import traceback
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from ..errors import FlowplexError
from ..runtime import Client
from ._context import interpolate
from ._errors import EngineError, FlowFailedError, MaxTicksError
from ._graph import COMPLETED, FAILED, FINISHED, PENDING, ROOT_KEY, RUNNING, TaskFlow

__all__ = ["BaseTaskHandler", "ChildFlowStore", "FlowEngine", "TaskContext", "TaskHandler"]

#: A task handler: called once per tick of its task. It completes the task with
#: ``ctx.complete()``, fails it with ``ctx.fail(message)`` (or by raising), or returns with the
#: task RUNNING to be ticked again.
TaskHandler = Callable[["TaskContext"], None]

# Task params of these keys describe child flows, interpolated in the child's own context.
_CHILD_SPEC_KEYS = frozenset({"flow_spec", "mapping_params"})


class ChildFlowStore(Protocol):
    """What the ``flow`` task needs of a store (:class:`~flowplex.engine.FlowStore` has it)."""

    def create_flow(self, flow: TaskFlow) -> str:
        """Store a new flow (a child run); return its key."""
        ...

    def get_flow(self, key: str) -> TaskFlow:
        """The stored flow ``key``."""
        ...


class TaskContext:
    """What a handler gets on each tick: the task, its flow, the engine and the extra context.

    ``params`` are the task's (interpolated) ``task_params``; ``data`` is the task's ``data``
    dict (created on first use), which is saved with the flow.
    """

    __slots__ = ("engine", "extra", "first_tick", "flow", "task")

    def __init__(
        self,
        engine: FlowEngine,
        flow: TaskFlow,
        task: dict[str, Any],
        extra: Mapping[str, Any],
        first_tick: bool,
    ) -> None:
        self.engine = engine
        self.flow = flow
        self.task = task
        self.extra = extra
        self.first_tick = first_tick

    @property
    def params(self) -> dict[str, Any]:
        """The task's ``task_params`` (an empty dict when it has none)."""
        params: dict[str, Any] = self.task.get("task_params") or {}
        return params

    @property
    def data(self) -> dict[str, Any]:
        """The task's ``data`` dict, saved with the flow."""
        data: dict[str, Any] = self.task.setdefault("data", {})
        return data

    def complete(self) -> None:
        """Mark the task COMPLETED."""
        self.task["status"] = COMPLETED

    def fail(self, message: str) -> None:
        """Mark the task FAILED with ``message`` (the engine records it as the flow's error)."""
        self.task["status"] = FAILED
        self.task["error"] = message

    def as_mapping(self) -> dict[str, Any]:
        """The root of ``ctx.`` dot paths: ``flow``, ``task``, ``engine`` and the extra context."""
        return {**self.extra, "engine": self.engine, "flow": self.flow, "task": self.task}

    def tick_subtask(self, subtask: dict[str, Any]) -> None:
        """Tick ``subtask`` (a task dict kept inside this task) through its own handler.

        Proxying handlers (``switch``, ``spread``) use it. A subtask's failure raises
        :class:`EngineError`, so it fails this task too.
        """
        first = subtask["status"] == PENDING
        if first:
            subtask["status"] = RUNNING
        self.engine._run_handler(self.flow, subtask, self.extra, first)
        if subtask["status"] == FAILED:
            raise EngineError(f"subtask {subtask.get('key')!r} failed: {subtask.get('error')}")


class BaseTaskHandler:
    """A base for stateful, multi-tick handlers named by dotted path in ``task_type``.

    On a task's first tick the engine calls :meth:`validate_task_params` then
    :meth:`initial_tick`; on later ticks :meth:`intermediate_tick`. Each must end the task with
    ``ctx.complete()`` / ``ctx.fail()`` or leave it RUNNING. The engine makes one instance per
    handler class, so keep per-task state in ``ctx.data``.
    """

    def __call__(self, ctx: TaskContext) -> None:
        if ctx.first_tick:
            self.validate_task_params(ctx)
            self.initial_tick(ctx)
        else:
            self.intermediate_tick(ctx)

    def validate_task_params(self, ctx: TaskContext) -> None:
        """Raise if ``ctx.params`` cannot work (the default accepts anything)."""

    def initial_tick(self, ctx: TaskContext) -> None:
        """The first tick (the default completes the task)."""
        ctx.complete()

    def intermediate_tick(self, ctx: TaskContext) -> None:
        """Every later tick (the default completes the task)."""
        ctx.complete()


class FlowEngine:
    """Turns specs into flows and ticks them.

    ``handlers`` add or override task types (``{"task_type": handler}``). Any other
    ``task_type`` is imported as a handler (a function of the :class:`TaskContext`, or a
    :class:`BaseTaskHandler` subclass, instantiated once): ``"mod:attr"`` names the module and
    the attribute exactly; ``"pkg.mod.fn"`` is a dotted path; and by naming convention
    ``"name"`` is ``name_task_handler:TaskHandler`` (``"pkg.tasks.x"`` is
    ``pkg.task_handlers.x_task_handler:TaskHandler``), tried after the dotted path. ``store``
    is where ``flow`` tasks put their child runs. ``client`` is a
    :class:`~flowplex.Client` of the serving runtime (or a zero-argument callable returning
    one, called when a ``call`` task first needs it): ``call`` tasks send their messages
    through it. ``ctx`` is extra context every task sees (``$ctx.<name>``).

    With ``hold_replies`` (a :class:`FlowRunner` sets it on its engine) a ``call`` task reads
    its reply without removing it from the runtime, and :meth:`release_replies` removes the
    replies read so far once the flows that used them are saved: a runner that dies in between
    leaves the reply for the runner that takes over.
    """

    def __init__(
        self,
        *,
        handlers: Mapping[str, TaskHandler] | None = None,
        store: ChildFlowStore | None = None,
        client: Client | Callable[[], Client] | None = None,
        ctx: Mapping[str, Any] | None = None,
        hold_replies: bool = False,
    ) -> None:
        from ._tasks import BUILTIN_HANDLERS, TASK_TYPE_ALIASES

        self._handlers: dict[str, TaskHandler] = {**BUILTIN_HANDLERS, **(handlers or {})}
        self._aliases: Mapping[str, str] = TASK_TYPE_ALIASES
        self.store = store
        self._client = client
        self.ctx: Mapping[str, Any] = dict(ctx or {})
        self.hold_replies = hold_replies
        self._held_replies: list[str] = []

    @property
    def client(self) -> Client | None:
        """The serving runtime's client for ``call`` tasks (None if none was given)."""
        client = self._client
        if client is not None and not isinstance(client, Client):
            client = self._client = client()
        return client

    def _used_reply(self, client: Client, future_id: str) -> None:
        """A ``call`` task has used the reply for ``future_id``: drop it now, or once saved."""
        if self.hold_replies:
            self._held_replies.append(future_id)
        else:
            client.discard_reply(future_id)

    def release_replies(self, saved: bool = True) -> None:
        """Drop the replies ``call`` tasks used since the last release (their flows are saved);
        with ``saved=False`` keep them in the runtime (the save failed: whoever ticks the flow
        next reads them again)."""
        held, self._held_replies = self._held_replies, []
        # Only a call task holds replies, and it opened the client: never open one here.
        client = self.client if saved and held else None
        if client is not None:
            for future_id in held:
                client.discard_reply(future_id)

    # -- conversions ------------------------------------------------------------------------

    def flow_spec_to_flow(self, flow_spec: Mapping[str, Any]) -> TaskFlow:
        """Same as :meth:`TaskFlow.from_flow_spec`."""
        return TaskFlow.from_flow_spec(flow_spec)

    def flow_dict_to_flow(self, flow_dict: Mapping[str, Any]) -> TaskFlow:
        """Same as :meth:`TaskFlow.from_flow_dict`."""
        return TaskFlow.from_flow_dict(flow_dict)

    # -- ticking ----------------------------------------------------------------------------

    def tick_flow(self, flow: TaskFlow, ctx: Mapping[str, Any] | None = None) -> None:
        """Advance every task that is RUNNING or ready, once, then settle the flow's status.

        A PENDING flow becomes RUNNING; a finished flow is left alone. Task failures never
        raise here: they are recorded (see the module docstring); :meth:`run_flow` raises.
        """
        _check_tick_args(flow, ctx)
        self._tick(flow, ctx)

    def tick_flow_until_has_no_pending(
        self, flow: TaskFlow, ctx: Mapping[str, Any] | None = None, max_ticks: int = 10_000
    ) -> None:
        """Tick until the flow is finished or no PENDING task is ready.

        It returns with the flow RUNNING only while some task is still RUNNING (waiting on a
        reply or a child run); later ticks pick it up. ``max_ticks`` bounds the loop
        (:class:`MaxTicksError`).
        """
        _check_tick_args(flow, ctx, max_ticks)
        for _ in range(max_ticks):
            if not self._tick(flow, ctx)[1]:
                return
        raise MaxTicksError(f"flow {flow.label!r} still had ready tasks after {max_ticks} ticks.")

    def run_flow(
        self,
        flow: TaskFlow,
        ctx: Mapping[str, Any] | None = None,
        *,
        max_ticks: int = 500,
        poll_interval: float = 0.01,
    ) -> TaskFlow:
        """Tick until the flow finishes; return it, or raise :class:`FlowFailedError`.

        A tick that only finds tasks waiting (``call``, ``flow``) sleeps ``poll_interval``
        seconds before the next. Raises :class:`MaxTicksError` after ``max_ticks`` ticks.
        """
        _check_tick_args(flow, ctx, max_ticks)
        if isinstance(poll_interval, bool) or not isinstance(poll_interval, int | float):
            raise EngineError(f"poll_interval must be a number of seconds, got {poll_interval!r}.")
        for _ in range(max_ticks):
            if flow.status in FINISHED:
                break
            progressed, _ = self._tick(flow, ctx)
            if not progressed and flow.status not in FINISHED:
                time.sleep(poll_interval)
        else:
            if flow.status not in FINISHED:
                raise MaxTicksError(
                    f"flow {flow.label!r} is still {flow.status} after {max_ticks} ticks."
                )
        if flow.status == FAILED:
            raise FlowFailedError(flow.label, flow.errors)
        return flow

    def _tick(
        self,
        flow: TaskFlow,
        ctx: Mapping[str, Any] | None,
        after_task: Callable[[TaskFlow], None] | None = None,
    ) -> tuple[bool, bool]:
        """One tick. Returns (whether any task started or changed status, whether a PENDING
        task is ready for the next tick). ``after_task(flow)`` is called each time a task
        finishes (a runner saves there, so a killed runner loses one task at most)."""
        if flow.status in FINISHED:
            return False, False
        data = flow.data
        data["_tick_counter"] = data.get("_tick_counter", 0) + 1
        if flow.status == PENDING:
            flow.status = RUNNING
        tasks = flow.tasks
        tickable = [
            t
            for t in tasks.values()
            if t["status"] == RUNNING
            or (
                t["status"] == PENDING
                and all(tasks[p]["status"] == COMPLETED for p in t["precursors"])
            )
        ]
        extra = self.ctx if ctx is None else {**self.ctx, **ctx}
        progressed = False
        for task in tickable:
            first = task["status"] == PENDING
            if first:
                task["status"] = RUNNING
                progressed = True
            self._run_handler(flow, task, extra, first)
            status = task["status"]
            if status != RUNNING:
                progressed = True
                if status == FAILED:
                    self._record_failure(flow, task)
                    if flow.fail_fast:
                        flow.status = FAILED
                        return True, False
                if after_task is not None:
                    after_task(flow)
        return progressed, self._settle(flow)

    def _run_handler(
        self, flow: TaskFlow, task: dict[str, Any], extra: Mapping[str, Any], first: bool
    ) -> None:
        """Run ``task``'s handler once; a raised exception fails the task (with traceback)."""
        task_ctx = TaskContext(self, flow, task, extra, first)
        try:
            handler = self._handler(task.get("task_type"))
            params = task.get("task_params")
            if first and params:
                task["task_params"] = _interpolate_params(params, task_ctx)
            handler(task_ctx)
            if task["status"] not in _TASK_STATUSES:
                raise EngineError(f"the handler set an invalid status {task['status']!r}.")
        except Exception as exc:
            task["status"] = FAILED
            detail = str(exc) if isinstance(exc, FlowplexError) else f"{type(exc).__name__}: {exc}"
            task["error"] = detail
            task["traceback"] = traceback.format_exc()

    def _record_failure(self, flow: TaskFlow, task: Mapping[str, Any]) -> None:
        error = task.get("error") or "the task failed without an error message"
        errors = flow.data.setdefault("errors", [])
        errors.append(f"task {task['key']!r} ({task.get('task_type')}): {error}")

    def _settle(self, flow: TaskFlow) -> bool:
        """Finish the flow if it can no longer progress; True if a PENDING task is ready."""
        tasks = flow.tasks
        incomplete = ready = running = failed = False
        for key, task in tasks.items():
            status = task["status"]
            if status == COMPLETED or key == ROOT_KEY:
                continue
            if status == FAILED:
                failed = True
                continue
            incomplete = True
            if status == RUNNING:
                running = True
            elif all(tasks[p]["status"] == COMPLETED for p in task["precursors"]):
                ready = True
        if not incomplete:
            flow.status = FAILED if failed else COMPLETED
        elif not (ready or running):
            # Every remaining task waits on a failed one: nothing can progress any more.
            flow.status = FAILED
        return ready

    def _handler(self, task_type: Any) -> TaskHandler:
        if not isinstance(task_type, str) or not task_type.strip():
            raise EngineError(f"task_type must be a non-empty string, got {task_type!r}.")
        handler = self._handlers.get(self._aliases.get(task_type, task_type))
        if handler is not None:
            return handler
        misses = []
        for module_name, attrs in _handler_locations(task_type):
            target, miss = _import_target(module_name, attrs)
            if miss is None:
                break
            misses.append(miss)
        else:
            known = ", ".join(sorted(k for k in self._handlers if "." not in k))
            raise EngineError(
                f"unknown task_type {task_type!r}: not a built-in type ({known}), and "
                f"{'; '.join(misses)}."
            )
        if isinstance(target, type):
            if not issubclass(target, BaseTaskHandler):
                raise EngineError(
                    f"task_type {task_type!r} names the class {target.__qualname__}, which is not "
                    f"a subclass of flowplex.engine.BaseTaskHandler."
                )
            handler = target()
        elif callable(target):
            handler = target
        else:
            raise EngineError(f"task_type {task_type!r} names {target!r}, which is not callable.")
        self._handlers[task_type] = handler
        return handler


def _handler_locations(task_type: str) -> list[tuple[str, list[str]]]:
    """Where a handler for ``task_type`` may live, as (module, attribute path) pairs, in the
    order they are tried."""
    if ":" in task_type:
        module_name, _, attr = task_type.partition(":")
        return [(module_name, attr.split("."))]
    parts = task_type.split(".")
    # A dotted path: the longest importable module prefix holds the rest.
    locations = [(".".join(parts[:i]), parts[i:]) for i in range(len(parts) - 1, 0, -1)]
    # The naming convention: "task" becomes "task_handler" (not twice), the last name gets
    # "_task_handler" unless it has it, and the handler is that module's TaskHandler.
    convention = re.sub(r"task(?!_handler)", "task_handler", task_type)
    if not convention.endswith("task_handler"):
        convention += "_task_handler"
    locations.append((convention, ["TaskHandler"]))
    return locations


def _import_target(module_name: str, attrs: list[str]) -> tuple[Any, str | None]:
    """(the object, None), or (None, why it is not there) if the module or an attribute is
    missing. A module that exists but fails to import raises :class:`EngineError`."""
    if not module_name or not all(p.isidentifier() for p in [*module_name.split("."), *attrs]):
        return None, f"{module_name}:{'.'.join(attrs)} is not a module:attribute path"
    try:
        target: Any = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if module_name != missing and not module_name.startswith(missing + "."):
            raise EngineError(f"module {module_name!r} failed to import: {exc}") from exc
        return None, f"no module {module_name!r}"
    except Exception as exc:
        raise EngineError(
            f"module {module_name!r} failed to import: {type(exc).__name__}: {exc}"
        ) from exc
    for attr in attrs:
        if not hasattr(target, attr):
            return None, f"module {module_name!r} has no {'.'.join(attrs)!r}"
        target = getattr(target, attr)
    return target, None


_TASK_STATUSES = frozenset({PENDING, RUNNING, COMPLETED, FAILED})


def _check_tick_args(flow: Any, ctx: Any, max_ticks: Any = 1) -> None:
    """Raise :class:`EngineError` unless the public tick methods got what they can use."""
    if not isinstance(flow, TaskFlow):
        raise EngineError(
            f"expected a TaskFlow (see FlowEngine.flow_spec_to_flow), got {type(flow).__name__}."
        )
    if ctx is not None and not isinstance(ctx, Mapping):
        raise EngineError(f"ctx must be a mapping, got {type(ctx).__name__}.")
    if isinstance(max_ticks, bool) or not isinstance(max_ticks, int) or max_ticks < 1:
        raise EngineError(f"max_ticks must be a positive integer, got {max_ticks!r}.")


def _interpolate_params(params: dict[str, Any], task_ctx: TaskContext) -> dict[str, Any]:
    """``params`` with ``$ctx.`` strings resolved (child flow specs are left for the child)."""
    root = {"ctx": task_ctx.as_mapping()}
    out = {k: v if k in _CHILD_SPEC_KEYS else interpolate(v, root) for k, v in params.items()}
    return params if all(out[k] is params[k] for k in params) else out
