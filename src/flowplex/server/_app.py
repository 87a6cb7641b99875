"""The app factory: routers, mounted ASGI apps and lifespans composed into one FastAPI app."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp

from .._version import __version__
from ..errors import ConfigurationError, FlowplexError

if TYPE_CHECKING:
    from ..mesh._service import MeshService

__all__ = ["Lifespan", "create_app"]

#: A lifespan: called with the app, an async context manager around the server's life.
Lifespan = Callable[[FastAPI], AbstractAsyncContextManager[Any]]


async def _flowplex_error(request: Request, exc: Exception) -> JSONResponse:
    # A flowplex error escaping a route is a request the service cannot honour, not a crash.
    status = 422 if isinstance(exc, ConfigurationError) else 400
    return JSONResponse({"detail": str(exc)}, status_code=status)


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
    lifespans are entered in order (the mesh's first) and exited in reverse.
    """
    all_lifespans: list[Lifespan] = []
    all_routers = list(routers)
    if mesh is not None:
        from ..mesh._routes import mesh_router

        all_lifespans.append(mesh.lifespan)
        all_routers.insert(0, mesh_router(mesh))
    all_lifespans.extend(lifespans)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            for item in all_lifespans:
                await stack.enter_async_context(item(app))
            yield

    app = FastAPI(title=title, version=__version__, lifespan=lifespan)
    app.add_exception_handler(FlowplexError, _flowplex_error)
    for router in all_routers:
        app.include_router(router)
    for prefix, sub in (mounts or {}).items():
        if not prefix.startswith("/") or prefix == "/":
            raise ConfigurationError(f"mount prefix must look like '/name', got {prefix!r}.")
        app.mount(prefix.rstrip("/"), sub)
    return app
