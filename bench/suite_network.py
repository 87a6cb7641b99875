"""Flows over the network: a flow on another node called over HTTP, against the floor of a raw
HTTP keep-alive round trip measured in the same run.

- "network floor: HTTP keep-alive": an httpx keep-alive client POSTs a small JSON body to a
  FastAPI echo route served by uvicorn in another process (what any HTTP hop costs here);
- "network: cross-node hop": ``flowplex.connect(node).get_flow_instance(...)`` then
  ``get_reply_future(msg).get_data()`` again and again, the flow served by a ``flowplex up``
  process (SQLite, one dispatch worker): signed requests, the message queued and run there,
  the reply fetched back;
- "network: cross-node hop, 8 in flight": eight requests outstanding (replies per second);
- "network: composite over 2 nodes": a blocking composite on node X whose two subflows are
  on node Y (two hops through X's links and Y's reply link, each message durable on both).

The floor and the hop are measured in turns of 50 calls (``measure_interleaved``), so that
what changes on the machine meanwhile weighs on both alike. The runner holds the target: the
hop's p50 at most 3x the floor's.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from _common import Result, measure, measure_interleaved, pipelined

TARGETS: dict[str, tuple[str, float]] = {}  # the runner lists the cross-node hop target
NAMES = (
    "network floor: HTTP keep-alive",
    "network: cross-node hop",
    "network: cross-node hop, 8 in flight",
    "network: composite over 2 nodes",
)

_ECHO = """
import sys, uvicorn
from fastapi import FastAPI, Request
app = FastAPI()
@app.post("/echo")
async def echo(request: Request):
    return await request.json()
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
"""


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_up(url: str, proc: subprocess.Popen[bytes], path: str) -> None:
    import httpx

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url} exited")
        try:
            httpx.request("POST" if path == "/echo" else "GET", url + path, json={}, timeout=2)
            return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not start")


@contextmanager
def _process(command: list[str], url: str, path: str, env: dict[str, str]) -> Iterator[None]:
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    try:
        _wait_up(url, proc, path)
        yield
    finally:
        proc.terminate()
        proc.wait(30)


def _node(home: Path, *extra: str) -> tuple[list[str], str, dict[str, str]]:
    url = f"http://127.0.0.1:{_free_port()}"
    env = {**os.environ, "FLOWPLEX_HOME": str(home)}
    env.pop("FLOWPLEX_DB", None)
    command = [sys.executable, "-m", "flowplex", "up", "--url", url, "--home", str(home)]
    command += ["--db", f"sqlite:///{home / 'flowplex.db'}", "--no-opstore", *extra]
    return command, url, env


def run(quick: bool, only: str) -> list[Result]:
    """Run the scenarios whose name contains ``only`` (all when empty)."""
    if only and not any(only in name for name in NAMES):
        return []
    import httpx

    import flowplex
    from flowplex import serving
    from flowplex.runtime import local_key

    n = 100 if quick else 1000
    warmup = 20 if quick else 100
    results = []
    port = _free_port()
    floor_url = f"http://127.0.0.1:{port}"
    echo = [sys.executable, "-c", _ECHO, str(port)]
    body = {"data": {"number": 1234}, "message_id": "x" * 36}

    with (
        tempfile.TemporaryDirectory(prefix="flowplex-bench-net-") as tmp,
        _process(echo, floor_url, "/echo", dict(os.environ)),
        httpx.Client(base_url=floor_url, trust_env=False) as http,
    ):

        def floor() -> Any:
            return http.post("/echo", json=body).json()

        y_home, x_home = Path(tmp) / "y", Path(tmp) / "x"
        y_db, x_db = f"sqlite:///{y_home / 'flowplex.db'}", f"sqlite:///{x_home / 'flowplex.db'}"
        user_b = flowplex.start_node(path=y_home, db=y_db)
        serving.serve_flow(user_b, "flowplex.examples.ReverseNumberAtomicFlow", "reverse")
        user_a = flowplex.start_node(path=x_home, db=x_db)
        serving.serve_flow(user_a, "flowplex.examples.ReverseNumberBlockingSequentialFlow", "twice")
        y_command, y_url, y_env = _node(y_home, "--workers", "2")
        x_command, x_url, x_env = _node(x_home, "--workers", "2")
        with (
            _process(y_command, y_url, "/counts", y_env),
            _process(x_command, x_url, "/counts", x_env),
        ):
            key = local_key(user_a.node, user_a.get_user_id())
            remote = flowplex.connect(y_url, key)
            proxy = remote.get_flow_instance("reverse")

            def hop() -> Any:
                message = proxy.package_input_message({"number": 1234})
                return proxy.get_reply_future(message).get_data(timeout=30)

            results.extend(
                measure_interleaved(
                    [("network floor: HTTP keep-alive", floor), ("network: cross-node hop", hop)],
                    n,
                    warmup,
                    block=50,
                )
            )
            proxies = [remote.get_flow_instance("reverse") for _ in range(8)]

            def send(i: int) -> Callable[[], Any]:
                p = proxies[i % 8]
                future = p.get_reply_future(p.package_input_message({"number": 1234}))
                return lambda: future.get_data(timeout=30)

            results.append(pipelined("network: cross-node hop, 8 in flight", send, n, 8, warmup))
            where = {"node_url": y_url, "flow_endpoint": "reverse"}
            overrides = {
                "subflows_config": {
                    k: dict(where) for k in ("first_reverse_flow", "second_reverse_flow")
                }
            }
            composite = serving.get_flow_instance(user_a, "twice", config_overrides=overrides)
            results.append(
                measure(
                    "network: composite over 2 nodes",
                    lambda: hop_on(composite),
                    n // 4,
                    warmup // 4,
                )
            )
        user_a.node.close()
        user_b.node.close()
    for result in results:
        result.group = "network"
    return results


def hop_on(proxy: Any) -> Any:
    """One round trip through ``proxy``."""
    message = proxy.package_input_message({"number": 1234})
    return proxy.get_reply_future(message).get_data(timeout=30)
