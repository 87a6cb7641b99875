"""The registry mesh: nodes publish flows, registries list them and peer.

``run_service`` serves a node and/or registry over HTTP. A node registers its flows (from a
loader, or the endpoints served on its flowplex node database) with its registries and
heartbeats; registries connect to each other and forward node updates, each update applied and
forwarded at most once per registry, in any topology. ``/flows`` lists every known flow with a
safe query language (:func:`compile_query`), sorting, paging and an HTML view; ``/map`` shows
the nodes registered here and each direct peer with the nodes it sent.

**URLs.** Service URLs are strings or URL objects (``httpx.URL``...), kept in one canonical
spelling so a host is one peer however it is written: lower case, default ports and trailing
``/`` dropped, and ``127.0.0.1`` in any notation (``127.1``, ``0x7f000001``, ``2130706433``)
spelled ``localhost``.

**The query language** (``/flows?q=...``, no ``eval``)::

    organization == "node1" and not tag("beta")
    description ~ "report"                  contains, ignoring case (plain text, no regex)
    organization in ["node1", "node2"]      equals one of them
    "report" in description                 contains, ignoring case (tags: one tag equals it)
    author == ""                            flows that name no author

``==``, ``!=``, ``<``, ``<=``, ``>``, ``>=`` compare text; ``and``/``&``, ``or``/``|``,
``not`` and a prefix ``~`` combine; ``tag("x")`` (also ``@tag("x")``) tests a tag. ``~``
between two operands is "contains" and in front of an expression "not", so both readings
stay available. A missing value (no author, no organization) is null, which equals both
``null`` and ``""``: that is what a reader of ``author == ""`` means, while "missing author"
is only what the listing shows, so ``author == "missing author"`` matches a flow only if its
author is that text. An invalid ``q`` falls back to a full-text search and says why in the
reply's ``q``.

**Trust.** Every write is signed (RFC 9421, Ed25519; see :mod:`flowplex.identity`): a node's
first registration pins its key to its URL (or ``trust`` lists the keys that may register),
``/connect`` is accepted from configured peers (``connect``, ``peers``) or an ``operators``
key, and a peer's relayed updates must carry its pinned key; ``insecure=True`` accepts the old
unsigned protocol. Beyond signatures, a registry is the authority for the nodes registered
with it:
copies relayed back by peers never override them, a copy from a node's home registry outranks
copies relayed by others, timestamps a peer sends are clamped to the receiver's clock (plus
``clock_skew``), and a node silent for ``offline_remove_after`` is removed. Peers are limited
in number, in concurrent requests and in time, and dropped after repeated failures; write
routes are rate-limited per client (429) and size-limited (413). The registry cache is
written in the background, off the request path, and on shutdown.

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
from ._resolve import resolve
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
    "resolve",
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
