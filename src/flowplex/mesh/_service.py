"""A mesh service at work: background connects with backoff, heartbeats, flow refresh, forwards.

:class:`MeshService` wraps a :class:`~flowplex.mesh._state.MeshState` with the I/O: the httpx
client for peers, the cache file, the loaders, and the asyncio tasks of its lifespan. The HTTP
routes (``_routes.py``) and ``run_service`` build on it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import httpx

from .._httpsign import SigningAuth
from ..config import Settings
from ..errors import ConfigurationError, PermissionDeniedError
from ..identity import KeyPair, is_user_id, load_key_pair, load_or_create_key_pair
from ._cache import FrameEncoder, JsonCache
from ._limits import RateLimiter
from ._loader import Loader, NodeEndpoints, call_loader, resolve_loader
from ._records import FlowRecord, dedupe_flows, normalize_service_url
from ._state import Frame, MeshState, Outgoing

if TYPE_CHECKING:
    from .._asgi import RequestSigning

__all__ = ["MeshService", "backoff"]

logger = logging.getLogger("flowplex.mesh")

#: Defaults of the liveness, retry and limit knobs (keyword arguments of :class:`MeshService`).
HEARTBEAT_INTERVAL = 10.0
REFRESH_INTERVAL = 2.0
RETRY_INITIAL = 0.5
RETRY_MAX = 8.0
REQUEST_TIMEOUT = 5.0
FORWARD_ATTEMPTS = 4
OFFLINE_REMOVE_AFTER = 86_400.0
CLOCK_SKEW = 5.0
MAX_PEERS = 64
PEER_CONCURRENCY = 4
PEER_FAILURES = 3
PEER_QUEUE = 1_000
WRITE_RATE = 50.0
WRITE_BURST = 200.0
MAX_REGISTER_BYTES = 1 << 20
MAX_PEER_BYTES = 32 << 20
CACHE_INTERVAL = 0.5

#: Knobs that may be None (off): the offline period after which nodes are removed.
_OPTIONAL = {"offline_after", "offline_remove_after"}
#: Knobs that count things (whole numbers).
_COUNTS = {"max_peers", "peer_concurrency", "peer_failures", "peer_queue"}


def backoff(initial: float, maximum: float) -> Iterator[float]:
    """Retry delays: ``initial``, doubling, capped at ``maximum``, forever."""
    delay = initial
    while True:
        yield delay
        delay = min(delay * 2, maximum)


def _check_arguments(
    node: bool, registry: bool, flows: bool, cache: bool, **numbers: float | None
) -> None:
    if not (node or registry):
        raise ConfigurationError("a mesh service needs a role: node, registry or provider.")
    if flows and not node:
        raise ConfigurationError("flows allowed for nodes only: loader and db need node=True.")
    if cache and not registry:
        raise ConfigurationError("cache is for registries: pass registry=True or drop cache.")
    for name, value in numbers.items():
        if value is None and name in _OPTIONAL:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
            raise ConfigurationError(f"{name} must be a positive number, got {value!r}.")
        if name in _COUNTS and value != int(value):
            raise ConfigurationError(f"{name} must be a whole number, got {value!r}.")
    burst = numbers.get("write_burst")
    if burst is not None and burst < 1:
        raise ConfigurationError(f"write_burst must be at least 1, got {burst!r}.")


def _user_ids(value: Any, what: str) -> frozenset[str]:
    """A set of user ids (keys) from one id or a list of them."""
    if value is None:
        return frozenset()
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, Iterable) or not all(is_user_id(v) for v in items):
        raise ConfigurationError(f"{what} must be user ids (64 hex characters), got {value!r}.")
    return frozenset(items)


def _service_key(key: Any, url: str) -> KeyPair:
    """The service's key: a KeyPair, a key file, or (None) its own file under FLOWPLEX_HOME."""
    if isinstance(key, KeyPair):
        return key
    if isinstance(key, str | os.PathLike):
        return load_key_pair(key)
    if key is not None:
        raise ConfigurationError(f"key must be a KeyPair or a key file path, got {key!r}.")
    name = url.split("://", 1)[1].replace(":", "-").replace("/", "_")
    return load_or_create_key_pair(Settings.from_env().home / "keys" / f"mesh-{name}.pem")


