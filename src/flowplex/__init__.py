"""flowplex: define, serve, discover, compose and run flows across users and machines.

Layering: this package and its core modules (``errors``, ``config``, ``messages``, ``flows``)
import no web framework, database driver or CLI library. Adapters (SQL backends, the HTTP
server, clients, the CLI) import the core, never the reverse; ``tests/test_layering.py``
enforces it.
"""

from ._version import __version__
from .config import Settings, deep_merge, load_yaml, resolve_class_path
from .errors import (
    BackendError,
    ClassPathError,
    ConfigurationError,
    FlowDefinitionError,
    FlowError,
    FlowInstanceError,
    FlowplexError,
    FlowStateError,
    FlowTimeoutError,
    InterfaceError,
    MessagingError,
    PermissionDeniedError,
    RemoteError,
    SignatureError,
    UnknownInstanceError,
)
from .flows import (
    AtomicFlow,
    CompositeFlow,
    Flow,
    FlowFuture,
    FlowProxy,
    KeyInterface,
)
from .messages import FlowMessage, ReplyMode
from .runtime import (
    Client,
    LocalRuntime,
    RemoteClient,
    connect,
    run_local,
    start_node,
    start_node_with_users,
)

__all__ = [
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
