"""Flows: the model (``Flow``, ``AtomicFlow``, ``CompositeFlow``), proxies, futures, and the
``Transport`` seam to whatever runs them. Nothing here runs a flow: that is
:mod:`flowplex.runtime`'s job (``flowplex.LocalRuntime`` runs them in-process)."""

from ._base import AtomicFlow, Flow, build_flow, error_reply, rollback_state, run_message
from ._composite import CompositeFlow, SubflowSpec, subflow_specs
from ._interfaces import KeyInterface
from ._transport import FlowFuture, FlowProxy, InstanceAddress, Transport, run_coroutine_sync

__all__ = [
    "AtomicFlow",
    "CompositeFlow",
    "Flow",
    "FlowFuture",
    "FlowProxy",
    "InstanceAddress",
    "KeyInterface",
    "SubflowSpec",
    "Transport",
    "build_flow",
    "error_reply",
    "rollback_state",
    "run_coroutine_sync",
    "run_message",
    "subflow_specs",
]
