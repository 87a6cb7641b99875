"""The node HTTP API: flows served on a node, mounted and messaged by users of other nodes.

Every route acts for the signed caller (a user id: a public key, of this node or another).
The URL the mesh advertises for a served flow is ``{node}/endpoints/{endpoint}``.

- ``GET /endpoints/{endpoint}``: who serves it and what it is;
- ``POST /endpoints/{endpoint}/instances``: mount an instance (config overrides, initial state);
- ``POST /instances/{id}/messages``: deliver a message, taken once per sender and message id.
  ``?wait=seconds`` answers with the reply when it comes in time; otherwise poll
  ``GET /replies/{future_id}`` (``?wait=`` long-polls) or stream ``GET /replies/{future_id}/events``
  (server-sent events). A message with ``reply_to`` (a node URL) has its reply posted there;
- ``POST /replies``: a reply from another node to a message this node sent it;
- ``GET`` / ``DELETE /instances/{id}``: metadata and state, or deletion (the user serving the
  instance or the one who mounted it).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Annotated, Any, Literal, TypeVar

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel, Field, ValidationError
from starlette.background import BackgroundTask

from .._asgi import SignedCaller, signed_caller
from ..errors import ConfigurationError, FlowInstanceError, MessagingError
from ..messages import FUTURE_SEP, FlowMessage, ReplyMode
from ..runtime import (
    LINK_CLASS,
    EndpointRecord,
    Envelope,
    InstanceRecord,
    Node,
    ReplyRecord,
    normalize_node_url,
    reply_link_id,
)

__all__ = ["network_router"]

#: The longest ``wait`` a request may ask for, in seconds.
MAX_WAIT = 60.0
#: How long worker threads leave a new message to the request that queued it and waits.
HELP_EXPECTED = 0.002
#: The longest recent run (seconds) of an instance whose message the request that queued it
#: runs on the event loop itself, as :func:`_quick` runs statements: handing so short a run to a
#: thread and back costs more than the run.
INLINE_RUN = 0.001

T = TypeVar("T")


def _inline(node: Node) -> bool:
    """Whether the node's statements run on the event loop (see :func:`_quick`)."""
    return not node.backend.url.startswith("postgresql")


async def _quick(node: Node, fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)``: a few quick statements. On SQLite and memory they take microseconds, less
    than handing them to a thread (up to a millisecond on a busy machine), so they run here;
    PostgreSQL's round trips run in a thread, off the event loop."""
    if _inline(node):
        return fn(*args)
    return await asyncio.to_thread(fn, *args)


async def _signed_user(caller: SignedCaller) -> str:
    # Every route here acts for a user, so even an insecure (dev) app needs a signed request.
    if caller is None:
        raise HTTPException(401, "sign the request: every node API call acts for a user.")
    return caller


Caller = Annotated[str, Depends(_signed_user)]
Wait = Annotated[float, Query(ge=0, le=MAX_WAIT, description="seconds to wait for the reply")]


class EndpointOut(BaseModel):
    """A served endpoint: who serves it and with what class."""

    endpoint: str
    servers: list[str] = Field(description="ids of the users serving it here")
    flow_class_name: str
    singleton: bool


class MountIn(BaseModel):
    """What to mount: the serving user (default: the only user serving the endpoint), config
    overrides deep-merged over the class's config, and state over its initial state."""

    user_id: str | None = None
    config_overrides: dict[str, Any] = Field(default_factory=dict)
    initial_state: dict[str, Any] | None = None


class MountOut(BaseModel):
    """A mounted instance: its id, endpoint and serving user."""

    flow_id: str
    flow_endpoint: str
    user_id: str


class SendIn(BaseModel):
    """A message (the FlowMessage JSON) and, for another node's flow, where to post the reply."""

    message: dict[str, Any]
    reply_to: str | None = Field(None, description="the sender's node URL, for its reply")


