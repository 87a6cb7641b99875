"""The serving runtime: nodes and client handles, mounting, dispatch, and the storage seam.

There is one runtime. A :class:`LocalRuntime` is a node of it on an in-memory database whose
callers run the messages; a served node has dispatch workers (threads or processes) do it.

What other packages use is exported here; the modules behind it are private. Backends are
chosen by URL with :func:`open_backend`; the SQL ones are imported only when asked for, so
``import flowplex`` loads no database driver.
"""

from __future__ import annotations

from ._backend import (
    DEFAULT_LOG_LIMIT,
    LOG_PRUNE_EVERY,
    LOG_TEXT_LIMIT,
    RECEIVED_KEEP,
    RECEIVED_PRUNE_EVERY,
    Backend,
    Completion,
    DeadLetter,
    Delivery,
    EndpointRecord,
    Envelope,
    InstanceRecord,
    InstanceStats,
    LogEntry,
    ReplyRecord,
    UserRecord,
)
from ._client import Client
from ._dispatch import (
    DEFAULT_LEASE_SECONDS,
    DEFAULT_MAX_DELIVERIES,
    Dispatcher,
    DispatchWorker,
)
from ._local import FlowRef, LocalRuntime, run_local
from ._node import Node, open_node, start_node, start_node_with_users
from ._open import open_backend
from ._remote import (
    LINK_CLASS,
    NodeAPI,
    RemoteClient,
    RemoteLink,
    connect,
    local_key,
    node_api,
    normalize_node_url,
    reply_link_id,
    resolve_flow,
)

__all__ = [
    "DEFAULT_LEASE_SECONDS",
    "DEFAULT_LOG_LIMIT",
    "DEFAULT_MAX_DELIVERIES",
    "LINK_CLASS",
    "LOG_PRUNE_EVERY",
    "LOG_TEXT_LIMIT",
    "RECEIVED_KEEP",
    "RECEIVED_PRUNE_EVERY",
    "Backend",
    "Client",
    "Completion",
    "DeadLetter",
    "Delivery",
    "DispatchWorker",
    "Dispatcher",
    "EndpointRecord",
    "Envelope",
    "FlowRef",
    "InstanceRecord",
    "InstanceStats",
    "LocalRuntime",
    "LogEntry",
    "Node",
    "NodeAPI",
    "RemoteClient",
    "RemoteLink",
    "ReplyRecord",
    "UserRecord",
    "connect",
    "local_key",
    "node_api",
    "normalize_node_url",
    "open_backend",
    "open_node",
    "reply_link_id",
    "resolve_flow",
    "run_local",
    "start_node",
    "start_node_with_users",
]
