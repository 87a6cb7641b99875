"""flowplex's HTTP server: one FastAPI app composed of the subsystems' routers and apps.

``create_app(mesh=...)`` serves the mesh routes at the root; other subsystems plug in as routers
(``routers=[...]``), as mounted ASGI apps (``mounts={"/opstore": OpStore(...).app}``) and with
their own lifespans (``lifespans=[...]``). There is no app at module level.
"""

from __future__ import annotations

from ._app import Lifespan, create_app

__all__ = ["Lifespan", "create_app"]
