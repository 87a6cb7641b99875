"""The public API is curated: ``flowplex.__all__`` is pinned here, and every name resolves."""

from __future__ import annotations

import flowplex
import flowplex.flows

EXPECTED = [
    "AtomicFlow",
    "BackendError",
    "ClassPathError",
    "Client",
    "CompositeFlow",
    "ConfigurationError",
    "Flow",
    "FlowDefinitionError",
    "FlowError",
    "FlowFuture",
    "FlowInstanceError",
    "FlowMessage",
    "FlowProxy",
    "FlowStateError",
    "FlowTimeoutError",
    "FlowplexError",
    "InterfaceError",
    "KeyInterface",
    "LocalRuntime",
    "MessagingError",
    "PermissionDeniedError",
    "RemoteClient",
    "RemoteError",
    "ReplyMode",
    "Settings",
    "SignatureError",
    "UnknownInstanceError",
    "__version__",
    "connect",
    "deep_merge",
    "load_yaml",
    "resolve_class_path",
    "run_local",
    "start_node",
    "start_node_with_users",
]


def test_all_is_pinned() -> None:
    assert sorted(flowplex.__all__) == EXPECTED


def test_every_exported_name_resolves_and_is_documented() -> None:
    for name in flowplex.__all__:
        obj = getattr(flowplex, name)
        if name != "__version__":
            assert obj.__doc__, f"flowplex.{name} has no docstring"


def test_subpackage_exports_resolve() -> None:
    for name in flowplex.flows.__all__:
        assert getattr(flowplex.flows, name) is not None
