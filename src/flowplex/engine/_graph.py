"""Task flows: a graph of tasks under a ROOT task, built from a spec, serialized to a flow dict.

Pure logic: this module imports no database, web or CLI library.

A task is a plain dict (it round-trips through JSON as it is): ``key``, ``task_type``,
``task_params``, ``precursors``, ``status``, and whatever a handler adds (``data``, ``error``).
The graph's edges run from each precursor to its task. A task is *ready* when it is PENDING and
**all** of its precursors are COMPLETED (the original engine started a task as soon as any one path
from ROOT had completed: an OR-join; a join here waits for every branch).
"""

from __future__ import annotations

import copy
import uuid
from collections.abc import Iterator, Mapping, Sequence
from enum import StrEnum
from typing import Any

from ._errors import FlowSpecError

__all__ = ["ROOT_KEY", "Status", "TaskFlow"]

#: The key of the root task every flow starts from (always COMPLETED).
ROOT_KEY = "ROOT"


class Status(StrEnum):
    """The status of a flow or a task. Members are strings: ``Status.COMPLETED == "COMPLETED"``."""

    PENDING = "PENDING"
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"


PENDING = Status.PENDING
RUNNING = Status.RUNNING
COMPLETED = Status.COMPLETED
FAILED = Status.FAILED
FINISHED = frozenset({COMPLETED, FAILED})
_STATUSES = frozenset(Status)

_SPEC_KEYS = frozenset({"label", "key", "cfg", "data", "tasks"})
#: What a task spec may hold; anything else is a typo that would silently do nothing.
TASK_SPEC_KEYS = frozenset(
    {"key", "task_type", "task_params", "precursors", "successors", "status", "data"}
)
_DEFAULT_CFG: dict[str, Any] = {"fail_fast": True}


def _root_task() -> dict[str, Any]:
    return {"key": ROOT_KEY, "status": COMPLETED}


