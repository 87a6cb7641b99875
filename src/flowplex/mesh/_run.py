"""``run_service``: serve a mesh node/registry over HTTP with uvicorn (blocks until stopped).

It composes its app with the shared HTTP pieces (``flowplex._asgi``), not with
``flowplex.server``: the server is the composition root above the mesh, never below it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ..errors import ConfigurationError
from ._loader import Loader
from ._records import normalize_service_url

__all__ = ["run_service"]


def run_service(
    url: str,
    organization: str | None = None,
    node: bool = True,
    registry: bool = False,
    provider: bool = False,
    connect: Sequence[str] | str | None = (),
    cache: str | None = None,
    reset: bool = False,
    loader: Loader | str | None = None,
    *,
    reload: bool = False,
    db: str | None = None,
    mounts: Mapping[str, Any] | None = None,
    log_level: str = "info",
    **tuning: Any,
) -> None:
    """Serve a mesh node and/or registry at ``url`` (``http://host:port``) until SIGTERM/SIGINT.

    - ``node``: publish flows (from ``loader``, a callable or ``"module:function"`` returning flow
      descriptions, and from the served endpoints of the node database ``db``) and register
      them with every registry in ``connect``; re-read them every ``refresh_interval`` s.
    - ``registry``: accept ``/register``, ``/connect`` and ``/update/node``; connect to the
      registries in ``connect`` and exchange updates with them. ``provider``: a registry that
      offers its nodes but asks for no feed back.
    - ``cache``: the registry's JSON state file; ``reset=True`` ignores it and starts empty.

    ``tuning`` takes the keyword arguments of :class:`~flowplex.mesh.MeshService`: liveness
    (``heartbeat_interval``, ``offline_after``, ``offline_remove_after``, ``clock_skew``),
    retries (``refresh_interval``, ``retry_initial``, ``retry_max``), peer limits
    (``request_timeout``, ``max_peers``, ``peer_concurrency``, ``peer_failures``,
    ``peer_queue``), write limits (``write_rate``, ``write_burst``, ``max_register_bytes``,
    ``max_peer_bytes``), ``cache_interval``, and trust: ``key`` (this service's key pair or
    key file), ``trust`` (keys that may register nodes), ``peers`` (registries that may
    connect), ``operators`` (keys that may connect any registry) and ``insecure=True``, which
    accepts unsigned writes as the old protocol did (logged as a warning). ``reload`` is
    accepted for compatibility with the original API and must be False. Run it in a
    ``multiprocessing.Process`` to keep going meanwhile; terminating the process shuts it
    down cleanly (the cache is written on the way out).
    """
    if reload:
        raise ConfigurationError("reload=True is not supported: restart the service instead.")
    base = normalize_service_url(url, "url", require_port=True)
    from .._asgi import compose_app, listen, serve
    from ._routes import mesh_router
    from ._service import MeshService

    service = MeshService(
        base,
        organization,
        node,
        registry,
        provider,
        connect,
        cache,
        reset,
        loader,
        db=db,
        **tuning,
    )
    app = compose_app(
        routers=[mesh_router(service)],
        mounts=mounts,
        lifespans=[service.lifespan],
        signing=service.signing(),
    )
    sock, _ = listen(base)
    serve(app, sock, log_level=log_level)
