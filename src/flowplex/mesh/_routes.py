"""The mesh's HTTP routes as a FastAPI router over a :class:`MeshService`.

Client mistakes get 4xx with a JSON ``detail``: 404 for registry routes on a node, 422 for a
malformed body (pydantic's shape checks, then the records' own rules), 403 for an update from a
registry that never connected or a signer that may not write, 401 for an unsigned or invalid
signature, 413 for a body over the size limit, 429 for a client writing
faster than the rate limit (with ``Retry-After``), 503 for a new peer beyond ``max_peers``.

The state-changing routes (``/register``, ``/heartbeat``, ``/connect``, ``/update/node``) are
guarded in one place: the rate limit and the body size are checked before the body is read
(:class:`_WriteRoute`), then the ``write_guards`` dependencies run (the registry-only check,
and whatever the caller adds, e.g. a request-signature check) before the handler.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Coroutine, Sequence
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Depends, HTTPException, Query, Request
from fastapi.params import Depends as DependsParam
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel, ConfigDict
from starlette.responses import Response

from .._asgi import PROBLEM_RESPONSES, read_body, signed_caller
from ..errors import PermissionDeniedError
from ._html import render_flows
from ._listing import counts, list_rows
from ._records import MeshInputError, NodeRecord, nodes_from_json, normalize_service_url
from ._service import MeshService
from ._state import UnknownSenderError

__all__ = ["mesh_router"]

Flows = list[dict[str, Any]] | dict[str, dict[str, Any]] | None


class NodeIn(BaseModel):
    """``POST /register``: a node and its flows (a list, or a dict keyed by url)."""

    model_config = ConfigDict(extra="allow")
    url: str
    organization: str | None = None
    flows: Flows = None


class HeartbeatIn(BaseModel):
    """``POST /heartbeat``: a registered node is alive."""

    url: str


class OfferIn(BaseModel):
    """``POST /connect``: a registry's offer; ``feed`` asks for the receiver's offer back.

    ``key``: the registry's key (user id), when an operator signs the connect on its behalf."""

    model_config = ConfigDict(extra="allow")
    url: str
    organization: str | None = None
    key: str | None = None
    feed: bool = True
    nodes: list[dict[str, Any]] | dict[str, dict[str, Any]] | None = None


class UpdateIn(OfferIn):
    """``POST /update/node``: node changes forwarded by a peer (``id``/``visited``: loop guard)."""

    feed: bool = False
    id: str | None = None
    visited: list[str] = []


def _invalid(exc: MeshInputError) -> HTTPException:
    return HTTPException(status_code=422, detail=str(exc))


def _denied(exc: PermissionDeniedError) -> HTTPException:
    return HTTPException(status_code=403, detail=str(exc))


#: The verified signer of a write (None: unsigned, accepted in insecure mode only).
Caller = Annotated[str | None, Depends(signed_caller)]


def _write_route(service: MeshService) -> type[APIRoute]:
    """The route class of the mesh router: on the write routes, the client's rate and the body
    size are checked before the body is read (pydantic and the guards come after)."""
    limits = {
        "/register": service.max_register_bytes,
        "/heartbeat": service.max_register_bytes,
        "/connect": service.max_peer_bytes,
        "/update/node": service.max_peer_bytes,
    }

    class _WriteRoute(APIRoute):
        def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
            handler = super().get_route_handler()
            limit = limits.get(self.path)
            if limit is None or "POST" not in (self.methods or ()):
                return handler

            async def guarded(request: Request) -> Response:
                client = request.client.host if request.client is not None else "unknown"
                wait = service.writes.take(client)
                if wait > 0:
                    raise HTTPException(
                        429,
                        detail=f"too many writes from {client}: retry in {wait:.1f} s",
                        headers={"Retry-After": str(math.ceil(wait))},
                    )
                await read_body(request, limit)
                return await handler(request)

            return guarded

    return _WriteRoute