class TaskFlow:
    """A flow of tasks: a DAG under ROOT, plus ``label``, ``key``, ``cfg``, ``data`` and status.

    Build one with :meth:`from_flow_spec` (or ``FlowEngine().flow_spec_to_flow``), tick it with a
    :class:`~flowplex.engine.FlowEngine`, and store it as :meth:`to_flow_dict` (or in a
    :class:`~flowplex.engine.FlowStore`). ``tasks`` maps each key to its task dict, ROOT
    included, in the order the tasks were added; ``edges`` lists ``(src_key, dest_key)`` pairs.
    """

    __slots__ = ("cfg", "data", "depth", "edges", "key", "label", "parent_key", "status", "tasks")

    def __init__(
        self,
        *,
        label: str | None = None,
        key: str | None = None,
        cfg: Mapping[str, Any] | None = None,
        data: Mapping[str, Any] | None = None,
        status: str = PENDING,
        depth: int = 0,
        parent_key: str | None = None,
    ) -> None:
        self.label = label
        self.key = key
        self.cfg: dict[str, Any] = {**_DEFAULT_CFG, **(cfg or {})}
        self.data: dict[str, Any] = dict(data or {})
        self.status: str = status
        self.depth = depth
        self.parent_key = parent_key
        self.tasks: dict[str, dict[str, Any]] = {ROOT_KEY: _root_task()}
        self.edges: list[tuple[str, str]] = []

    # -- building ---------------------------------------------------------------------------

    @classmethod
    def from_flow_spec(cls, flow_spec: Mapping[str, Any]) -> TaskFlow:
        """A new flow from a spec: ``label``, ``key``, ``cfg``, ``data``, ``tasks``.

        Each task spec has ``task_type`` and optionally ``key`` (default: a uuid4 string),
        ``task_params``, ``status``, ``data``, ``precursors`` and ``successors``. A task that
        names ``successors`` becomes a precursor of each of them, so a graph can be written
        either way. A task naming neither gets the task before it as precursor (ROOT for the
        first); a task left with no precursor at all starts from ROOT. The spec is deep-copied.
        Raises :class:`FlowSpecError` for an unknown key in the spec or in a task spec, a
        duplicate task key, a precursor or successor that names no task, or a cycle.
        """
        if not isinstance(flow_spec, Mapping):
            raise FlowSpecError(f"a flow spec must be a mapping, got {type(flow_spec).__name__}.")
        unknown = sorted(set(flow_spec) - _SPEC_KEYS)
        if unknown:
            raise FlowSpecError(
                f"unknown flow spec key(s) {unknown}; expected some of {sorted(_SPEC_KEYS)}."
            )
        spec = _copy(dict(flow_spec))
        label = spec.get("label")
        if label is not None and not isinstance(label, str):
            raise FlowSpecError(f"flow spec 'label' must be a string, got {label!r}.")
        key = spec.get("key")
        if key is not None and (not isinstance(key, str) or not key):
            raise FlowSpecError(f"flow spec 'key' must be a non-empty string, got {key!r}.")
        cfg = _mapping(spec.get("cfg"), "flow spec 'cfg'")
        if "fail_fast" in cfg and not isinstance(cfg["fail_fast"], bool):
            raise FlowSpecError(f"cfg 'fail_fast' must be true or false, got {cfg['fail_fast']!r}.")
        flow = cls(label=label, key=key, cfg=cfg, data=_mapping(spec.get("data"), "'data'"))
        tasks = spec.get("tasks", [])
        if not isinstance(tasks, Sequence) or isinstance(tasks, str | bytes):
            raise FlowSpecError(f"flow spec 'tasks' must be a list, got {type(tasks).__name__}.")
        previous = ROOT_KEY
        for index, task_spec in enumerate(tasks):
            task = _read_task_spec(task_spec, index, previous, flow.tasks)
            flow.tasks[task["key"]] = task
            previous = task["key"]
        _add_successor_links(flow.tasks)
        flow._link()
        return flow

    @classmethod
    def from_flow_dict(cls, flow_dict: Mapping[str, Any]) -> TaskFlow:
        """The flow a :meth:`to_flow_dict` dict describes (deep-copied).

        Unknown keys (database columns, say) are ignored and a missing ROOT is added. Raises
        :class:`FlowSpecError` if the graph names unknown tasks or has a cycle.
        """
        if not isinstance(flow_dict, Mapping):
            raise FlowSpecError(f"a flow dict must be a mapping, got {type(flow_dict).__name__}.")
        return cls._load(_copy(dict(flow_dict)))

    @classmethod
    def _load(cls, d: Mapping[str, Any]) -> TaskFlow:
        """As :meth:`from_flow_dict`, taking ownership of ``d``'s contents (no copy)."""
        status = d.get("status", PENDING)
        if status not in _STATUSES:
            raise FlowSpecError(f"invalid flow status {status!r}.")
        for name in ("label", "key", "parent_key"):
            if d.get(name) is not None and not isinstance(d[name], str):
                raise FlowSpecError(f"flow {name!r} must be a string or null, got {d[name]!r}.")
        depth = d.get("depth", 0)
        if isinstance(depth, bool) or not isinstance(depth, int) or depth < 0:
            raise FlowSpecError(f"flow 'depth' must be a non-negative integer, got {depth!r}.")
        flow = cls(
            label=d.get("label"),
            key=d.get("key"),
            cfg=_mapping(d.get("cfg"), "'cfg'"),
            data=_mapping(d.get("data"), "'data'"),
            status=status,
            depth=depth,
            parent_key=d.get("parent_key"),
        )
        graph = _mapping(d.get("graph"), "'graph'")
        tasks = _mapping(graph.get("tasks"), "'graph.tasks'")
        if ROOT_KEY not in tasks:
            tasks = {ROOT_KEY: _root_task(), **tasks}
        for key, task in tasks.items():
            if not isinstance(task, dict) or task.get("status") not in _STATUSES:
                raise FlowSpecError(f"task {key!r} in the flow dict has no valid status.")
        if tasks[ROOT_KEY]["status"] != COMPLETED:
            raise FlowSpecError(f"the {ROOT_KEY} task must be COMPLETED.")
        flow.tasks = tasks
        # Precursor lists are the source of truth; edges only fill in tasks that lack one.
        derived: dict[str, list[str]] = {}
        edges = graph.get("edges") or []
        if not isinstance(edges, list):
            raise FlowSpecError(f"'graph.edges' must be a list, got {type(edges).__name__}.")
        for edge in edges:
            if not isinstance(edge, Mapping) or not all(
                isinstance(edge.get(end), str) for end in ("src_key", "dest_key")
            ):
                raise FlowSpecError(f"an edge is {{'src_key', 'dest_key'}}, got {edge!r}.")
            derived.setdefault(edge["dest_key"], []).append(edge["src_key"])
        for key, task in tasks.items():
            if key != ROOT_KEY and "precursors" not in task:
                task["precursors"] = derived.get(key, [ROOT_KEY])
        flow._link()
        return flow

    def _link(self) -> None:
        """Rebuild ``edges`` from the tasks' precursors; check names and acyclicity."""
        tasks = self.tasks
        edges = []
        for key, task in tasks.items():
            if key == ROOT_KEY:
                continue
            precursors = task["precursors"]
            if not isinstance(precursors, list) or not all(isinstance(p, str) for p in precursors):
                raise FlowSpecError(f"task {key!r}: 'precursors' must be a list of task keys.")
            for precursor in precursors:
                if precursor not in tasks:
                    raise FlowSpecError(
                        f"task {key!r} has precursor {precursor!r}, which is not a task of "
                        f"the flow."
                    )
                edges.append((precursor, key))
        self.edges = edges
        _check_acyclic(tasks)

    # -- serialization ----------------------------------------------------------------------

    def to_flow_dict(self) -> dict[str, Any]:
        """The flow as a JSON-ready dict (a deep copy): ``cfg``, ``data``, ``depth``,
        ``graph`` (``edges``, ``tasks``), ``label``, ``num_tickable_tasks``, ``parent_key``,
        ``status``, and ``key`` when the flow has one."""
        copied: dict[str, Any] = _copy(self._dump())
        return copied

    def _dump(self) -> dict[str, Any]:
        """As :meth:`to_flow_dict`, sharing this flow's dicts (for immediate encoding)."""
        d: dict[str, Any] = {
            "cfg": self.cfg,
            "data": self.data,
            "depth": self.depth,
            "graph": {
                "edges": [{"dest_key": dest, "src_key": src} for src, dest in self.edges],
                "tasks": self.tasks,
            },
            "label": self.label,
            "num_tickable_tasks": self.num_tickable_tasks,
            "parent_key": self.parent_key,
            "status": self.status,
        }
        if self.key is not None:
            d["key"] = self.key
        return d

    # -- queries ----------------------------------------------------------------------------

    @property
    def fail_fast(self) -> bool:
        """Whether the first task failure fails the flow (``cfg["fail_fast"]``, default true)."""
        return bool(self.cfg.get("fail_fast", True))

    @property
    def finished(self) -> bool:
        """True once the flow is COMPLETED or FAILED."""
        return self.status in FINISHED

    @property
    def errors(self) -> list[str]:
        """The task failures recorded so far (``data["errors"]``)."""
        return list(self.data.get("errors", []))

    def is_ready(self, task: Mapping[str, Any]) -> bool:
        """True if ``task`` is PENDING and every one of its precursors is COMPLETED."""
        if task["status"] != PENDING:
            return False
        tasks = self.tasks
        return all(tasks[p]["status"] == COMPLETED for p in task["precursors"])

    def tickable_tasks(self) -> list[dict[str, Any]]:
        """The tasks the next tick advances: the RUNNING ones and the ready ones."""
        return [t for t in self.tasks.values() if t["status"] == RUNNING or self.is_ready(t)]

    @property
    def num_tickable_tasks(self) -> int:
        """How many tasks the next tick advances (each counted once)."""
        return len(self.tickable_tasks())

    def iter_tasks(self) -> Iterator[dict[str, Any]]:
        """Every task but ROOT, in the order they were added."""
        return (t for k, t in self.tasks.items() if k != ROOT_KEY)

    def __repr__(self) -> str:
        done = sum(1 for t in self.iter_tasks() if t["status"] == COMPLETED)
        return (
            f"<TaskFlow {self.label!r} key={self.key!r} {self.status} "
            f"{done}/{len(self.tasks) - 1} tasks completed>"
        )


