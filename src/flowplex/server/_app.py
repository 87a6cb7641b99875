"""The app factory: the mesh, routers, mounted ASGI apps and lifespans composed into one app."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from fastapi import APIRouter, FastAPI
from starlette.types import ASGIApp

from .._asgi import Lifespan, compose_app

if TYPE_CHECKING:
    from ..mesh import MeshService

__all__ = ["create_app"]


def create_app(
    *,
    mesh: MeshService | None = None,
    routers: Sequence[APIRouter] = (),
    mounts: Mapping[str, ASGIApp] | None = None,
    lifespans: Sequence[Lifespan] = (),
    title: str = "flowplex",
    pages: Sequence[APIRouter] = (),
) -> FastAPI:
    """A FastAPI app serving ``mesh`` (its routes at the root), ``routers`` and ``mounts``.

    ``routers`` are matched first (the node API's message route is the hot path), then
    ``pages``, before the mesh's (the dashboard answers a browser's ``GET /``, the mesh every
    other client's). ``mounts`` maps a path prefix to any ASGI app (e.g.
    ``{"/opstore": OpStore(...).app}``). Starlette does not run a mounted app's lifespan, so
    pass it in ``lifespans`` if it has one; lifespans are entered in order (the mesh's first)
    and exited in reverse. A :class:`~flowplex.errors.FlowplexError` escaping a route answers
    4xx with a JSON ``detail``. ``/docs`` is Swagger UI from assets shipped in the package, and
    the dashboard's assets are served under ``/ui/static``: both work offline.
    """
    from fastapi.staticfiles import StaticFiles

    from ._dashboard import STATIC_DIR, STATIC_PREFIX, docs_router

    all_routers = [*routers, *pages, docs_router(title)]
    all_lifespans = list(lifespans)
    if mesh is not None:
        from ..mesh import mesh_router

        all_routers.append(mesh_router(mesh))
        all_lifespans.insert(0, mesh.lifespan)
    static: ASGIApp = StaticFiles(directory=STATIC_DIR)
    all_mounts = {STATIC_PREFIX: static, **(mounts or {})}
    return compose_app(
        routers=all_routers,
        mounts=all_mounts,
        lifespans=all_lifespans,
        title=title,
        docs=False,
        signing=mesh.signing() if mesh is not None else None,
    )