class SendQuery(BaseModel):
    """The query of the message route."""

    wait: float = Field(0.0, ge=0, le=MAX_WAIT, description="seconds to wait for the reply")


#: The message route is the hot path: it reads its query and body itself (FastAPI's handling
#: of parameters costs more than the rest of the route), and they are documented here as
#: FastAPI would document them.
_SEND_OPENAPI: dict[str, Any] = {
    "parameters": [
        {"name": "flow_id", "in": "path", "required": True, "schema": {"type": "string"}},
        {
            "name": "wait",
            "in": "query",
            "required": False,
            "schema": SendQuery.model_json_schema()["properties"]["wait"],
        },
    ],
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": SendIn.model_json_schema()}},
    },
}

M = TypeVar("M", bound=BaseModel)


def _parsed(model: type[M], raw: bytes | dict[str, str], where: str) -> M:
    """``raw`` (a JSON body, or the query) as ``model``; 422 as FastAPI answers otherwise."""
    try:
        if isinstance(raw, bytes):
            return model.model_validate_json(raw)
        return model.model_validate(raw)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        raise RequestValidationError([{**e, "loc": (where, *e["loc"])} for e in errors]) from None


class SendOut(BaseModel):
    """A delivered message: ``accepted`` is False when it had been delivered before.
    ``reply`` is the reply when the request waited for it and it came in time."""

    message_id: str
    accepted: bool
    future_id: str | None = None
    reply: dict[str, Any] | None = None


class ReplyOut(BaseModel):
    """The reply to a message, when ``status`` is ``done``."""

    status: Literal["pending", "done"]
    reply: dict[str, Any] | None = None


class ReplyIn(BaseModel):
    """A reply from another node (the FlowMessage JSON)."""

    reply: dict[str, Any]


class InstanceOut(BaseModel):
    """An instance: where it is served, who mounted it, and its state."""

    flow_id: str
    flow_endpoint: str
    user_id: str
    client_id: str
    flow_class_name: str
    created_at: float
    state: dict[str, Any]


def _endpoint_records(node: Node, endpoint: str) -> list[EndpointRecord]:
    records = []
    for user in node.backend.list_users():
        record = node.backend.get_endpoint(user.user_id, endpoint)
        if record is not None and record.served:
            records.append(record)
    return records


def _instance(node: Node, flow_id: str) -> InstanceRecord:
    record = node.backend.get_instance(flow_id)
    if record is None or record.flow_class_name == LINK_CLASS:
        raise HTTPException(404, f"no flow instance {flow_id} on this node.")
    return record


@dataclass(frozen=True, slots=True)
class _Mounted:
    """What never changes of an instance: who serves it, who mounted it, its endpoint."""

    user_id: str
    client_id: str
    endpoint: str


def _mounted_facts(node: Node) -> Callable[[str], _Mounted]:
    """``flow_id`` -> the unchanging facts of that instance, kept for the instances messaged
    lately (bounded), so that the message route checks who may send without reading the
    instance (its state) every time. 404 if there is no such instance (a 404 is not kept); one
    deleted meanwhile is still found out: queueing to it answers 404."""

    @functools.lru_cache(maxsize=4096)
    def facts(flow_id: str) -> _Mounted:
        record = _instance(node, flow_id)
        return _Mounted(record.user_id, record.client_id, record.endpoint)

    return facts


def _owns(record: InstanceRecord | _Mounted, caller: str) -> bool:
    mounter = record.user_id if record.client_id == "local" else record.client_id
    return caller in (record.user_id, mounter)


def _message(raw: dict[str, Any]) -> FlowMessage:
    try:
        return FlowMessage.from_dict(raw)
    except MessagingError as exc:
        raise HTTPException(422, f"not a flow message: {exc}") from None


def _future_key(caller: str, future_id: str) -> str:
    # Futures of different callers never meet, and nobody reads another caller's reply.
    return f"{caller}/{future_id}"


