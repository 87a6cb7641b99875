"""The engine's errors, all under :class:`EngineError` (itself a :class:`~flowplex.FlowplexError`).

::

    FlowplexError
     └── EngineError                 anything the task-graph engine raises on purpose
          ├── FlowSpecError          a flow spec or flow dict that cannot make a flow
          │                          (also a FlowDefinitionError)
          ├── FlowFailedError        run_flow: the flow ended FAILED (carries its errors)
          ├── MaxTicksError          run_flow: the flow did not finish within max_ticks
          ├── FlowNotFoundError      FlowStore: no flow with that key (also a LookupError)
          ├── FlowExistsError        FlowStore: create_flow with a key already stored
          └── LeaseLostError         FlowStore: the claim expired and another runner took it
"""

from __future__ import annotations

from collections.abc import Sequence

from ..errors import FlowDefinitionError, FlowplexError

__all__ = [
    "EngineError",
    "FlowExistsError",
    "FlowFailedError",
    "FlowNotFoundError",
    "FlowSpecError",
    "LeaseLostError",
    "MaxTicksError",
]


class EngineError(FlowplexError):
    """The root of the task-graph engine's errors."""


class FlowSpecError(EngineError, FlowDefinitionError):
    """A flow spec (or flow dict) is malformed: the message names the task and what is wrong."""


class FlowFailedError(EngineError):
    """``run_flow`` finished a flow that ended FAILED; ``errors`` are its ``data["errors"]``."""

    def __init__(self, label: str | None, errors: Sequence[str]) -> None:
        self.label = label
        self.errors = list(errors)
        joined = "\n".join(self.errors) or "(no error recorded)"
        super().__init__(f"flow {label!r} failed:\n{joined}")


class MaxTicksError(EngineError):
    """``run_flow`` ticked a flow ``max_ticks`` times and it is still not finished."""


class FlowNotFoundError(EngineError, LookupError):
    """The store holds no flow with the given key."""


class FlowExistsError(EngineError):
    """``create_flow`` was given a flow whose key is already stored."""


class LeaseLostError(EngineError):
    """A runner's claim on a flow expired and was taken over; its changes were not saved."""
