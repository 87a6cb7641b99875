"""A mesh service at work: background connects with backoff, heartbeats, flow refresh, forwards.

:class:`MeshService` wraps a :class:`~flowplex.mesh._state.MeshState` with the I/O: the httpx
client for peers, the cache file, the loaders, and the asyncio tasks of its lifespan. The HTTP
routes (``_routes.py``) and ``run_service`` build on it.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import httpx

from ..errors import ConfigurationError
from ._cache import JsonCache
from ._loader import Loader, NodeEndpoints, call_loader, resolve_loader
from ._records import FlowRecord, dedupe_flows, normalize_service_url, utcnow
from ._state import MeshState, Outgoing

__all__ = ["MeshService", "backoff"]

logger = logging.getLogger("flowplex.mesh")

#: Defaults of the liveness and retry knobs (keyword arguments of :class:`MeshService`).
HEARTBEAT_INTERVAL = 10.0
REFRESH_INTERVAL = 2.0
RETRY_INITIAL = 0.5
RETRY_MAX = 8.0
REQUEST_TIMEOUT = 10.0
FORWARD_ATTEMPTS = 4


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
        if value is None and name == "offline_after":
            continue
        if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
            raise ConfigurationError(f"{name} must be a positive number, got {value!r}.")


class MeshService:
    """One node and/or registry: its state plus the work that keeps it in the mesh.

    The arguments are those of :func:`flowplex.mesh.run_service`; the keyword-only ones tune
    liveness and retries: nodes heartbeat every ``heartbeat_interval`` seconds, a node silent for
    ``offline_after`` (default three intervals) is listed ``"offline"``, loaders are re-read every
    ``refresh_interval`` seconds, and connects retry from ``retry_initial`` doubling up to
    ``retry_max`` seconds.
    """

    def __init__(
        self,
        url: str,
        organization: str | None = None,
        node: bool = True,
        registry: bool = False,
        provider: bool = False,
        connect: Sequence[str] | str | None = (),
        cache: str | os.PathLike[str] | None = None,
        reset: bool = False,
        loader: Loader | str | None = None,
        *,
        db: str | None = None,
        heartbeat_interval: float = HEARTBEAT_INTERVAL,
        offline_after: float | None = None,
        refresh_interval: float = REFRESH_INTERVAL,
        retry_initial: float = RETRY_INITIAL,
        retry_max: float = RETRY_MAX,
        request_timeout: float = REQUEST_TIMEOUT,
    ) -> None:
        _check_arguments(
            node,
            registry or provider,
            loader is not None or db is not None,
            cache is not None,
            heartbeat_interval=heartbeat_interval,
            offline_after=offline_after,
            refresh_interval=refresh_interval,
            retry_initial=retry_initial,
            retry_max=retry_max,
            request_timeout=request_timeout,
        )
        if offline_after is None:
            offline_after = 3 * heartbeat_interval
        if organization is not None and not isinstance(organization, str):
            raise ConfigurationError(f"organization must be a string, got {organization!r}.")
        self.state = MeshState(
            url,
            organization,
            node=node,
            registry=registry,
            provider=provider,
            offline_after=offline_after,
        )
        if connect is None:
            connect = ()
        elif isinstance(connect, str):
            connect = [connect]
        elif not isinstance(connect, Iterable):
            raise ConfigurationError(f"connect must be a list of registry URLs, got {connect!r}.")
        if cache is not None and not isinstance(cache, str | os.PathLike):
            raise ConfigurationError(f"cache must be a path to a JSON file, got {cache!r}.")
        # dict.fromkeys: one connection per registry, even when listed twice
        self.targets = list(dict.fromkeys(normalize_service_url(c, "connect url") for c in connect))
        if self.state.url in self.targets:
            raise ConfigurationError(f"{self.state.url} cannot connect to itself.")
        self.heartbeat_interval = float(heartbeat_interval)
        self.refresh_interval = float(refresh_interval)
        self.retry_initial = float(retry_initial)
        self.retry_max = float(retry_max)
        self.request_timeout = float(request_timeout)
        self.loaders: list[Loader] = []
        resolved = resolve_loader(loader)
        if resolved is not None:
            self.loaders.append(resolved)
        self._endpoints = NodeEndpoints(db) if db is not None else None
        if self._endpoints is not None:
            self.loaders.append(self._endpoints)
        self.cache = JsonCache(cache) if cache is not None else None
        self._saved = -1  # the state version last written to the cache
        role = "registry" if self.state.registry else "node"
        logger.info("%s: %s startup", self.state.url, role)
        if self.cache is not None:
            self._load_cache(reset)
        self.state.connection = {t: None for t in self.targets}
        self._flows = self.load_flows()
        self._client: httpx.AsyncClient | None = None
        self._pending = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._connects: dict[str, asyncio.Task[None]] = {}
        self._again: set[str] = set()

    def _load_cache(self, reset: bool) -> None:
        assert self.cache is not None
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
            "now": utcnow(),
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
        """Write the cache (registries with a cache only), if the state changed since."""
        if self.cache is not None and self._saved != self.state.version:
            self.cache.save(self.state.snapshot())
            self._saved = self.state.version

    # -- lifespan -------------------------------------------------------------------------------

    @asynccontextmanager
    async def lifespan(self, app: object = None) -> AsyncIterator[None]:
        """Run the background work while the server runs; save the cache when it stops."""
        self._client = httpx.AsyncClient(timeout=self.request_timeout)
        try:
            if self.state.node:
                self.dispatch(self.state.set_own_flows(self._flows))
            for target in self.targets:
                self.ensure_connected(target)
            self._spawn(self._heartbeat_loop(), pending=False)
            if self.loaders:
                self._spawn(self._refresh_loop(), pending=False)
            self.save()
            logger.info("%s: successfully started", self.state.url)
            yield
        finally:
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
        """Send the requests the state asked for, in the background."""
        for out in outgoing:
            self._spawn(self._deliver(out))

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
            if resp.status_code >= 500:
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
                self.save()
            else:
                state.connection[target] = utcnow()
            logger.info("%s: %s%s: %s", state.url, target, path, messages)
            return

    async def _deliver(self, out: Outgoing) -> None:
        delays = backoff(self.retry_initial, self.retry_max)
        for _ in range(FORWARD_ATTEMPTS):
            try:
                resp = await self.client.post(out.peer + out.path, json=out.body)
            except httpx.HTTPError as exc:
                logger.info("%s: forward to %s failed: %s", self.state.url, out.peer, exc)
                await asyncio.sleep(next(delays))
                continue
            if resp.status_code == 403:
                # The peer forgot us (restarted with reset): connecting again resyncs it.
                self.ensure_connected(out.peer)
            elif resp.is_error:
                logger.warning(
                    "%s: %s%s refused an update with %d: %s",
                    self.state.url,
                    out.peer,
                    out.path,
                    resp.status_code,
                    resp.text[:300],
                )
            return
        logger.warning("%s: %s unreachable, update not delivered", self.state.url, out.peer)
        if out.peer in self.state.connection:
            self.state.connection[out.peer] = None
            self.ensure_connected(out.peer)  # connecting again resyncs it once it is back

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
                self.save()
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
        if self.state.registry:
            self.save()
        else:
            for target in self.targets:
                self.ensure_connected(target)
