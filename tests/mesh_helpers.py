"""Helpers of the mesh tests: free ports, services in processes, waiting on state, loaders."""

from __future__ import annotations

import asyncio
import multiprocessing
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractAsyncContextManager, contextmanager
from multiprocessing.process import BaseProcess
from types import TracebackType
from typing import Any

import httpx
import uvicorn

from flowplex import AtomicFlow, FlowMessage
from flowplex._httpsign import SigningAuth
from flowplex.identity import KeyPair, generate_key_pair
from flowplex.mesh import run_service

#: The seed's processes are forked, as its notebook does (Linux's default).
CTX = multiprocessing.get_context("fork")

#: Liveness knobs for the scenario tests: heartbeats far apart, so timestamps only move when a
#: test makes them move.
QUIET = {
    "heartbeat_interval": 300.0,
    "retry_initial": 0.05,
    "retry_max": 0.5,
    "log_level": "warning",
}


#: The key in-process tests sign their writes with; registries under test trust it as an
#: operator (so it may connect simulated peers) unless a test says otherwise.
OPERATOR = generate_key_pair()


def free_url() -> str:
    """``http://localhost:<a free port>`` (loopback as the mesh spells it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://localhost:{port}"


def wait_until(check: Callable[[], Any], timeout: float = 30.0, what: str = "condition") -> Any:
    """Poll ``check`` until it returns something truthy (HTTP errors count as not yet)."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            value = check()
        except httpx.HTTPError as exc:
            last = exc
        else:
            last = value
            if value:
                return value
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what} (last: {last!r})")


def get(url: str, path: str = "/", **params: Any) -> Any:
    """GET JSON, asserting 200."""
    resp = httpx.get(url + path, params=params, timeout=10)
    assert resp.status_code == 200, resp.text
    return resp.json()


def is_idle(*urls: str) -> bool:
    """True when every service answers and reports ``idle``."""
    return all(get(u)["idle"] for u in urls)


def wait_idle(*urls: str, timeout: float = 30.0) -> None:
    """Wait until every service is up and idle."""
    wait_until(lambda: is_idle(*urls), timeout, f"{urls} idle")


#: Services under test sign with OPERATOR and trust it: each may connect to any other (the
#: trust rules themselves are tested in test_security.py).
TRUSTED: dict[str, Any] = {"key": OPERATOR, "operators": [OPERATOR.user_id]}


def start(**kwargs: Any) -> BaseProcess:
    """``run_service(**kwargs)`` in a forked process; returns once it answers ``GET /``."""
    proc = CTX.Process(target=run_service, kwargs={**QUIET, **TRUSTED, **kwargs}, daemon=True)
    proc.start()
    url = kwargs["url"]
    wait_until(lambda: httpx.get(url, timeout=2).status_code == 200, what=f"{url} up")
    return proc


def stop(proc: BaseProcess) -> None:
    """Terminate (SIGTERM: a graceful uvicorn shutdown) and join."""
    proc.terminate()
    proc.join(15)
    assert not proc.is_alive(), "the service did not stop on SIGTERM"


@contextmanager
def services() -> Iterator[list[BaseProcess]]:
    """A list to put started processes in; each still alive is stopped at the end."""
    procs: list[BaseProcess] = []
    try:
        yield procs
    finally:
        for proc in procs:
            if proc.is_alive():
                proc.terminate()
        for proc in procs:
            proc.join(15)
            if proc.is_alive():  # pragma: no cover - only when a shutdown hangs
                proc.kill()
                proc.join()


def html_rows(page: str) -> list[list[str]]:
    """The cells of the HTML table's body rows, tags stripped."""
    body = page.split("<tbody>", 1)[1].split("</tbody>", 1)[0]
    rows = []
    for row in re.findall(r"<tr>(.*?)</tr>", body):
        cells = re.findall(r"<td[^>]*>(.*?)</td>", row)
        rows.append([re.sub(r"<[^>]+>", " ", c).strip() for c in cells])
    return rows


class Server:
    """uvicorn serving an ASGI app in a thread of this process."""

    def __init__(self, app: Any) -> None:
        config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="off")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 30
        while not self._server.started:
            assert self._thread.is_alive(), "uvicorn failed to start"
            assert time.monotonic() < deadline, "uvicorn did not start in 30 s"
            time.sleep(0.01)
        port = self._server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=30)


class AppClient:
    """A synchronous client of an ASGI app in this process, its lifespan running around it.

    Requests go through httpx's ASGITransport on a private event loop (signed by ``key``, if
    given, from the ``client`` address); background tasks the app starts run while requests are
    being served.
    """

    def __init__(
        self, app: Any, key: KeyPair | None = None, client: tuple[str, int] = ("127.0.0.1", 123)
    ) -> None:
        self.app = app
        self.loop = asyncio.new_event_loop()
        self.client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app, client=client),
            base_url="http://testserver",
            auth=SigningAuth(key) if key is not None else None,
        )
        self._lifespan: AbstractAsyncContextManager[Any] | None = None

    def __enter__(self) -> AppClient:
        self._lifespan = self.app.router.lifespan_context(self.app)
        self.loop.run_until_complete(self._lifespan.__aenter__())
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            self.loop.run_until_complete(self.client.aclose())
            if self._lifespan is not None:
                self.loop.run_until_complete(self._lifespan.__aexit__(None, None, None))
        finally:
            self.loop.close()

    def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        return self.loop.run_until_complete(self.client.request(method, url, **kwargs))

    def get(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("GET", url, **kwargs)

    def post(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("POST", url, **kwargs)


# -- the seed's loaders --------------------------------------------------------------------------


def loader1() -> list[dict[str, Any]]:
    return [{"url": "/mytest", "name": "mytest"}]


def loader2() -> list[dict[str, Any]]:
    return [{"url": "/mytest2", "name": "mytest2"}]


def loader3() -> list[dict[str, Any]]:
    return [
        {
            "url": "/mytest2",
            "name": "mytest2",
            "description": "This is a testing flow",
            "author": "michi.rau@gmail.com",
        }
    ]


class TaggedFlow(AtomicFlow):
    """A flow whose default config carries an author and tags, for the node-database loader."""

    default_config = {
        "name": "Tagged",
        "description": "A flow with tags & <markup>",
        "author": "ada@example.org",
        "tags": ["nlp", "beta"],
    }

    def run(self, input_message: FlowMessage) -> dict[str, Any]:
        return {"ok": True}
