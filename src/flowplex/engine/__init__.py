"""Task-graph flows: flow specs, the tick engine, task types, persistent runs.

A flow spec lists tasks; :class:`TaskFlow` is the graph they make under a ROOT task;
:class:`FlowEngine` ticks it, advancing every task whose precursors have all COMPLETED, until it
is COMPLETED or FAILED; :meth:`TaskFlow.to_flow_dict` serializes it. :class:`FlowStore` keeps
flows in SQL (in-memory SQLite, a SQLite file, or PostgreSQL) and :class:`FlowRunner` claims,
ticks and saves them, so several runners can share one database::

    from flowplex.engine import FlowEngine

    engine = FlowEngine()
    flow = engine.flow_spec_to_flow({"label": "hello", "tasks": [
        {"key": "t1", "task_type": "print", "task_params": {"msg": "I am task_1."}},
    ]})
    engine.tick_flow_until_has_no_pending(flow)
    assert flow.status == "COMPLETED"

The core (spec, graph, engine, task types) imports no database or web library; ``FlowStore``
and ``FlowRunner`` load SQLAlchemy when first used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._context import ContextPathError
from ._engine import BaseTaskHandler, FlowEngine, TaskContext, TaskHandler
from ._errors import (
    EngineError,
    FlowExistsError,
    FlowFailedError,
    FlowNotFoundError,
    FlowSpecError,
    LeaseLostError,
    MaxTicksError,
)
from ._graph import ROOT_KEY, Status, TaskFlow

if TYPE_CHECKING:
    from ._runner import FlowRunner
    from ._store import Claim, FlowRecord, FlowStore

__all__ = [
    "ROOT_KEY",
    "BaseTaskHandler",
    "Claim",
    "ContextPathError",
    "EngineError",
    "FlowEngine",
    "FlowExistsError",
    "FlowFailedError",
    "FlowNotFoundError",
    "FlowRecord",
    "FlowRunner",
    "FlowSpecError",
    "FlowStore",
    "LeaseLostError",
    "MaxTicksError",
    "Status",
    "TaskContext",
    "TaskFlow",
    "TaskHandler",
]

# Public classes print as flowplex.engine.<Name>, the path users import them from.
for _name in __all__:
    _obj = globals().get(_name)
    if isinstance(_obj, type):
        _obj.__module__ = __name__
del _name, _obj

_LAZY = {"Claim": "_store", "FlowRecord": "_store", "FlowStore": "_store", "FlowRunner": "_runner"}


def __getattr__(name: str) -> Any:
    # The SQL adapters import SQLAlchemy: load them only when asked for.
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
