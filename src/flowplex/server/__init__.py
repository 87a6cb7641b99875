"""flowplex's HTTP server: the composition root of every service flowplex runs over HTTP.

``create_app(mesh=...)`` serves the mesh routes at the root (and ``pages``, such as the
:class:`Dashboard`, before them); other subsystems plug in as routers
(``routers=[...]``), as mounted ASGI apps (``mounts={"/opstore": OpStore(...).app}``) and with
their own lifespans (``lifespans=[...]``). :class:`NodeServer` builds what ``flowplex up`` runs
(a node, its dispatch workers, the op store and the mesh service in one app), and
:func:`start_dispatch_workers` the worker threads of a node. There is no app at module level.

Layering: this package sits above the subsystems (runtime, mesh, artifacts) and only the
command line imports it; nothing below imports it.
"""

from __future__ import annotations

from .._asgi import Lifespan
from ._app import create_app
from ._dashboard import Dashboard
from ._node import NodeServer, start_dispatch_workers

__all__ = ["Dashboard", "Lifespan", "NodeServer", "create_app", "start_dispatch_workers"]