def network_router(node: Node) -> APIRouter:
    """The node HTTP API of ``node`` (see the module doc)."""
    router = APIRouter(tags=["node"])
    backend = node.backend
    mounted = _mounted_facts(node)

    @router.get("/endpoints/{endpoint}", response_model=EndpointOut)
    async def describe(endpoint: str, caller: Caller) -> EndpointOut:
        """Who serves ``endpoint`` on this node (the URL the mesh lists for the flow)."""
        records = await _quick(node, _endpoint_records, node, endpoint)
        if not records:
            raise HTTPException(404, f"nobody serves {endpoint!r} on this node.")
        return EndpointOut(
            endpoint=endpoint,
            servers=[r.user_id for r in records],
            flow_class_name=records[0].flow_class_name,
            singleton=records[0].singleton,
        )

    @router.post("/endpoints/{endpoint}/instances", response_model=MountOut, status_code=201)
    def mount(endpoint: str, body: MountIn, caller: Caller) -> MountOut:
        """Mount an instance of ``endpoint`` for the caller."""
        serving = body.user_id
        if serving is None:
            servers = [r.user_id for r in _endpoint_records(node, endpoint)]
            if not servers:
                raise HTTPException(404, f"nobody serves {endpoint!r} on this node.")
            if len(servers) > 1:
                raise HTTPException(409, f"several users serve {endpoint!r}: name one (user_id).")
            serving = servers[0]
        try:
            flow_id = node.mount(
                caller, serving, endpoint, body.config_overrides, body.initial_state
            )
        except FlowInstanceError as exc:
            status = 404 if "Not serving at" in str(exc) or "No user" in str(exc) else 422
            raise HTTPException(status, str(exc)) from None
        return MountOut(flow_id=flow_id, flow_endpoint=endpoint, user_id=serving)

    @router.post(
        "/instances/{flow_id}/messages", response_model=SendOut, openapi_extra=_SEND_OPENAPI
    )
    async def send(request: Request) -> Response:
        """Deliver a message to an instance (once per sender and message id)."""
        caller = await _signed_user(await signed_caller(request))
        flow_id: str = request.path_params["flow_id"]
        wait = _parsed(SendQuery, dict(request.query_params), "query").wait
        body = _parsed(SendIn, await request.body(), "body")
        # A request that waits for its reply runs its message itself, here on the event loop
        # when the instance's runs are short, so this process's workers are not woken for it.
        runs = wait > 0 and node.has_workers
        out = await _quick(node, _deliver, node, mounted, flow_id, body, caller, runs)
        if out.future_id is None or wait <= 0:
            return Response(out.model_dump_json(), media_type="application/json")
        return await _answer(node, out, out.future_id, caller, flow_id, wait, runs)

    _add_reply_routes(router, node)

    @router.get("/instances/{flow_id}", response_model=InstanceOut)
    async def instance(flow_id: str, caller: Caller) -> InstanceOut:
        """An instance's metadata and state (for its server and the user who mounted it)."""
        record = await _quick(node, _owned, node, flow_id, caller)
        return InstanceOut(
            flow_id=record.flow_id,
            flow_endpoint=record.endpoint,
            user_id=record.user_id,
            client_id=record.client_id,
            flow_class_name=record.flow_class_name,
            created_at=record.created_at,
            state=record.state,
        )

    @router.delete("/instances/{flow_id}", status_code=204)
    async def delete(flow_id: str, caller: Caller) -> None:
        """Delete an instance (its server or the user who mounted it)."""
        record = await _quick(node, _owned, node, flow_id, caller)
        await _quick(node, backend.delete_instance, record.flow_id)

    return router


