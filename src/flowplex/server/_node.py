"""What ``flowplex up`` runs: a node, its dispatch workers, the op store and the mesh service,
composed into one ASGI app. Built here, and only here."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from types import TracebackType
from typing import Any

from fastapi import FastAPI

from ..artifacts import FileSaver, OpStore
from ..errors import ConfigurationError
from ..identity import KeyPair, load_or_create_key_pair
from ..mesh import MeshService
from ..runtime import (
    DEFAULT_LEASE_SECONDS,
    DEFAULT_MAX_DELIVERIES,
    Dispatcher,
    DispatchWorker,
    Node,
    open_node,
)
from ._app import create_app
from ._dashboard import Dashboard
from ._network import network_router

__all__ = ["NodeServer", "start_dispatch_workers"]

#: How long an idle dispatch worker sleeps between looks when no wake-up comes.
IDLE_WAIT = 0.25


def start_dispatch_workers(
    node: Node,
    count: int,
    dispatch_point: str = "default",
    *,
    user_id: str | None = None,
    secrets: Mapping[str, Any] | None = None,
    lease_seconds: float = DEFAULT_LEASE_SECONDS,
    max_deliveries: int = DEFAULT_MAX_DELIVERIES,
    log_fatal: bool = True,
) -> list[DispatchWorker]:
    """Start ``count`` dispatch worker threads on ``node`` (``node.close()`` stops them).

    They run the messages of ``dispatch_point`` for every user's instances, or only
    ``user_id``'s; ``secrets`` fill the ``"???"`` config values at run time. A worker that
    finds the database unwritable stops, with the error in its ``fatal`` (and logged, unless
    ``log_fatal`` is False).
    """
    if isinstance(count, bool) or not isinstance(count, int) or count < 0:
        raise ConfigurationError(f"the number of workers must be 0 or more, got {count!r}.")
    workers = [
        DispatchWorker(
            Dispatcher(node, dispatch_point, user_id, secrets, lease_seconds, max_deliveries),
            idle_wait=IDLE_WAIT,
            log_fatal=log_fatal,
        )
        for _ in range(count)
    ]
    for worker in workers:
        node.register_worker(worker)
        worker.start()
    return workers


class NodeServer:
    """A node served over HTTP: what ``flowplex up`` runs.

    Opening it opens the node database ``db`` (files in ``home``) and, with ``opstore=True``,
    the op store on the same database (op bytes in ``home/artifacts``), so a bad database fails
    before anything listens. :attr:`app` is the ASGI app: the dashboard at ``/`` for browsers
    (:class:`~flowplex.server.Dashboard`), the mesh routes at the root (node and, with
    ``registry=True``, registry: the node's served endpoints are its flows in the mesh), the
    node HTTP API (its flows for users of other nodes, at the URLs the mesh lists) and the op
    store at ``/opstore``. ``message_log`` sets how many processed messages the node keeps per
    instance for the dashboard (default 50). Its lifespan starts ``workers`` dispatch worker
    threads on the node (leasing each message for ``lease_seconds``) and stops them when the
    server stops. :meth:`close` (or leaving the ``with`` block) releases the node and the op
    store.

    ``url`` is where the app will be reachable (the mesh advertises it); ``tuning`` takes the
    keyword arguments of :class:`~flowplex.mesh.MeshService` (``heartbeat_interval``,
    ``trust``, ``peers``, ``operators``, ...). ``key`` is the node's key pair or key file
    (default ``home/keys/node.pem``, created on first use): it signs the node's registrations.
    ``insecure=True`` accepts unsigned writes on the mesh routes and the op store.
    """

    def __init__(
        self,
        url: str,
        db: str,
        home: str | os.PathLike[str],
        *,
        organization: str | None = None,
        registry: bool = True,
        connect: Sequence[str] = (),
        cache: str | os.PathLike[str] | None = None,
        reset: bool = False,
        workers: int = 1,
        opstore: bool = True,
        message_log: int | None = None,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        key: KeyPair | str | os.PathLike[str] | None = None,
        insecure: bool = False,
        **tuning: Any,
    ) -> None:
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
            raise ConfigurationError(f"workers must be 0 or more, got {workers!r}.")
        self.home = Path(home)
        self.workers = workers
        self.lease_seconds = lease_seconds
        self.dispatch_workers: list[DispatchWorker] = []
        # Positional up to the loader, as run_service passes them: ``tuning`` takes only the
        # keyword-only knobs then.
        if key is None:
            key = load_or_create_key_pair(self.home / "keys" / "node.pem")
        self.mesh = MeshService(
            url,
            organization,
            True,
            registry,
            False,
            connect,
            cache,
            reset,
            None,
            db=db,
            key=key,
            insecure=insecure,
            **tuning,
        )
        self.node = open_node(db, self.home)
        if message_log is not None:
            if isinstance(message_log, bool) or not isinstance(message_log, int) or message_log < 0:
                self.node.close()
                raise ConfigurationError(
                    f"message_log must be 0 or more entries, got {message_log!r}."
                )
            self.node.backend.log_limit = message_log
        self.opstore: OpStore | None = None
        self.dashboard: Dashboard | None = None
        try:
            if opstore:
                self.opstore = OpStore(FileSaver(self.home / "artifacts"), db, insecure=insecure)
            self.dashboard = Dashboard(self.node, db, mesh=self.mesh, opstore=self.opstore)
            self.node.advertised_url = self.mesh.state.url
            self.app: FastAPI = create_app(
                mesh=self.mesh,
                routers=[network_router(self.node)],
                mounts={"/opstore": self.opstore.app} if self.opstore is not None else None,
                lifespans=[self._workers_lifespan],
                pages=[self.dashboard.router()],
            )
        except BaseException:
            self.close()
            raise

    @property
    def url(self) -> str:
        """The URL the node is served at (as the mesh advertises it)."""
        return self.mesh.state.url

    @asynccontextmanager
    async def _workers_lifespan(self, app: FastAPI) -> AsyncIterator[None]:
        self.dispatch_workers = start_dispatch_workers(
            self.node, self.workers, lease_seconds=self.lease_seconds
        )
        try:
            yield
        finally:
            workers, self.dispatch_workers = self.dispatch_workers, []
            for worker in workers:
                worker.stop(wait=False)
            # Each finishes the message in hand; joining off the event loop keeps it serving
            # the other lifespans' shutdown meanwhile.
            await asyncio.gather(*(asyncio.to_thread(w.join, 30.0) for w in workers))

    def close(self) -> None:
        """Stop the workers still running and release the node, the op store and what the
        dashboard opened."""
        if self.dashboard is not None:
            self.dashboard.close()
        self.node.close()
        if self.opstore is not None:
            self.opstore.close()

    def __enter__(self) -> NodeServer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
