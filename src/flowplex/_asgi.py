"""The FastAPI and uvicorn pieces shared by every flowplex HTTP service.

An app composed from routers, mounted ASGI apps and lifespans, with flowplex errors answered as
4xx JSON; and the one way to listen on a URL and serve an app there. It sits low so that both the
subsystems (``mesh.run_service``) and the composition root (``flowplex.server``) build on it
without importing each other.
"""

from __future__ import annotations

import os
import signal
import socket
import threading
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from typing import Any
from urllib.parse import urlsplit

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp

from ._version import __version__
from .errors import ConfigurationError, FlowplexError

__all__ = ["Lifespan", "compose_app", "listen", "serve"]

#: A lifespan: called with the app, an async context manager around the server's life.
Lifespan = Callable[[FastAPI], AbstractAsyncContextManager[Any]]


async def _flowplex_error(request: Request, exc: Exception) -> JSONResponse:
    # A flowplex error escaping a route is a request the service cannot honour, not a crash.
    status = 422 if isinstance(exc, ConfigurationError) else 400
    return JSONResponse({"detail": str(exc)}, status_code=status)


def compose_app(
    *,
    routers: Sequence[APIRouter] = (),
    mounts: Mapping[str, ASGIApp] | None = None,
    lifespans: Sequence[Lifespan] = (),
    title: str = "flowplex",
    docs: bool = True,
) -> FastAPI:
    """A FastAPI app serving ``routers`` and ``mounts``, living as long as its ``lifespans``.

    With ``docs=False`` the app serves no ``/docs`` or ``/redoc`` of its own (FastAPI's load
    their assets from a CDN; a caller that ships its own passes a router for them).

    ``mounts`` maps a path prefix (``"/name"``) to any ASGI app. Starlette does not run a
    mounted app's lifespan, so pass it in ``lifespans``; they are entered in order and exited in
    reverse. A :class:`~flowplex.errors.FlowplexError` escaping a route answers 422 (a
    configuration error) or 400 with the message as JSON ``detail``.
    """
    prefixes = list((mounts or {}).items())
    for prefix, _ in prefixes:
        if not isinstance(prefix, str) or not prefix.startswith("/") or prefix.strip("/") == "":
            raise ConfigurationError(f"mount prefix must look like '/name', got {prefix!r}.")
    all_lifespans = list(lifespans)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            for item in all_lifespans:
                await stack.enter_async_context(item(app))
            yield

    app = FastAPI(
        title=title,
        version=__version__,
        lifespan=lifespan,
        docs_url="/docs" if docs else None,
        redoc_url="/redoc" if docs else None,
    )
    app.add_exception_handler(FlowplexError, _flowplex_error)
    for router in routers:
        app.include_router(router)
    for prefix, sub in prefixes:
        app.mount(prefix.rstrip("/"), sub)
    return app


_DEFAULT_PORTS = {"http": 80, "https": 443}


def listen(url: str, what: str = "the service") -> tuple[socket.socket, str]:
    """A socket listening where ``url`` (``http://host:port``) says, and the URL it serves.

    Port 0 takes any free port, and the URL returned names the port actually bound, so bind
    before printing where to connect. Raises :class:`ConfigurationError` naming ``what`` when
    the URL is malformed or the address cannot be bound (a taken port, say).
    """
    parts = urlsplit(url)
    try:
        # A URL may leave out its scheme's default port (canonical mesh URLs do).
        port = parts.port or _DEFAULT_PORTS.get(parts.scheme)
    except ValueError:
        port = None
    if parts.scheme not in _DEFAULT_PORTS or not parts.hostname or port is None:
        raise ConfigurationError(f"{what}: {url!r} is not a URL like http://127.0.0.1:8765.")
    host = parts.hostname
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        sock = socket.create_server((host, port), family=family)
    except OSError as exc:
        raise ConfigurationError(
            f"{what} at {url} did not start: cannot listen on {host}:{port}: {exc}"
        ) from None
    shown = f"[{host}]" if family == socket.AF_INET6 else host
    return sock, f"{parts.scheme}://{shown}:{sock.getsockname()[1]}"


def serve(
    app: ASGIApp,
    sock: socket.socket,
    *,
    log_level: str = "warning",
    on_stop: Callable[[str], None] | None = None,
    finishing: str = "finishing the requests in hand",
) -> None:
    """Serve ``app`` on the listening ``sock`` until SIGINT/SIGTERM, then shut down cleanly.

    The app's lifespan runs around the server's life. The first signal calls ``on_stop`` with
    a line saying what the server is ``finishing``; a second one exits the process at once
    (code 130). Raises :class:`ConfigurationError` when the server does not start (a failing
    lifespan startup, say) instead of exiting the process as uvicorn would. The socket is
    closed on the way out.
    """
    import uvicorn

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: Any) -> None:
            if self.should_exit:
                if on_stop is not None:
                    on_stop("interrupted again: exiting now, without finishing")
                os._exit(130)
            if on_stop is not None:
                on_stop(f"stopping: {finishing} (Ctrl-C again to exit at once)")
            super().handle_exit(sig, frame)

    config = uvicorn.Config(
        app, log_level=log_level.lower(), lifespan="on", timeout_graceful_shutdown=3
    )
    server = Server(config)
    where = "{}:{}".format(*sock.getsockname()[:2])
    # uvicorn shuts down gracefully on SIGINT/SIGTERM, then raises the signal again into the
    # handler it found: with the default ones the process would die (or raise
    # KeyboardInterrupt) before the caller's clean-up runs. Found, ours just let it return.
    previous = {}
    if threading.current_thread() is threading.main_thread():
        previous = {sig: signal.signal(sig, _stopped) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        server.run(sockets=[sock])
    except SystemExit as exc:
        raise ConfigurationError(
            f"the service on {where} did not start (see the log above)."
        ) from exc
    finally:
        sock.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if not server.started:  # older uvicorn returns after a failed lifespan startup
        raise ConfigurationError(f"the service on {where} did not start (see the log above).")


def _stopped(signum: int, frame: object) -> None:
    """The server already shut down on this signal: nothing more to do."""