def _deliver(
    node: Node,
    mounted: Callable[[str], _Mounted],
    flow_id: str,
    body: SendIn,
    caller: str,
    runs: bool,
) -> SendOut:
    """Queue a message for an instance, rewriting where its reply goes (see the module doc);
    ``runs`` says the request runs a future's message itself (see :func:`_run_own`)."""
    backend = node.backend
    record = mounted(flow_id)
    if not _owns(record, caller) and not _is_singleton(node, record):
        raise HTTPException(403, f"user {caller} did not mount flow instance {flow_id}.")
    message = _message(body.message)
    mode = message.reply_data.get("mode")
    future_id = None
    if body.reply_to is not None:
        try:
            reply_to = normalize_node_url(body.reply_to, "reply_to")
        except ConfigurationError as exc:
            raise HTTPException(422, str(exc)) from None
        if mode != ReplyMode.NO_REPLY:
            link = _reply_link(node, record.user_id, reply_to)
            reply_data = {
                "mode": ReplyMode.PUSH.value,
                "user_id": record.user_id,
                "flow_id": link,
                "origin": message.reply_data,
            }
            message = message.replace(reply_data=reply_data)
    elif mode == ReplyMode.FUTURE:
        future_id = message.reply_data.get("future_id")
        if not isinstance(future_id, str) or not future_id:
            raise HTTPException(422, "a future reply needs reply_data.future_id.")
        message = message.replace(
            reply_data={**message.reply_data, "future_id": _future_key(caller, future_id)}
        )
    elif mode == ReplyMode.PUSH:
        raise HTTPException(422, "push replies go to a node: give reply_to.")
    # The sender is who signed, whatever the message says.
    message = message.replace(user_id=caller)
    key = f"message/{caller}/{message.message_id}"
    runs = runs and future_id is not None
    if runs:
        # Worker threads woken meanwhile (by other messages) leave this one to the request.
        node.help_expected_until = time.monotonic() + HELP_EXPECTED
    unknown = backend.enqueue_once(key, [Envelope(flow_id, message.to_json())], wake=not runs)
    if unknown:
        raise HTTPException(404, f"no flow instance {flow_id} on this node.")
    return SendOut(message_id=message.message_id, accepted=unknown is not None, future_id=future_id)


async def _answer(
    node: Node, out: SendOut, future_id: str, caller: str, flow_id: str, wait: float, runs: bool
) -> Response:
    """The answer to a delivered request that waits ``wait`` s for its reply (and runs its
    message itself if ``runs``)."""
    reply = None
    if runs and out.accepted:
        if _inline(node) and _quick_here(node, flow_id):
            reply = _run_own(node, caller, future_id, 2 * INLINE_RUN)
        else:
            reply = await asyncio.to_thread(_run_own, node, caller, future_id, None)
    if reply is not None:
        # Read, not taken: it is taken once the answer is out (and kept if it never is).
        key = _future_key(caller, future_id)
        return _with_reply(out, reply, BackgroundTask(_take, node, key))
    reply = await asyncio.to_thread(_wait_reply_json, node, caller, future_id, wait)
    if reply is None:
        return Response(out.model_dump_json(), media_type="application/json")
    return _with_reply(out, reply)


def _quick_here(node: Node, flow_id: str) -> bool:
    """Whether ``flow_id``'s runs here lately took at most :data:`INLINE_RUN`."""
    for worker in node.workers:
        took = worker.dispatcher.recent_run(flow_id)
        if took is not None and took <= INLINE_RUN:
            return True
    return False


def _run_own(node: Node, caller: str, future_id: str, within: float | None) -> str | None:
    """Run a message of this process's workers (most likely the caller's own, queued without
    waking them: a hand-off between threads costs more than the run), expected to take
    ``within`` seconds if given; the reply (its JSON, left in place) if it is in then.

    If it is not (another message ran, or none fitted), the workers are woken for the
    caller's message, which was queued without waking them.
    """
    reply = None
    try:
        with node.helping():
            _run_one(node, within)
        reply = node.backend.peek_reply(_future_key(caller, future_id))
    finally:
        if reply is None:
            node.backend.wake()
    return reply


