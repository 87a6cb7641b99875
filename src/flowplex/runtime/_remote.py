"""Flows on other nodes: the client of the node HTTP API, the links that carry messages to and
from other nodes, and :func:`connect`.

A composite whose subflow lives on another node talks to a *link*: a local instance of
:class:`RemoteLink` standing for the remote one. What the composite sends to it is queued in
the node's own database, in the same transaction as the composite's new state, so the queue
is the outbox: the link's run hands the message to the other node (retrying while that node
cannot be reached) and is acknowledged only once the other node has taken it. The receiving
node takes each message once, by its sender and message id (:meth:`Backend.enqueue_once`),
however often it arrives. Replies travel back the same way: the receiving node addresses them
to a *reply link* of its own, which posts them to the sender's ``/replies``.

httpx is imported only when a request is made, so ``import flowplex`` stays light.
"""

from __future__ import annotations

import asyncio
import atexit
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import quote

from ..errors import (
    ConfigurationError,
    FlowInstanceError,
    FlowTimeoutError,
    MessagingError,
    RemoteError,
)
from ..flows import AtomicFlow, FlowProxy, InstanceAddress
from ..identity import KeyPair, is_user_id
from ..messages import FlowMessage, ReplyMode

if TYPE_CHECKING:
    import httpx

    from ._node import Node

__all__ = [
    "LINK_CLASS",
    "NodeAPI",
    "RemoteClient",
    "RemoteLink",
    "connect",
    "local_key",
    "node_api",
    "normalize_node_url",
    "reply_link_id",
    "resolve_flow",
]

#: The class a link instance runs (a dotted path, as the instances table stores it).
LINK_CLASS = "flowplex.runtime._remote.RemoteLink"
#: How long a handle outside a dispatcher retries a node it cannot reach.
RETRY_FOR = 45.0
#: How long a link's run retries a node it cannot reach (at most half the message's lease).
RETRY_IN_RUN = 5.0
#: Seconds an HTTP request to another node may take (a long-poll adds its wait).
REQUEST_TIMEOUT = 10.0
#: The longest single long-poll for a reply; longer waits poll again.
LONG_POLL = 10.0

_LINK_NAMESPACE = uuid.UUID("0c3a5f7e-2b1d-4e8a-9f60-7d45c2b1e9a3")


def normalize_node_url(url: object, what: str = "node_url") -> str:
    """``url`` without a trailing ``/``; :class:`ConfigurationError` unless it is http(s)."""
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise ConfigurationError(f"{what} must be an http(s) URL, got {url!r}.")
    return url.rstrip("/")


def local_key(node: Node, user_id: str) -> KeyPair:
    """The key pair of ``user_id``, a user of ``node``: what this node signs its requests with
    (:class:`~flowplex.errors.PermissionDeniedError` when this process holds no key for it)."""
    return node.key_for(user_id)


def _auth(key: KeyPair) -> httpx.Auth:
    from .._httpsign import SigningAuth

    return SigningAuth(key)


