"""Flows: the model (``Flow``, ``AtomicFlow``, ``CompositeFlow``), proxies, futures, and
``LocalRuntime`` for running flows in-process without serving."""

from ._base import AtomicFlow, Flow, error_reply, run_message
from ._composite import CompositeFlow, SubflowSpec, subflow_specs
from ._interfaces import KeyInterface
from ._local import LocalRuntime, resolve_flow_class, run_local
from ._transport import FlowFuture, FlowProxy, InstanceAddress, Transport, run_coroutine_sync

__all__ = [
    "AtomicFlow",
    "CompositeFlow",
    "Flow",
    "FlowFuture",
    "FlowProxy",
    "InstanceAddress",
    "KeyInterface",
    "LocalRuntime",
    "SubflowSpec",
    "Transport",
    "error_reply",
    "resolve_flow_class",
    "run_coroutine_sync",
    "run_local",
    "run_message",
    "subflow_specs",
]