async def _take(node: Node, key: str) -> None:
    """Drop the reply stored under ``key`` (sent already)."""
    await _quick(node, node.backend.take_reply, key)


def _with_reply(out: SendOut, reply: str, background: BackgroundTask | None = None) -> Response:
    """``out`` with ``reply`` (a stored FlowMessage JSON, written by this node) as the answer:
    the reply goes out as stored, neither parsed nor validated again (it is most of the body).
    ``background`` runs once the answer is sent."""
    head = out.model_dump_json(exclude={"reply"})
    return Response(
        f'{head[:-1]},"reply":{reply}}}', media_type="application/json", background=background
    )


def _run_one(node: Node, within: float | None) -> None:
    """Run one claimable message of this process's dispatch workers, if there is one (expected
    to take ``within`` seconds, if given)."""
    for worker in node.workers:
        dispatcher = worker.dispatcher
        if not dispatcher.stopping and dispatcher.run_batch(limit=1, within=within):
            return


def _add_reply_routes(router: APIRouter, node: Node) -> None:
    """The routes of replies: polled, streamed, and received from other nodes."""
    backend = node.backend

    @router.get("/replies/{future_id}", response_model=ReplyOut)
    async def reply(future_id: str, caller: Caller, wait: Wait = 0.0) -> ReplyOut:
        """The reply to a message the caller sent (``wait``: long-poll that many seconds)."""
        if wait > 0:
            data = await asyncio.to_thread(_wait_reply, node, caller, future_id, wait)
        else:
            data = await _quick(node, _wait_reply, node, caller, future_id, 0.0)
        return ReplyOut(status="pending" if data is None else "done", reply=data)

    @router.get("/replies/{future_id}/events", response_class=StreamingResponse)
    async def reply_events(future_id: str, caller: Caller, wait: Wait = MAX_WAIT) -> Any:
        """The reply as server-sent events: ``pending`` each second, then one ``reply``."""
        key = _future_key(caller, future_id)

        async def events() -> AsyncIterator[str]:
            deadline = time.monotonic() + wait
            while True:
                body = await asyncio.to_thread(backend.take_reply, key)
                if body is not None:
                    yield f"event: reply\ndata: {body}\n\n"
                    return
                if time.monotonic() >= deadline:
                    yield "event: timeout\ndata: {}\n\n"
                    return
                yield "event: pending\ndata: {}\n\n"
                await asyncio.to_thread(backend.wait_for_reply, key, 1.0)

        return StreamingResponse(events(), media_type="text/event-stream")

    @router.post("/replies", status_code=202)
    async def receive_reply(body: ReplyIn, caller: Caller) -> dict[str, bool]:
        """A reply from another node to a message this node sent it (taken once)."""
        return await _quick(node, _take_reply, node, body, caller)


def _take_reply(node: Node, body: ReplyIn, caller: str) -> dict[str, bool]:
    """Store a reply from another node (see ``POST /replies``)."""
    message = _message(body.reply)
    mode = message.reply_data.get("mode")
    if not message.is_reply or mode not in (ReplyMode.FUTURE, ReplyMode.PUSH):
        raise HTTPException(422, "not a reply to a future or a flow of this node.")
    envelopes, records = [], []
    if mode == ReplyMode.FUTURE:
        future_id = message.reply_data.get("future_id")
        if not isinstance(future_id, str) or FUTURE_SEP not in future_id:
            raise HTTPException(422, "a future reply needs reply_data.future_id (id@instance).")
        # A future is bound to the instance its request went to: here, a link to the remote
        # instance that must have answered, served by the user who signed.
        link = node.backend.get_instance(future_id.rsplit(FUTURE_SEP, 1)[1])
        if link is None or not _answers_for(link, message, caller):
            raise HTTPException(403, f"user {caller} may not answer future {future_id}.")
        records.append(ReplyRecord(future_id, message.to_json()))
    else:
        target = message.reply_data.get("flow_id")
        record = node.backend.get_instance(target) if isinstance(target, str) else None
        if record is None:
            raise HTTPException(404, f"no flow instance {target} on this node.")
        if not _links_to(node, record, message, caller):
            raise HTTPException(
                403, f"flow instance {target} has no subflow that {caller} answers for."
            )
        envelopes.append(Envelope(record.flow_id, message.to_json()))
    key = f"reply/{caller}/{message.message_id}"
    stored = node.backend.enqueue_once(key, envelopes, records)
    return {"accepted": stored is not None}