def mesh_router(  # noqa: PLR0915 - one closure per route
    service: MeshService, write_guards: Sequence[DependsParam] = ()
) -> APIRouter:
    """The routes of a mesh node/registry: ``/``, ``/flows``, ``/counts``, ``/map``, ``/_cache``,
    ``/_stats``, ``POST /register``, ``/heartbeat``, ``/connect``, ``/update/node``.

    ``write_guards`` are FastAPI dependencies (``Depends(...)``) run on every write route
    after the registry-only check. Every write route is signed (``signed_caller``) and
    checks who signed it: the node's pinned key, a configured peer's, an operator's (403).
    """
    state = service.state
    router = APIRouter(route_class=_write_route(service), responses=PROBLEM_RESPONSES)

    def require_registry(request: Request) -> None:
        if not state.registry:
            raise HTTPException(
                status_code=404,
                detail=f"{state.url} is not a registry: {request.url.path} is served by registries",
            )

    registry_only = [Depends(require_registry)]
    writes = [*registry_only, *write_guards]

    @router.get("/")
    async def status() -> JSONResponse:
        """The service: url, organization, roles, connections, ``idle``, times."""
        return JSONResponse(service.status())

    @router.get("/flows", response_model=None)
    async def flows(
        request: Request,
        q: Annotated[str | None, Query(description="query expression (or full text)")] = None,
        by: Annotated[str | None, Query(description="sort: field[:asc|desc], ...")] = None,
        p: Annotated[int, Query(ge=0, description="page, from 0")] = 0,
        pp: Annotated[int, Query(ge=1, le=10_000, description="rows per page")] = 10,
        format: Annotated[Literal["json", "html"] | None, Query()] = None,
    ) -> JSONResponse | HTMLResponse:
        """The flows this service knows, one row per flow: query, sort, page, JSON or HTML."""
        page = list_rows(state.rowset(), q, by, p, pp)
        accept = request.headers.get("accept", "")
        if format == "html" or (format is None and "text/html" in accept):
            return HTMLResponse(render_flows(page, state.url, query=q, by=by))
        return JSONResponse(page)

    @router.get("/counts")
    async def flow_counts() -> JSONResponse:
        """Flows in total, per node, per organization and per tag."""
        return JSONResponse(counts(state.rowset()))

    @router.get("/map")
    async def mesh_map() -> JSONResponse:
        """What this service knows, by source: its nodes and its providers' nodes."""
        return JSONResponse(state.map())

    @router.get("/_cache", dependencies=registry_only)
    async def cache() -> JSONResponse:
        """The registry's durable state, as written to its cache file."""
        return JSONResponse(state.snapshot())

    @router.get("/_stats")
    async def stats() -> JSONResponse:
        """Counters of the peering protocol (updates received, applied, ignored, sent, ...)."""
        return JSONResponse({**state.stats, "idle": service.idle, "peers": sorted(state.peers)})

    @router.post("/register", dependencies=writes)
    async def register(body: Annotated[NodeIn, Body()], caller: Caller) -> JSONResponse:
        """A node registers (or re-registers) its flows; the registry feeds it forward.

        Signed by the node's key: the first registration of a URL pins it."""
        try:
            data = body.model_dump()
            node = NodeRecord.from_json(
                {**data, "created": None, "modified": None, "heartbeat": None, "registry": None}
            )
            service.authorize_node(node.url, caller, register=True)
        except MeshInputError as exc:
            raise _invalid(exc) from None
        except PermissionDeniedError as exc:
            raise _denied(exc) from None
        received = len(body.flows or ())
        messages, out = state.register(node, received)
        service.dispatch(out)
        return JSONResponse(service.status(messages))

    @router.post("/heartbeat", dependencies=writes)
    async def heartbeat(body: Annotated[HeartbeatIn, Body()], caller: Caller) -> JSONResponse:
        """A registered node is alive; 404 when this registry does not know it."""
        try:
            url = normalize_service_url(body.url, "node url")
            if url in state.nodes and caller is not None and url not in state.keys:
                # Registered before keys were pinned (an older cache, insecure mode): the node
                # registers again, signed, and its key is pinned then.
                raise HTTPException(404, detail=f"node {url} has no key here: POST /register")
            if url in state.nodes:
                service.authorize_node(url, caller, register=False)
        except MeshInputError as exc:
            raise _invalid(exc) from None
        except PermissionDeniedError as exc:
            raise _denied(exc) from None
        if not state.heartbeat(url):
            raise HTTPException(404, detail=f"unknown node {url}: POST /register first")
        return JSONResponse({"url": url, "heartbeat": state.nodes[url].heartbeat})

    @router.post("/connect", dependencies=writes)
    async def connect(body: Annotated[OfferIn, Body()], caller: Caller) -> JSONResponse:
        """A peer registry connects with its offer; with ``feed`` it gets this registry's offer.

        Only configured peers (signing with their key) or an operator's signature may connect."""
        try:
            sender = normalize_service_url(body.url, "registry url")
            nodes = nodes_from_json(body.nodes)
        except MeshInputError as exc:
            raise _invalid(exc) from None
        if sender == state.url:
            raise HTTPException(422, detail=f"{sender} cannot connect to itself")
        try:
            service.authorize_peer(sender, caller, body.key)
        except PermissionDeniedError as exc:
            raise _denied(exc) from None
        if not state.can_add_peer(sender):
            raise HTTPException(
                503, detail=f"{state.url} has {state.max_peers} peers already: try another"
            )
        reply, out = state.accept_connect(sender, body.organization, body.feed, nodes)
        service.dispatch(out)
        return JSONResponse(reply)

    @router.post("/update/node", dependencies=writes)
    async def update_node(body: Annotated[UpdateIn, Body()], caller: Caller) -> JSONResponse:
        """A peer forwards node changes; applied and forwarded at most once per update id.

        Signed by the peer registry's key (pinned when it connected)."""
        try:
            sender = normalize_service_url(body.url, "registry url")
            nodes = nodes_from_json(body.nodes)
        except MeshInputError as exc:
            raise _invalid(exc) from None
        try:
            if sender in state.peers:
                service.authorize_update(sender, caller)
        except PermissionDeniedError as exc:
            raise _denied(exc) from None
        try:
            messages, out = state.apply_update(sender, body.id, body.visited, nodes)
        except UnknownSenderError as exc:
            raise HTTPException(403, detail=str(exc)) from None
        service.dispatch(out)
        return JSONResponse(service.status(messages))

    return router