def _copy(value: Any) -> Any:
    """A deep copy, fast for JSON-like data (dicts, lists and scalars)."""
    kind = type(value)
    if kind is dict:
        return {k: _copy(v) for k, v in value.items()}
    if kind is list:
        return [_copy(v) for v in value]
    if kind in _SCALARS or isinstance(value, Status):
        return value
    return copy.deepcopy(value)


_SCALARS = frozenset({str, int, float, bool, type(None)})


def _mapping(value: Any, what: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise FlowSpecError(f"{what} must be a mapping, got {type(value).__name__}.")
    return dict(value)


def _read_task_spec(
    task_spec: Any, index: int, previous: str, seen: Mapping[str, Any]
) -> dict[str, Any]:
    """A task dict from a task spec: key, status and precursors filled in, types checked."""
    if not isinstance(task_spec, Mapping):
        raise FlowSpecError(f"task #{index} must be a mapping, got {type(task_spec).__name__}.")
    task = dict(task_spec)
    key = task["key"] if "key" in task else task.setdefault("key", str(uuid.uuid4()))
    if not isinstance(key, str) or not key:
        raise FlowSpecError(f"task #{index}: 'key' must be a non-empty string, got {key!r}.")
    if key == ROOT_KEY:
        raise FlowSpecError(f"task #{index}: the key {ROOT_KEY!r} is reserved for the root task.")
    if key in seen:
        raise FlowSpecError(f"duplicate task key {key!r} (task #{index}).")
    where = f"task {key!r}"
    unknown = sorted(str(k) for k in task if k not in TASK_SPEC_KEYS)
    if unknown:
        raise FlowSpecError(
            f"{where}: unknown key(s) {unknown}; a task spec takes {sorted(TASK_SPEC_KEYS)}."
        )
    task_type = task.get("task_type")
    if not isinstance(task_type, str) or not task_type:
        raise FlowSpecError(f"{where} needs a 'task_type' string, got {task_type!r}.")
    if "task_params" in task and not isinstance(task["task_params"], Mapping):
        raise FlowSpecError(f"{where}: 'task_params' must be a mapping.")
    status = task.setdefault("status", PENDING)
    if status not in _STATUSES:
        raise FlowSpecError(f"{where}: invalid status {status!r}.")
    successors = _task_keys(task, "successors", where)
    precursors = _task_keys(task, "precursors", where)
    if precursors is None:
        # The default link to the task before applies only to a task that names neither.
        precursors = [] if successors is not None else [previous]
    if successors is not None:
        if ROOT_KEY in successors:
            raise FlowSpecError(f"{where}: {ROOT_KEY!r} cannot be a successor (flows start there).")
        task["successors"] = successors
    task["precursors"] = precursors
    return task


def _task_keys(task: dict[str, Any], name: str, where: str) -> list[str] | None:
    """The task's ``precursors`` or ``successors`` as a list (None when absent), checked."""
    keys = task.get(name)
    if keys is None:
        return None
    if isinstance(keys, str):
        keys = [keys]
    elif not isinstance(keys, Sequence) or not all(isinstance(k, str) for k in keys):
        raise FlowSpecError(f"{where}: {name!r} must be a list of task keys.")
    if len(set(keys)) != len(keys):
        raise FlowSpecError(f"{where}: {name!r} lists a task twice: {list(keys)}.")
    if task["key"] in keys:
        raise FlowSpecError(f"{where} cannot be its own {name[:-1]}.")
    return list(keys)


def _add_successor_links(tasks: Mapping[str, dict[str, Any]]) -> None:
    """Make each task a precursor of its ``successors``; a task still without precursors
    then starts from ROOT."""
    for key, task in tasks.items():
        for successor in task.get("successors", ()):
            if successor not in tasks:
                raise FlowSpecError(
                    f"task {key!r} has successor {successor!r}, which is not a task of the flow."
                )
            precursors = tasks[successor]["precursors"]
            if key not in precursors:
                precursors.append(key)
    for key, task in tasks.items():
        if key != ROOT_KEY and not task["precursors"] and "successors" in task:
            task["precursors"] = [ROOT_KEY]


def _check_acyclic(tasks: Mapping[str, Mapping[str, Any]]) -> None:
    """Raise :class:`FlowSpecError` naming a cycle, if the precursor graph has one."""
    # Iterative three-colour DFS over precursor links: a grey task met again closes a cycle.
    state: dict[str, int] = {}
    for start in tasks:
        if state.get(start):
            continue
        stack: list[tuple[str, Iterator[str]]] = [(start, iter(_precursors(tasks, start)))]
        state[start] = 1
        path = [start]
        while stack:
            node, it = stack[-1]
            nxt = next(it, None)
            if nxt is None:
                state[node] = 2
                stack.pop()
                path.pop()
                continue
            seen = state.get(nxt)
            if seen == 1:
                cycle = [*path[path.index(nxt) :], nxt]
                raise FlowSpecError(
                    "the tasks' precursors form a cycle: " + " <- ".join(repr(k) for k in cycle)
                )
            if not seen:
                state[nxt] = 1
                path.append(nxt)
                stack.append((nxt, iter(_precursors(tasks, nxt))))


def _precursors(tasks: Mapping[str, Mapping[str, Any]], key: str) -> list[str]:
    precursors: list[str] = tasks[key].get("precursors", [])
    return precursors
