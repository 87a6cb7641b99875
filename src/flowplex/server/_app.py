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
) -> FastAPI:
    """A FastAPI app serving ``mesh`` (its routes at the root), ``routers`` and ``mounts``.

    ``mounts`` maps a path prefix to any ASGI app (e.g. ``{"/opstore": OpStore(...).app}``).
    Starlette does not run a mounted app's lifespan, so pass it in ``lifespans`` if it has one;
    lifespans are entered in order (the mesh's first) and exited in reverse. A
    :class:`~flowplex.errors.FlowplexError` escaping a route answers 4xx with a JSON ``detail``.
    """
    all_routers = list(routers)
    all_lifespans = list(lifespans)
    if mesh is not None:
        from ..mesh import mesh_router

        all_routers.insert(0, mesh_router(mesh))
        all_lifespans.insert(0, mesh.lifespan)
    return compose_app(routers=all_routers, mounts=mounts, lifespans=all_lifespans, title=title)