def _targets(connect: Any) -> list[str]:
    """The registries to connect to: one URL (a string or URL object), a list of them, or None."""
    if connect is None:
        return []
    if isinstance(connect, str) or not isinstance(connect, Iterable):
        connect = [connect]
    # dict.fromkeys: one connection per registry, however often (and however spelled) listed
    return list(dict.fromkeys(normalize_service_url(c, "connect url") for c in connect))


@dataclass
class _Link:
    """Deliveries to one peer: at most ``peer_concurrency`` in flight, a bounded backlog, and
    the count of failures in a row."""

    slots: asyncio.Semaphore
    failures: int = 0
    queued: int = 0
    tasks: set[asyncio.Task[None]] = field(default_factory=set)


class MeshService:
    """One node and/or registry: its state plus the work that keeps it in the mesh.

    The arguments are those of :func:`flowplex.mesh.run_service`. The keyword-only ones tune it:

    - liveness: nodes heartbeat every ``heartbeat_interval`` seconds; a node silent for
      ``offline_after`` (default three intervals) is listed ``"offline"``, and removed after
      ``offline_remove_after`` seconds (default a day; None keeps it). Timestamps a peer relays
      are clamped to this service's clock plus ``clock_skew`` seconds.
    - loaders are re-read every ``refresh_interval`` seconds; connects retry from
      ``retry_initial`` doubling up to ``retry_max`` seconds.
    - peers: at most ``max_peers``; every request to a peer times out after
      ``request_timeout`` seconds; at most ``peer_concurrency`` requests to one peer are in
      flight and ``peer_queue`` wait; after ``peer_failures`` failures in a row a peer is
      dropped (and leaves the cache), or, if it is one of ``connect``, reconnected.
    - writes (``/register``, ``/heartbeat``, ``/connect``, ``/update/node``): each client may
      send ``write_burst`` at once, then ``write_rate`` per second (429 beyond); bodies are
      limited to ``max_register_bytes`` (``/register``, ``/heartbeat``) and ``max_peer_bytes``
      (``/connect``, ``/update/node``) (413 beyond).
    - the cache file is written in the background, at most every ``cache_interval`` seconds,
      and on shutdown.
    - trust: every request this service sends is signed with ``key`` (a :class:`KeyPair` or a
      key file; default: its own key file under ``FLOWPLEX_HOME/keys``), and every write it
      receives must be signed (401 otherwise). A node's first signed ``/register`` pins its
      key to its URL; later registrations and heartbeats of that URL must carry the same key
      (403). With ``trust`` (user ids) only those keys may register nodes. ``/connect`` is
      accepted from the registries in ``connect`` and ``peers`` (URLs), or when signed by one
      of ``operators`` (user ids); a peer's key is pinned on its first connect or update, and
      its relayed ``/update/node`` must be signed by it. ``insecure=True`` accepts unsigned
      writes as before (for migration and tests; a warning is logged).
    """

    def __init__(
        self,
        url: Any,
        organization: str | None = None,
        node: bool = True,
        registry: bool = False,
        provider: bool = False,
        connect: Sequence[Any] | Any = (),
        cache: str | os.PathLike[str] | None = None,
        reset: bool = False,
        loader: Loader | str | None = None,
        *,
        db: str | None = None,
        heartbeat_interval: float = HEARTBEAT_INTERVAL,
        offline_after: float | None = None,
        offline_remove_after: float | None = OFFLINE_REMOVE_AFTER,
        refresh_interval: float = REFRESH_INTERVAL,
        retry_initial: float = RETRY_INITIAL,
        retry_max: float = RETRY_MAX,
        request_timeout: float = REQUEST_TIMEOUT,
        clock_skew: float = CLOCK_SKEW,
        max_peers: int = MAX_PEERS,
        peer_concurrency: int = PEER_CONCURRENCY,
        peer_failures: int = PEER_FAILURES,
        peer_queue: int = PEER_QUEUE,
        write_rate: float = WRITE_RATE,
        write_burst: float = WRITE_BURST,
        max_register_bytes: int = MAX_REGISTER_BYTES,
        max_peer_bytes: int = MAX_PEER_BYTES,
        cache_interval: float = CACHE_INTERVAL,
        key: KeyPair | str | os.PathLike[str] | None = None,
        trust: Sequence[str] | None = None,
        peers: Sequence[Any] | None = None,
        operators: Sequence[str] | None = None,
        insecure: bool = False,
    ) -> None:
        _check_arguments(
            node,
            registry or provider,
            loader is not None or db is not None,
            cache is not None,
            heartbeat_interval=heartbeat_interval,
            offline_after=offline_after,
            offline_remove_after=offline_remove_after,
            refresh_interval=refresh_interval,
            retry_initial=retry_initial,
            retry_max=retry_max,
            request_timeout=request_timeout,
            clock_skew=clock_skew,
            max_peers=max_peers,
            peer_concurrency=peer_concurrency,
            peer_failures=peer_failures,
            peer_queue=peer_queue,
            write_rate=write_rate,
            write_burst=write_burst,
            max_register_bytes=max_register_bytes,
            max_peer_bytes=max_peer_bytes,
            cache_interval=cache_interval,
        )
        if offline_after is None:
            offline_after = 3 * heartbeat_interval
        if offline_remove_after is not None and offline_remove_after < offline_after:
            raise ConfigurationError(
                f"offline_remove_after ({offline_remove_after}) must not be shorter than "
                f"offline_after ({offline_after}): a node is listed offline before it is removed."
            )
        if organization is not None and not isinstance(organization, str):
            raise ConfigurationError(f"organization must be a string, got {organization!r}.")
        self.state = MeshState(
            url,
            organization,
            node=node,
            registry=registry,
            provider=provider,
            offline_after=offline_after,
            offline_remove_after=offline_remove_after,
            clock_skew=clock_skew,
            max_peers=int(max_peers),
        )
        if cache is not None and not isinstance(cache, str | os.PathLike):
            raise ConfigurationError(f"cache must be a path to a JSON file, got {cache!r}.")
        self.targets = _targets(connect)
        if self.state.url in self.targets:
            raise ConfigurationError(f"{self.state.url} cannot connect to itself.")
        self.heartbeat_interval = float(heartbeat_interval)
        self.refresh_interval = float(refresh_interval)
        self.retry_initial = float(retry_initial)
        self.retry_max = float(retry_max)
        self.request_timeout = float(request_timeout)
        self.peer_concurrency = int(peer_concurrency)
        self.peer_failures = int(peer_failures)
        self.peer_queue = int(peer_queue)
        self.max_register_bytes, self.max_peer_bytes = int(max_register_bytes), int(max_peer_bytes)
        self.cache_interval = float(cache_interval)
        self.writes = RateLimiter(float(write_rate), float(write_burst))
        self._configure_trust(key, trust, peers, operators, insecure)
        self.loaders: list[Loader] = []
        resolved = resolve_loader(loader)
        if resolved is not None:
            self.loaders.append(resolved)
        self._endpoints = NodeEndpoints(db) if db is not None else None
        if self._endpoints is not None:
            self.loaders.append(self._endpoints)
        self.cache = JsonCache(cache) if cache is not None else None
        self._encoder = FrameEncoder()
        self._write_lock = threading.Lock()
        self._saved = -1  # the state version last written to the cache
        role = "registry" if self.state.registry else "node"
        logger.info("%s: %s startup", self.state.url, role)
        if self.cache is not None:
            self._load_cache(reset)
        self.state.sweep()
        self.state.connection = {t: None for t in self.targets}
        self._flows = self.load_flows()
        self._client: httpx.AsyncClient | None = None
        self._pending = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._connects: dict[str, asyncio.Task[None]] = {}
        self._again: set[str] = set()
        self._links: dict[str, _Link] = {}
        self._dirty: asyncio.Event | None = None

    def _load_cache(self, reset: bool) -> None:
        assert self.cache is not None
        self.cache.remove_leftovers()
        if reset:
            logger.info("%s: ignore cache %s", self.state.url, self.cache.path)
            return
        data = self.cache.load()
        if data is None:
            return
        try:
            self.state.restore(data)
        except ValueError as exc:  # MeshInputError included: a record that does not validate
            raise ConfigurationError(
                f"cache {self.cache.path} is invalid ({exc}); start with reset=True"
            ) from exc
        logger.info("%s: loaded cache %s", self.state.url, self.cache.path)

    # -- trust ----------------------------------------------------------------------------------

    def _configure_trust(
        self, key: Any, trust: Any, peers: Any, operators: Any, insecure: bool
    ) -> None:
        self.key = _service_key(key, self.state.url)
        self.trust = _user_ids(trust, "trust")
        self.operators = _user_ids(operators, "operators")
        self.allowed_peers = frozenset(self.targets) | frozenset(_targets(peers))
        self.insecure = bool(insecure)

    def signing(self) -> RequestSigning:
        """How an app serving this service checks signed writes (its limits, its mode)."""
        from .._asgi import RequestSigning

        limit = max(self.max_register_bytes, self.max_peer_bytes)
        return RequestSigning(max_body=limit, insecure=self.insecure)

    def authorize_node(self, url: str, caller: str | None, *, register: bool) -> None:
        """Raise :class:`PermissionDeniedError` unless ``caller`` may speak for node ``url``.

        ``None`` is an unsigned request (insecure mode only). A registration pins the key on
        first sight; a heartbeat needs the pinned key.
        """
        if caller is None:
            return
        if self.trust and caller not in self.trust:
            raise PermissionDeniedError(f"key {caller[:16]}... may not register nodes here.")
        pinned = self.state.keys.get(url)
        if pinned is None and register:
            self.state.pin(url, caller)
        elif pinned != caller and (pinned is not None or url in self.state.nodes):
            raise PermissionDeniedError(
                f"node {url} is registered with another key; its updates must be signed by it."
            )

    def authorize_peer(self, sender: str, caller: str | None, key: str | None = None) -> None:
        """Raise :class:`PermissionDeniedError` unless registry ``sender`` may connect.

        A configured peer (``connect``, ``peers``) signing with its pinned key (or its first
        one), or an operator (who may name the peer's ``key``; else the operator's is pinned).
        """
        if caller is None:
            return
        if caller in self.operators:
            pinned = key if key is not None and is_user_id(key) else caller
            self.state.keys[sender] = pinned
            return
        if sender not in self.allowed_peers:
            raise PermissionDeniedError(
                f"registry {sender} is not a configured peer of {self.state.url}; "
                "an operator must sign its /connect."
            )
        if not self.state.pin(sender, caller):
            raise PermissionDeniedError(f"registry {sender} is pinned to another key.")

    def authorize_update(self, sender: str, caller: str | None) -> None:
        """Raise :class:`PermissionDeniedError` unless ``caller`` is peer ``sender``'s key."""
        if caller is None:
            return
        pinned = self.state.keys.get(sender)
        if pinned is None and sender in self.allowed_peers:
            self.state.pin(sender, caller)
        elif pinned != caller:
            raise PermissionDeniedError(
                f"update from {sender} is not signed by that registry's key."
            )

    # -- status ---------------------------------------------------------------------------------

    @property
    def idle(self) -> bool:
        """True when nothing is pending: every connect done (or given up), every forward sent."""
        return self._pending == 0

    def status(self, messages: Sequence[str] = ()) -> dict[str, Any]:
        """The ``GET /`` reply (and the head of every write reply)."""
        s = self.state
        return {
            "url": s.url,
            "organization": s.organization,
            "node": s.node,
            "registry": s.registry,
            "provider": s.provider,
            "connection": dict(s.connection),
            "started_at": s.started_at,
            "idle": self.idle,
            "now": s.now(),
            "message": list(messages),
        }

    # -- flows ------------------------------------------------------------------------------------

    def load_flows(self) -> dict[str, FlowRecord]:
        """Call every loader; the flows by URL (a later loader wins a duplicate URL)."""
        flows: list[FlowRecord] = []
        for loader in self.loaders:
            flows.extend(call_loader(loader))
        return dedupe_flows(flows)

    def save(self) -> None:
        """Write the cache now (registries with a cache only), if the state changed since."""
        if self.cache is not None and self._saved != self.state.version:
            version = self.state.version
            self._write(self.state.frame())
            self._saved = version

    def _write(self, frame: Frame) -> None:
        # One write at a time, in order: a background write still running when the service
        # stops finishes before the final one starts (and the encoder is not thread-safe).
        assert self.cache is not None
        with self._write_lock:
            self.cache.write_text(self._encoder.encode(frame))

    async def _cache_loop(self) -> None:
        # Debounced: the first change after a write waits cache_interval for more, then one
        # write in a worker thread covers them all. The request that changed the state never
        # waits for the disk, and only the frame (O(nodes)) is taken on the event loop.
        assert self._dirty is not None and self.cache is not None
        while True:
            await self._dirty.wait()
            await asyncio.sleep(self.cache_interval)
            self._dirty.clear()
            version = self.state.version
            if version == self._saved:
                continue
            frame = self.state.frame()
            try:
                await asyncio.to_thread(self._write, frame)
            except OSError:
                logger.exception("%s: writing cache %s failed", self.state.url, self.cache.path)
                self._dirty.set()  # try again after the next interval
                continue
            self._saved = version

    # -- lifespan -------------------------------------------------------------------------------

    @asynccontextmanager
    async def lifespan(self, app: object = None) -> AsyncIterator[None]:
        """Run the background work while the server runs; write the cache when it stops."""
        # The pool is unbounded: per-peer limits (and max_peers) bound the connections, so a
        # peer that never answers cannot take the connections the healthy ones need.
        self._client = httpx.AsyncClient(
            auth=SigningAuth(self.key),
            timeout=self.request_timeout,
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=32),
        )
        self._dirty = asyncio.Event()
        self.state.on_change = self._dirty.set
        try:
            if self.cache is not None:
                self._spawn(self._cache_loop(), pending=False)
                if self._saved != self.state.version:
                    self._dirty.set()
            if self.state.node:
                self.dispatch(self.state.set_own_flows(self._flows))
            for target in self.targets:
                self.ensure_connected(target)
            self._spawn(self._heartbeat_loop(), pending=False)
            if self.loaders:
                self._spawn(self._refresh_loop(), pending=False)
            logger.info("%s: successfully started", self.state.url)
            yield
        finally:
            self.state.on_change = None
            tasks = list(self._tasks)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            try:
                self.save()
            finally:  # a cache that cannot be written must not leak the client or the database
                await self._client.aclose()
                if self._endpoints is not None:
                    self._endpoints.close()
            logger.info("%s shutdown now", self.state.url)

    def _spawn(self, coro: Any, pending: bool = True) -> asyncio.Task[None]:
        if pending:
            self._pending += 1
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)

        def done(t: asyncio.Task[None]) -> None:
            self._tasks.discard(t)
            if pending:
                self._pending -= 1
            if not t.cancelled() and t.exception() is not None:
                logger.error("%s: background task failed", self.state.url, exc_info=t.exception())

        task.add_done_callback(done)
        return task

    def dispatch(self, outgoing: Sequence[Outgoing]) -> None:
        """Send the requests the state asked for, in the background, within each peer's limits."""
        for out in outgoing:
            if out.peer in self.targets and self.state.connection.get(out.peer) is None:
                continue  # (re)connecting: the connect carries the whole catalog anyway
            link = self._links.get(out.peer)
            if link is None:
                link = self._links[out.peer] = _Link(asyncio.Semaphore(self.peer_concurrency))
            if link.queued >= self.peer_queue:
                logger.warning(
                    "%s: %d updates wait for %s already; one dropped",
                    self.state.url,
                    link.queued,
                    out.peer,
                )
                continue
            link.queued += 1
            task = self._spawn(self._deliver(out, link))
            link.tasks.add(task)
            task.add_done_callback(link.tasks.discard)

    @property
    def client(self) -> httpx.AsyncClient:
        """The HTTP client for peers (exists while the lifespan runs)."""
        if self._client is None:
            raise RuntimeError("the mesh service is not running (no lifespan)")
        return self._client

    # -- connecting -----------------------------------------------------------------------------

    def ensure_connected(self, target: str) -> None:
        """(Re)connect to ``target`` in the background; a running attempt sends again after."""
        task = self._connects.get(target)
        if task is not None and not task.done():
            self._again.add(target)
            return
        self._connects[target] = self._spawn(self._connect_loop(target))

    async def _connect_loop(self, target: str) -> None:
        while True:
            self._again.discard(target)
            await self._connect_once(target)
            if target not in self._again:
                return

    async def _connect_once(self, target: str) -> None:
        delays = backoff(self.retry_initial, self.retry_max)
        state = self.state
        path = "/connect" if state.registry else "/register"
        while True:
            body = state.offer(to=target) if state.registry else state.own_record().to_json()
            try:
                resp = await self.client.post(target + path, json=body)
            except httpx.HTTPError as exc:
                delay = next(delays)
                logger.info(
                    "%s: %s%s failed (%s); retry in %.1f s", state.url, target, path, exc, delay
                )
                state.connection[target] = None
                await asyncio.sleep(delay)
                continue
            if resp.status_code >= 500 or resp.status_code == 429:
                await asyncio.sleep(next(delays))
                continue
            if resp.is_error:
                # 404: not a registry; other 4xx: it refuses us. Retrying cannot help.
                logger.error(
                    "%s: %s%s refused with %d: %s; giving up",
                    state.url,
                    target,
                    path,
                    resp.status_code,
                    resp.text[:300],
                )
                state.connection[target] = None
                return
            try:
                reply = resp.json()
                messages = "; ".join(str(m) for m in reply.get("message") or ())
            except (ValueError, AttributeError):
                logger.error("%s: %s%s is no mesh service; giving up", state.url, target, path)
                return
            if state.registry:
                self.dispatch(state.connected(target, reply))
            else:
                state.connection[target] = state.now()
            logger.info("%s: %s%s: %s", state.url, target, path, messages)
            return

    async def _deliver(self, out: Outgoing, link: _Link) -> None:
        delays = backoff(self.retry_initial, self.retry_max)
        try:
            for _ in range(FORWARD_ATTEMPTS):
                async with link.slots:
                    outcome, wait = await self._post(out)
                if outcome == "ok":
                    link.failures = 0
                    return
                if outcome == "forgot":
                    self._peer_forgot(out.peer, link)
                    return
                if outcome == "failed":
                    link.failures += 1
                    if link.failures >= self.peer_failures:
                        self._peer_failed(out.peer, link)
                        return
                await asyncio.sleep(max(wait, next(delays)))
            logger.warning("%s: %s unreachable, update not delivered", self.state.url, out.peer)
        finally:
            link.queued -= 1

    async def _post(self, out: Outgoing) -> tuple[str, float]:
        """POST one update: "ok", "busy", "forgot" or "failed", and how long to wait."""
        try:
            resp = await self.client.post(out.peer + out.path, json=out.body)
        except httpx.HTTPError as exc:
            logger.info("%s: forward to %s failed: %r", self.state.url, out.peer, exc)
            return "failed", 0.0
        if resp.status_code == 429:
            try:
                return "busy", min(float(resp.headers.get("retry-after", "0")), self.retry_max)
            except ValueError:
                return "busy", 0.0
        if resp.status_code == 403:
            return "forgot", 0.0
        if resp.is_error:
            logger.warning(
                "%s: %s%s refused an update with %d: %s",
                self.state.url,
                out.peer,
                out.path,
                resp.status_code,
                resp.text[:300],
            )
            return "failed", 0.0
        return "ok", 0.0

    def _cancel_deliveries(self, peer: str, link: _Link) -> None:
        current = asyncio.current_task()
        for task in list(link.tasks):
            if task is not current:
                task.cancel()
        link.failures = 0
        self._links.pop(peer, None)

    def _peer_forgot(self, peer: str, link: _Link) -> None:
        """``peer`` answered 403: it does not know us (it restarted afresh)."""
        if peer in self.targets:
            # Connecting again resyncs it: our offer carries every node, not only the update.
            self.state.connection[peer] = None
            self._cancel_deliveries(peer, link)
            self.ensure_connected(peer)
            return
        link.failures += 1
        if link.failures >= self.peer_failures:
            self._peer_failed(peer, link)

    def _peer_failed(self, peer: str, link: _Link) -> None:
        """``peer`` failed ``peer_failures`` times in a row."""
        self._cancel_deliveries(peer, link)
        if peer in self.targets:
            logger.warning("%s: %s keeps failing; connecting again", self.state.url, peer)
            self.state.connection[peer] = None
            self.ensure_connected(peer)  # with backoff; connecting again resyncs it
        elif self.state.drop_peer(peer):
            logger.warning(
                "%s: dropped peer %s after %d failures in a row",
                self.state.url,
                peer,
                self.peer_failures,
            )

    # -- periodic work --------------------------------------------------------------------------

    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_interval)
            state = self.state
            if state.registry:
                if state.node:
                    state.heartbeat(state.url)
                out = state.flush_heartbeats()
                self.dispatch(out)
                state.sweep()
                continue
            for target, since in list(state.connection.items()):
                task = self._connects.get(target)
                if since is None or (task is not None and not task.done()):
                    continue
                await self._beat(target)

    async def _beat(self, target: str) -> None:
        try:
            resp = await self.client.post(target + "/heartbeat", json={"url": self.state.url})
        except httpx.HTTPError as exc:
            logger.info("%s: heartbeat to %s failed: %s", self.state.url, target, exc)
            self.state.connection[target] = None
            self.ensure_connected(target)
            return
        if resp.status_code == 404:
            # The registry does not know us (it started afresh): register again.
            self.ensure_connected(target)

    async def _refresh_loop(self) -> None:
        while True:
            await asyncio.sleep(self.refresh_interval)
            try:
                flows = await asyncio.to_thread(self.load_flows)
            except Exception:  # a loader is user code: log and keep the flows we have
                logger.exception(
                    "%s: loading flows failed; keeping the previous ones", self.state.url
                )
                continue
            if flows != self.state.own_flows:
                self.apply_flows(flows)

    def apply_flows(self, flows: dict[str, FlowRecord]) -> None:
        """This node's flows changed: re-register them (a registry floods them to its peers)."""
        logger.info("%s: flows changed (%d flows)", self.state.url, len(flows))
        self.dispatch(self.state.set_own_flows(flows))
        if not self.state.registry:
            for target in self.targets:
                self.ensure_connected(target)
