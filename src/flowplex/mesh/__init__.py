"""The registry mesh (seed 002): nodes publish flows, registries list them and peer.

``run_service`` serves a node and/or registry over HTTP. A node registers its flows (from a
loader, or the endpoints served on its flowplex node database) with its registries and
heartbeats; registries connect to each other and forward node updates, each update applied and
forwarded at most once per registry, in any topology. ``/flows`` lists every known flow with a
safe query language (:func:`compile_query`), sorting, paging and an HTML view.

The pure parts (records, query, listing, peering state) import no web library; the service,
routes and client use FastAPI, uvicorn and httpx (the ``server`` extra).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._cache import CacheError, JsonCache
from ._listing import DEFAULT_BY, SortError, counts, list_rows, parse_by
from ._loader import NodeEndpoints, resolve_loader
from ._query import FIELDS, QueryError, compile_query
from ._records import FlowRecord, MeshInputError, NodeRecord, ProviderRecord
from ._run import run_service
from ._state import MeshState, Outgoing, UnknownSenderError

if TYPE_CHECKING:
    from ._routes import mesh_router
    from ._service import MeshService

__all__ = [
    "DEFAULT_BY",
    "FIELDS",
    "CacheError",
    "FlowRecord",
    "JsonCache",
    "MeshInputError",
    "MeshService",
    "MeshState",
    "NodeEndpoints",
    "NodeRecord",
    "Outgoing",
    "ProviderRecord",
    "QueryError",
    "SortError",
    "UnknownSenderError",
    "compile_query",
    "counts",
    "list_rows",
    "mesh_router",
    "parse_by",
    "resolve_loader",
    "run_service",
]


def __getattr__(name: str) -> Any:
    # The service and routes need httpx/FastAPI: load them only when asked for.
    if name == "MeshService":
        from ._service import MeshService

        return MeshService
    if name == "mesh_router":
        from ._routes import mesh_router

        return mesh_router
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
