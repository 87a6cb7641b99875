"""The FastAPI and uvicorn pieces shared by every flowplex HTTP service.

An app composed from routers, mounted ASGI apps and lifespans, with flowplex errors answered as
4xx JSON; the one check of signed requests (:func:`signed_caller`, configured per app by
:class:`RequestSigning`); and the one way to listen on a URL and serve an app there. It sits low
so that both the subsystems (``mesh.run_service``) and the composition root
(``flowplex.server``) build on it without importing each other.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from typing import Annotated, Any
from urllib.parse import urlsplit

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.types import ASGIApp

from ._version import __version__
from .errors import ConfigurationError, FlowplexError, PermissionDeniedError, SignatureError
from .identity import NonceCache, _verify_headers, verify_request

__all__ = [
    "PROBLEM_RESPONSES",
    "BodyLimit",
    "Lifespan",
    "Problem",
    "RequestSigning",
    "SignedCaller",
    "compose_app",
    "listen",
    "serve",
    "signed_caller",
]

_log = logging.getLogger("flowplex.security")


class Problem(BaseModel):
    """A client mistake: ``detail`` says what is wrong (a text, or the list of problems of a
    body that does not fit its model)."""

    detail: str | list[dict[str, Any]]


#: The 4xx answers a flowplex router documents: every one is a :class:`Problem`.
PROBLEM_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": Problem, "description": text}
    for status, text in (
        (401, "the request is not signed, or its signature is invalid or replayed"),
        (403, "the signer may not do this"),
        (413, "the body is too large"),
        (422, "the request does not fit the route"),
    )
}

#: The largest body :func:`signed_caller` reads to check its digest, unless configured.
DEFAULT_MAX_SIGNED_BODY = 16 * 1024 * 1024


@dataclass
class RequestSigning:
    """How an app checks signed requests; :meth:`install` it on the app.

    ``window``: how old (seconds) a signature may be; ``nonces``: the replay cache (one per
    app, or shared by apps that must not accept each other's replays); ``max_body``: the
    largest body read to check its digest (413 beyond). ``insecure=True`` accepts unsigned
    requests (the old wire protocol, for migration and tests) and says so in the log.
    """

    window: float = 300.0
    nonces: NonceCache = field(default_factory=NonceCache)
    max_body: int = DEFAULT_MAX_SIGNED_BODY
    insecure: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.window, int | float) or not 0 < self.window <= 86_400:
            raise ConfigurationError(f"window must be in (0, 86400] seconds, got {self.window!r}")
        if not isinstance(self.nonces, NonceCache):
            raise ConfigurationError("nonces must be a NonceCache.")
        if not isinstance(self.max_body, int) or self.max_body < 0:
            raise ConfigurationError(f"max_body must be a byte count, got {self.max_body!r}")

    def install(self, app: FastAPI, what: str = "this service") -> FastAPI:
        """Make ``app``'s :func:`signed_caller` follow these settings (logged when insecure)."""
        app.state.flowplex_signing = self
        if self.insecure:
            _log.warning(
                "%s accepts UNSIGNED writes (insecure mode): anyone who can reach it can "
                "change its state; use this only for migration and tests.",
                what,
            )
        return app


def _settings(request: Request) -> RequestSigning:
    state = request.app.state
    settings = getattr(state, "flowplex_signing", None)
    if settings is None:  # nothing installed: the default, which is signed
        settings = state.flowplex_signing = RequestSigning()
    assert isinstance(settings, RequestSigning)
    return settings


def request_target(request: Request) -> str:
    """The request's path and query as received (before any decoding), as signed."""
    raw = request.scope.get("raw_path") or request.scope.get("path", "/").encode("utf-8")
    target = bytes(raw).decode("latin-1")
    query = request.scope.get("query_string", b"")
    return f"{target}?{bytes(query).decode('latin-1')}" if query else target


def _unauthorized(exc: SignatureError) -> HTTPException:
    return HTTPException(
        401, detail=str(exc), headers={"WWW-Authenticate": 'Signature realm="flowplex"'}
    )


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refused (413) as soon as it exceeds ``limit`` bytes (never buffered past it)."""
    too_large = HTTPException(413, detail=f"request body larger than {limit} bytes")
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise too_large
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise too_large
    request._body = bytes(body)  # what Request.body() returns from now on
    return request._body


def _is_signed(request: Request) -> bool:
    return "signature" in request.headers or "signature-input" in request.headers


async def signed_caller(request: Request) -> str | None:
    """The user id that signed this request; the one dependency of every state-changing route.

    Answers 401 (JSON ``detail``) when the request is unsigned, malformed, too old, replayed,
    or its body does not match its digest; 413 when the body is larger than the app's
    ``max_body``. In insecure mode an unsigned request passes with caller ``None`` (a signed
    one is still checked). Routes answer 403 themselves when the signer may not do the thing.
    """
    settings = _settings(request)
    if not _is_signed(request):
        if settings.insecure:
            return None
        raise _unauthorized(SignatureError("the request is not signed (Signature header)."))
    body = await read_body(request, settings.max_body)
    try:
        return verify_request(
            request.method,
            request_target(request),
            request.headers,
            body,
            nonces=settings.nonces,
            max_age=settings.window,
        )
    except SignatureError as exc:
        raise _unauthorized(exc) from None


def signed_headers(request: Request) -> tuple[str, str] | None:
    """For a route that streams its body: check everything but the body now.

    The signer and the ``Content-Digest`` the streamed body must still match (the route checks
    it before it keeps anything), or None for an unsigned request in insecure mode. Raises 401
    as :func:`signed_caller` does.
    """
    settings = _settings(request)
    if not _is_signed(request):
        if settings.insecure:
            return None
        raise _unauthorized(SignatureError("the request is not signed (Signature header)."))
    try:
        return _verify_headers(
            request.method,
            request_target(request),
            request.headers,
            nonces=settings.nonces,
            now=time.time(),
            max_age=settings.window,
        )
    except SignatureError as exc:
        raise _unauthorized(exc) from None


class BodyLimit:
    """ASGI middleware: request bodies over ``limit`` bytes get 413 with a JSON ``detail``.

    A declared ``Content-Length`` over the limit is refused before anything is read; a body
    streamed without one is cut off as soon as it grows past the limit (never buffered
    whole). ``overrides`` give other limits to paths ending as given (a streaming upload).
    """

    def __init__(self, app: ASGIApp, limit: int, overrides: Mapping[str, int] | None = None):
        self.app = app
        self.limit = limit
        self.overrides = dict(overrides or {})

    def _limit_for(self, path: str) -> int:
        for suffix, limit in self.overrides.items():
            if path.endswith(suffix):
                return limit
        return self.limit

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self._limit_for(scope.get("path", ""))
        detail = f"request body larger than {limit} bytes"
        for name, value in scope.get("headers", ()):
            if name == b"content-length" and value.isdigit() and int(value) > limit:
                response = JSONResponse({"detail": detail}, status_code=413)
                await response(scope, receive, send)
                return
        seen = 0

        async def limited() -> Any:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise HTTPException(413, detail=detail)
            return message

        await self.app(scope, limited, send)


#: A route parameter typed ``SignedCaller`` gets the verified signer (see :func:`signed_caller`).
SignedCaller = Annotated[str | None, Depends(signed_caller)]

#: A lifespan: called with the app, an async context manager around the server's life.
Lifespan = Callable[[FastAPI], AbstractAsyncContextManager[Any]]


async def _flowplex_error(request: Request, exc: Exception) -> JSONResponse:
    # A flowplex error escaping a route is a request the service cannot honour, not a crash.
    if isinstance(exc, SignatureError):
        status = 401
    elif isinstance(exc, PermissionDeniedError):
        status = 403
    else:
        status = 422 if isinstance(exc, ConfigurationError) else 400
    return JSONResponse({"detail": str(exc)}, status_code=status)


def compose_app(
    *,
    routers: Sequence[APIRouter] = (),
    mounts: Mapping[str, ASGIApp] | None = None,
    lifespans: Sequence[Lifespan] = (),
    title: str = "flowplex",
    docs: bool = True,
    signing: RequestSigning | None = None,
) -> FastAPI:
    """A FastAPI app serving ``routers`` and ``mounts``, living as long as its ``lifespans``.

    With ``docs=False`` the app serves no ``/docs`` or ``/redoc`` of its own (FastAPI's load
    their assets from a CDN; a caller that ships its own passes a router for them).

    ``mounts`` maps a path prefix (``"/name"``) to any ASGI app. Starlette does not run a
    mounted app's lifespan, so pass it in ``lifespans``; they are entered in order and exited in
    reverse. A :class:`~flowplex.errors.FlowplexError` escaping a route answers 422 (a
    configuration error) or 400 with the message as JSON ``detail`` (401 for a
    :class:`~flowplex.errors.SignatureError`, 403 for a
    :class:`~flowplex.errors.PermissionDeniedError`). ``signing`` configures the app's
    :func:`signed_caller` (default: signed, 300 s window).
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
    (signing or RequestSigning()).install(app, title)
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
        # Port 0 is a port (any free one), not a missing one.
        port = parts.port if parts.port is not None else _DEFAULT_PORTS.get(parts.scheme)
    except ValueError:
        port = None
    if parts.scheme not in _DEFAULT_PORTS or not parts.hostname or port is None:
        raise ConfigurationError(f"{what}: {url!r} is not a URL like http://127.0.0.1:8765.")
    host = parts.hostname
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # Not socket.create_server: its sockets say protocol 0, and asyncio turns Nagle's
    # algorithm off only on sockets that say TCP. With it on, a response written in two parts
    # (headers, then body) waits for the client's delayed ACK: ~40 ms per request.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        if os.name == "posix":
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind((host, port))
        sock.listen()
    except OSError as exc:
        sock.close()
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