def _answers_for(link: InstanceRecord, reply: FlowMessage, caller: str) -> bool:
    """True if ``reply``, signed by ``caller``, comes from the remote instance ``link`` stands
    for."""
    return (
        link.flow_class_name == LINK_CLASS
        and link.config.get("remote_user_id") == caller
        and link.config.get("remote_flow_id") == reply.src_flow_id
    )


def _links_to(node: Node, record: InstanceRecord, reply: FlowMessage, caller: str) -> bool:
    """True if the composite ``record`` has a subflow on another node that ``reply`` (signed by
    ``caller``) comes from: only its answers may be pushed into it."""
    subflows = record.config.get("subflows_config")
    if not isinstance(subflows, dict):
        return False
    for entry in subflows.values():
        flow_id = entry.get("flow_id") if isinstance(entry, dict) else None
        link = node.backend.get_instance(flow_id) if isinstance(flow_id, str) else None
        if link is not None and _answers_for(link, reply, caller):
            return True
    return False


def _owned(node: Node, flow_id: str, caller: str) -> InstanceRecord:
    record = _instance(node, flow_id)
    if not _owns(record, caller):
        raise HTTPException(403, f"user {caller} neither serves nor mounted instance {flow_id}.")
    return record


def _is_singleton(node: Node, record: InstanceRecord | _Mounted) -> bool:
    endpoint = node.backend.get_endpoint(record.user_id, record.endpoint)
    return endpoint is not None and endpoint.singleton and endpoint.served


def _wait_reply(node: Node, caller: str, future_id: str, wait: float) -> dict[str, Any] | None:
    """The reply for the caller's future, waiting up to ``wait`` seconds; None if none came."""
    body = _wait_reply_json(node, caller, future_id, wait)
    return None if body is None else dict(json.loads(body))


def _wait_reply_json(node: Node, caller: str, future_id: str, wait: float) -> str | None:
    """As :func:`_wait_reply`, the reply as stored (its JSON)."""
    key = _future_key(caller, future_id)
    deadline = time.monotonic() + wait
    while True:
        body = node.backend.take_reply(key)
        if body is not None:
            return body
        left = deadline - time.monotonic()
        if left <= 0 or node.closed:
            return None
        node.backend.wait_for_reply(key, min(left, 1.0))


def _reply_link(node: Node, user_id: str, node_url: str) -> str:
    """The instance of ``user_id`` carrying replies to ``node_url`` (mounted on first use)."""
    from ..errors import DuplicateKeyError

    flow_id = reply_link_id(user_id, node_url)
    if node.backend.get_instance(flow_id) is None:
        record = InstanceRecord(
            flow_id=flow_id,
            user_id=user_id,
            endpoint=f"replies@{node_url}",
            client_id="local",
            flow_class_name=LINK_CLASS,
            config={
                "name": "replies",
                "description": f"replies to {node_url}",
                "flow_id": flow_id,
                "node_url": node_url,
                "role": "replies",
            },
            state={},
            dispatch_point="default",
            dispatch_point_override=None,
            # Replies are independent of each other: several go out at once.
            parallel_dispatch=True,
            created_at=time.time(),
        )
        # Another request may have mounted it meanwhile.
        with contextlib.suppress(DuplicateKeyError):
            node.backend.add_instances([record])
    return flow_id
