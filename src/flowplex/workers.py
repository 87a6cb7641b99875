"""Dispatch workers: threads in this process, or processes sharing the node's database.

Thread workers::

    from flowplex.workers import run_dispatch_worker_thread
    run_dispatch_worker_thread(cl)                         # user cl's instances, "default" point
    run_dispatch_worker_thread(cl, secrets={"api_key": "sk-..."})

Process workers (several on one SQLite file, or on many machines against PostgreSQL)::

    flowplex worker --db sqlite:///.flowplex/flowplex.db --dispatch-point default --concurrency 4

A worker runs the messages of one dispatch point, one at a time per instance, committing each
run's state and messages atomically with its acknowledgement. Values ``"???"`` in a flow's config
are filled from the worker's ``secrets`` at run time and never stored.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from .runtime import (
    DEFAULT_LEASE_SECONDS,
    DEFAULT_MAX_DELIVERIES,
    Client,
    Dispatcher,
    DispatchWorker,
)

__all__ = [
    "DispatchWorker",
    "run_dispatch_worker_thread",
    "run_dispatch_worker_threads",
    "run_get_instance_worker_thread",
]

logger = logging.getLogger("flowplex.worker")


def run_dispatch_worker_thread(
    cl: Client,
    dispatch_point: str = "default",
    secrets: Mapping[str, Any] | None = None,
    *,
    lease_seconds: float = DEFAULT_LEASE_SECONDS,
    max_deliveries: int = DEFAULT_MAX_DELIVERIES,
    all_users: bool = False,
) -> DispatchWorker:
    """Start a daemon thread running ``cl``'s messages at ``dispatch_point``; return it.

    With ``all_users=True`` it runs the messages of every user's instances on the node.
    ``secrets`` fill ``"???"`` config values by key. A message is given to another worker if
    this one holds it longer than ``lease_seconds`` (it is presumed dead), and dead-lettered
    after ``max_deliveries``. ``worker.stop()`` (or closing the node) stops it gracefully.
    """
    dispatcher = Dispatcher(
        cl.node,
        dispatch_point,
        user_id=None if all_users else cl.get_user_id(),
        secrets=secrets,
        lease_seconds=lease_seconds,
        max_deliveries=max_deliveries,
    )
    worker = DispatchWorker(dispatcher, idle_wait=0.25)
    cl.node.register_worker(worker)
    worker.start()
    return worker


def run_dispatch_worker_threads(
    cl: Client,
    n: int,
    dispatch_point: str = "default",
    secrets: Mapping[str, Any] | None = None,
    **options: Any,
) -> list[DispatchWorker]:
    """Start ``n`` worker threads (see :func:`run_dispatch_worker_thread`)."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}.")
    return [run_dispatch_worker_thread(cl, dispatch_point, secrets, **options) for _ in range(n)]


def run_get_instance_worker_thread(cl: Client) -> None:
    """Accepted for compatibility with aiflows scripts; flowplex needs no such worker.

    aiflows exchanged instances between users through a worker both users had to run (about
    2.7 s per cross-user mount). flowplex mounts another user's flows directly in the node's
    database, in one transaction per ``get_flow_instance`` call, so there is nothing to run.
    """
    logger.debug("run_get_instance_worker_thread(%s): not needed in flowplex", cl.get_user_id())