class NodeAPI:
    """A signed HTTP client of one node's API (``base_url``), acting as the user of ``key``.

    Every failure is a :class:`~flowplex.RemoteError`: ``retryable`` when the node could not be
    reached or answered 5xx (the same request may succeed later), not when it refused (4xx,
    whose ``detail`` the error carries).
    """

    def __init__(self, base_url: str, key: KeyPair, *, timeout: float = REQUEST_TIMEOUT) -> None:
        import httpx

        self.base_url = normalize_node_url(base_url)
        self.key = key
        self._http = httpx.Client(
            base_url=self.base_url, auth=_auth(key), timeout=timeout, trust_env=False
        )

    def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, Any] | None = None,
        timeout: float | None = None,
    ) -> Any:
        """Send a request; its JSON answer, or :class:`RemoteError`."""
        import httpx

        extra: dict[str, Any] = {}
        if timeout is not None:
            extra["timeout"] = timeout
        try:
            response = self._http.request(method, path, json=json, params=params, **extra)
        except httpx.HTTPError as exc:
            raise RemoteError(
                f"{method} {self.base_url}{path}: the node cannot be reached ({exc!r}).",
                retryable=True,
            ) from exc
        if response.status_code >= 400:
            try:
                detail = response.json().get("detail", response.text)
            except ValueError:
                detail = response.text
            raise RemoteError(
                f"{method} {self.base_url}{path} answered {response.status_code}: {detail}",
                status=response.status_code,
                retryable=response.status_code >= 500,
            )
        return response.json() if response.content else None

    def mount(
        self,
        endpoint: str,
        user_id: str | None = None,
        config_overrides: Mapping[str, Any] | None = None,
        initial_state: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Mount an instance of ``endpoint`` (served by ``user_id``, or its only server)."""
        body = {
            "user_id": user_id,
            "config_overrides": dict(config_overrides or {}),
            "initial_state": None if initial_state is None else dict(initial_state),
        }
        answer: dict[str, Any] = self.request(
            "POST", f"/endpoints/{quote(endpoint, safe='')}/instances", json=body
        )
        return answer

    def send(
        self,
        flow_id: str,
        message: FlowMessage,
        *,
        reply_to: str | None = None,
        wait: float = 0.0,
    ) -> dict[str, Any]:
        """Deliver ``message`` to instance ``flow_id`` (taken once, however often sent); with
        ``wait``, the answer carries the reply (``"reply"``) if it comes within that time."""
        body = {"message": message.to_dict(), "reply_to": reply_to}
        # The query written out: merging ``params`` into the URL costs more than the rest.
        query = f"?wait={float(wait)!r}" if wait else ""
        answer: dict[str, Any] = self.request(
            "POST",
            f"/instances/{quote(flow_id, safe='')}/messages{query}",
            json=body,
            timeout=REQUEST_TIMEOUT + wait,
        )
        return answer

    def reply(self, future_id: str, wait: float) -> FlowMessage | None:
        """The reply for ``future_id`` (sent by this key's user), waiting up to ``wait`` s."""
        answer = self.request(
            "GET",
            f"/replies/{quote(future_id, safe='')}",
            params={"wait": wait},
            timeout=REQUEST_TIMEOUT + wait,
        )
        if answer.get("status") != "done":
            return None
        return FlowMessage.from_dict(answer["reply"])

    def deliver_reply(self, reply: FlowMessage) -> None:
        """Hand ``reply`` to the node that sent the request it answers."""
        self.request("POST", "/replies", json={"reply": reply.to_dict()})

    def close(self) -> None:
        """Close the connections."""
        self._http.close()


_APIS: dict[tuple[str, str], NodeAPI] = {}
_APIS_LOCK = threading.Lock()


def node_api(base_url: str, key: KeyPair) -> NodeAPI:
    """A :class:`NodeAPI` shared in this process per node and user (its connections kept alive)."""
    cache_key = (normalize_node_url(base_url), key.user_id)
    with _APIS_LOCK:
        api = _APIS.get(cache_key)
        if api is None:
            api = _APIS[cache_key] = NodeAPI(base_url, key)
        return api


@atexit.register
def _close_shared() -> None:
    """Close the shared clients' connections when the process ends (quietly, not by GC)."""
    with _APIS_LOCK:
        apis = list(_APIS.values())
        _APIS.clear()
    for api in apis:
        api.close()


def reply_link_id(user_id: str, node_url: str) -> str:
    """The id of the instance of ``user_id`` that carries replies to the node at ``node_url``."""
    return str(uuid.uuid5(_LINK_NAMESPACE, f"replies/{user_id}/{normalize_node_url(node_url)}"))


class RemoteLink(AtomicFlow):
    """A local stand-in for a flow instance on another node (see the module doc).

    Its config names the other node (``node_url``) and, for a request link, the instance there
    (``remote_flow_id``, served by ``remote_user_id``). A reply link (``role: replies``) posts
    the replies it receives to ``node_url``'s ``/replies`` instead. A link never replies
    itself: the other node's flow does. A node that cannot be reached is retried for
    :data:`RETRY_IN_RUN` seconds (at most half the lease); then the message stays leased and
    runs again when its lease expires, up to ``max_deliveries`` times before its sender gets
    an error reply. A node that refuses the message fails it at once (the error is the reply).
    """

    default_config: ClassVar[dict[str, Any]] = {
        "name": "RemoteLink",
        "description": "Carries messages to a flow instance on another node.",
    }

    def run(self, input_message: FlowMessage) -> None:
        """Hand the message to the other node."""
        transport = self._transport
        node: Node | None = getattr(transport, "node", None)
        if node is None:
            raise MessagingError(f"{self.name}: a link runs only on a node's dispatcher.")
        config = self.flow_config
        api = node_api(config["node_url"], local_key(node, self.user_id))
        if config.get("role") == "replies":
            origin = input_message.reply_data.get("origin")
            if not isinstance(origin, dict):
                return  # an error reply addressed to no one (see error_reply): nothing to carry
            reply = input_message.replace(reply_data=origin)
            self._retrying(lambda: api.deliver_reply(reply), transport)
            return
        reply_to = None
        if input_message.reply_data.get("mode") != ReplyMode.NO_REPLY:
            reply_to = node.advertised_url
            if reply_to is None:
                raise MessagingError(
                    f"{self.name}: the flow on {config['node_url']} could not reply: this node "
                    f"has no HTTP address (run it with `flowplex up`)."
                )
        remote_id = config["remote_flow_id"]
        self._retrying(lambda: api.send(remote_id, input_message, reply_to=reply_to), transport)

    @staticmethod
    def _retrying(call: Any, transport: Any) -> None:
        # In a run, for a few seconds within its lease: then the message runs again once the
        # lease expires (see Dispatcher), and the worker is free meanwhile.
        lease = getattr(transport, "lease_seconds", None)
        window = RETRY_FOR if lease is None else min(RETRY_IN_RUN, lease / 2)
        deadline = time.monotonic() + window
        delay = 0.05
        while True:
            try:
                call()
                return
            except RemoteError as exc:
                stopping = getattr(transport, "stopping", False)
                if not exc.retryable or stopping or time.monotonic() + delay > deadline:
                    raise
            time.sleep(delay)
            delay = min(delay * 2, 1.0)


class RemoteClient:
    """A user's handle on a node over HTTP (what :func:`connect` returns).

    It mounts flows served there (:meth:`get_flow_instance`) and is the transport of the
    proxies it returns, which have the API of local ones: ``package_input_message``,
    ``get_reply_future(msg).get_data(timeout)``, ``send_message``, ``get_instance_id``. Each
    call is one signed HTTP request; a future's reply comes in the answer to its request (sent
    from a worker thread, so ``get_reply_future`` returns at once), else it is long-polled.
    """

    def __init__(
        self, url: str, key: KeyPair, *, timeout: float | None = None, shared: bool = False
    ) -> None:
        if not isinstance(key, KeyPair):
            raise ConfigurationError(f"key must be a flowplex.identity.KeyPair, got {key!r}.")
        self.url = normalize_node_url(url, "url")
        self.key = key
        # A shared client's connections belong to the process: close() leaves them open.
        self._shared = shared or timeout is None
        self._api = (
            NodeAPI(self.url, key, timeout=timeout)
            if timeout is not None and not shared
            else node_api(self.url, key)
        )
        # Requests whose reply is awaited are sent from a thread, waiting for the reply in the
        # same round trip; their futures read it from there (see send).
        self._pool: ThreadPoolExecutor | None = None
        self._in_flight: dict[
            str, tuple[Future[dict[str, Any]], Callable[[float], dict[str, Any]]]
        ] = {}
        self._lock = threading.Lock()

    @property
    def user_id(self) -> str:
        """The id of the user this handle acts as."""
        return self.key.user_id

    def get_user_id(self) -> str:
        """Same as :attr:`user_id`."""
        return self.key.user_id

    def get_flow_instance(
        self,
        flow_endpoint: str,
        user_id: str | None = None,
        config_overrides: Mapping[str, Any] | None = None,
        initial_state: Mapping[str, Any] | None = None,
    ) -> FlowProxy:
        """Mount an instance of ``flow_endpoint`` on the node (served by ``user_id``, or by the
        only user serving it) and return its proxy; :class:`~flowplex.FlowInstanceError` with
        the node's reason when it refuses."""
        if not isinstance(flow_endpoint, str) or not flow_endpoint:
            raise FlowInstanceError(str(flow_endpoint), str(user_id), "Invalid endpoint name.")
        if user_id is not None and not is_user_id(user_id):
            raise FlowInstanceError(flow_endpoint, str(user_id), f"Invalid user id {user_id!r}.")
        try:
            answer = self._api.mount(flow_endpoint, user_id, config_overrides, initial_state)
        except RemoteError as exc:
            raise FlowInstanceError(flow_endpoint, user_id or "?", str(exc)) from exc
        address = InstanceAddress(answer["user_id"], answer["flow_id"])
        return FlowProxy(self, address, flow_endpoint=flow_endpoint)

    def get_instance(self, flow_id: str) -> dict[str, Any]:
        """The instance's metadata and state (for the user who mounted or serves it)."""
        answer: dict[str, Any] = self._api.request("GET", f"/instances/{quote(flow_id, safe='')}")
        return answer

    def delete_instance(self, flow_id: str) -> None:
        """Delete an instance (mounted or served by this user)."""
        self._api.request("DELETE", f"/instances/{quote(flow_id, safe='')}")

    # -- transport of the proxies -----------------------------------------------------------

    def send(self, target: InstanceAddress, message: FlowMessage) -> None:
        """Deliver ``message`` to the instance (retried while the node cannot be reached).

        A request whose reply a future awaits is sent from a worker thread, asking the node to
        answer with the reply in the same round trip: the caller goes on at once, and the
        future's wait reads the reply from that answer (a refusal is raised there too).
        """
        mode = message.reply_data.get("mode")
        if mode == ReplyMode.PUSH:
            raise MessagingError("a push reply needs a flow to push to; use get_reply_future.")
        if mode != ReplyMode.FUTURE:
            RemoteLink._retrying(lambda: self._api.send(target.flow_id, message), None)
            return
        future_id = str(message.reply_data["future_id"])

        def send_and_wait(wait: float = LONG_POLL) -> dict[str, Any]:
            answer: dict[str, Any] = {}

            def call() -> None:
                answer.update(self._api.send(target.flow_id, message, wait=wait))

            RemoteLink._retrying(call, None)
            return answer

        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(16, thread_name_prefix="flowplex-remote")
            self._in_flight[future_id] = (self._pool.submit(send_and_wait), send_and_wait)

    def send_reply(self, reply: FlowMessage) -> None:
        """Replies are sent by flows, not by a remote handle."""
        raise MessagingError("a remote handle sends requests only; flows send replies.")

    def _sent(self, future_id: str, timeout: float | None) -> FlowMessage | None:
        """The reply that came with the request of ``future_id`` (None: it did not, or the
        request was not sent from here); waits ``timeout`` s for the request to be answered."""
        with self._lock:
            pending, send_and_wait = self._in_flight.get(future_id, (None, None))
        if pending is None or send_and_wait is None:
            return None
        if pending.cancel():
            # Not picked up yet (the caller went straight on to wait): send from this thread,
            # sparing two hand-offs between threads.
            with self._lock:
                self._in_flight.pop(future_id, None)
            wait = LONG_POLL if timeout is None else max(0.0, min(timeout, LONG_POLL))
            reply = send_and_wait(wait).get("reply")
            return None if reply is None else FlowMessage.from_dict(reply)
        try:
            answer = pending.result(timeout)
        except FutureTimeout:
            raise FlowTimeoutError(f"no reply for future {future_id} within {timeout} s.") from None
        finally:
            if pending.done():
                with self._lock:
                    self._in_flight.pop(future_id, None)
        reply = answer.get("reply")
        return None if reply is None else FlowMessage.from_dict(reply)

    def poll_reply(self, future_id: str) -> FlowMessage | None:
        """The reply for ``future_id`` if it has arrived."""
        with self._lock:
            pending, _ = self._in_flight.get(future_id, (None, None))
        if pending is not None:
            if not pending.done():
                return None
            reply = self._sent(future_id, None)
            if reply is not None:
                return reply
        return self._api.reply(future_id, 0.0)

    def wait_reply(self, future_id: str, timeout: float | None) -> FlowMessage:
        """Wait for the reply for ``future_id`` (in the answer to its request, else long-polled);
        :class:`FlowTimeoutError` after ``timeout`` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        reply = self._sent(future_id, timeout)
        if reply is not None:
            return reply
        while True:
            wait = LONG_POLL if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                reply = self._api.reply(future_id, min(wait, LONG_POLL))
            except RemoteError as exc:
                if not exc.retryable:
                    raise
                reply = None
                time.sleep(0.2)
            if reply is not None:
                return reply
            if deadline is not None and time.monotonic() >= deadline:
                raise FlowTimeoutError(f"no reply for future {future_id} within {timeout} s.")

    async def wait_reply_async(self, future_id: str, timeout: float | None) -> FlowMessage:
        """As :meth:`wait_reply`, off the event loop."""
        return await asyncio.to_thread(self.wait_reply, future_id, timeout)

    def close(self) -> None:
        """Close the connections (those of a handle with its own ``timeout``) once the requests
        in flight are sent."""
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True)
        if not self._shared:
            self._api.close()

    def __enter__(self) -> RemoteClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<RemoteClient user={self.user_id[:16]}… node={self.url}>"


def connect(url: str, key: KeyPair, *, timeout: float | None = None) -> RemoteClient:
    """A handle on the node at ``url`` (its HTTP API, as ``flowplex up`` serves it), acting as
    the user whose key pair is ``key``; see :class:`RemoteClient`. Requests time out after
    ``timeout`` seconds (default: 10 s, on connections this process shares per node and user)."""
    return RemoteClient(url, key, timeout=timeout)


def resolve_flow(name: str, registry: str, *, timeout: float = REQUEST_TIMEOUT) -> tuple[str, str]:
    """``(node_url, endpoint)`` of the flow ``name`` listed by the registry at ``registry``.

    ``name`` is the endpoint a node serves the flow at, or the flow's name in the listing;
    online nodes come first. Raises :class:`~flowplex.RemoteError` when the registry cannot be
    reached, :class:`ConfigurationError` when it lists no such flow.
    """
    import httpx

    registry = normalize_node_url(registry, "registry")
    if not isinstance(name, str) or not name or '"' in name:
        raise ConfigurationError(f"a flow name must be a non-empty string, got {name!r}.")
    query = f'url == "/endpoints/{name}" or name == "{name}"'
    try:
        response = httpx.get(
            f"{registry}/flows",
            params={"q": query, "pp": 100},
            timeout=timeout,
            trust_env=False,
        )
        response.raise_for_status()
        items = response.json()["items"]
    except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
        raise RemoteError(
            f"the registry {registry} did not answer a listing: {exc!r}", retryable=True
        ) from exc
    prefix = "/endpoints/"
    rows = [r for r in items if isinstance(r, dict) and str(r.get("url", "")).startswith(prefix)]
    rows.sort(
        key=lambda r: (r.get("url") != prefix + name, r.get("status") != "online", r.get("node"))
    )
    if not rows:
        raise ConfigurationError(f"the registry {registry} lists no flow {name!r} on a node.")
    row = rows[0]
    return normalize_node_url(row["node"]), str(row["url"])[len(prefix) :]
