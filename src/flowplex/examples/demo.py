"""The serving walk-through that ``flowplex demo`` runs.

Two users on one node: user 0 serves the ReverseNumber flows, mounts, unserves and deletes them;
then user 1 composes user 0's singleton flow. Then two nodes on this machine, each a ``flowplex
up`` process: user B serves the atomic flow on one, user A on the other finds it through the
registry and composes it over HTTP. Every step prints what it did and what came back.

The demo runs on a node of its own: a fresh temporary folder (removed at the end) unless it is
given a home or a database, and then only if that node serves nothing yet, so it never touches a
node someone uses.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

from .. import serving
from ..errors import ConfigurationError, FlowplexError
from ..runtime import Node, open_node, start_node, start_node_with_users
from ..workers import run_dispatch_worker_thread

ATOMIC = "flowplex.examples.ReverseNumberAtomicFlow"
SEQUENTIAL = "flowplex.examples.ReverseNumberSequentialFlow"


class _Console(Protocol):
    def print(self, *objects: Any, **kwargs: Any) -> None: ...

    def rule(self, title: str = "") -> None: ...


def run_demo(
    console: _Console,
    number: int = 1234,
    db: str | None = None,
    home: str | Path | None = None,
) -> None:
    """Run the walk-through on the node at ``db`` with its files in ``home``.

    Neither given: a fresh temporary node, removed at the end. Given: that node, which must
    serve no endpoint yet (:class:`~flowplex.errors.ConfigurationError` otherwise); the demo
    removes the endpoints it served when it ends. ``FLOWPLEX_HOME`` and ``FLOWPLEX_DB`` are
    not read: the demo never runs on the node they name unless told to.
    """
    scratch: Path | None = None
    if home is None:
        scratch = node_home = Path(tempfile.mkdtemp(prefix="flowplex-demo-"))
    else:
        node_home = Path(home)
    url = db or f"sqlite:///{node_home / 'flowplex.db'}"
    try:
        if db is not None or home is not None:
            _require_fresh(open_node(url, node_home), url)
        u0, u1 = start_node_with_users(2, path=node_home, db=url)
        say = console.print
        show = _Show(console)
        show.step("Node")
        where = "a temporary node, removed at the end" if scratch is not None else "the node"
        say(f"{where}: database {url}", highlight=False, soft_wrap=True)
        say(f"user 0: {u0.get_user_id()}\nuser 1: {u1.get_user_id()}")
        run_dispatch_worker_thread(u0)
        run_dispatch_worker_thread(u1)
        say("one dispatch worker thread per user (blocking composites need no second one)")
        try:
            _one_user(show, u0, number)
            _two_users(show, u0, u1, number)
        finally:
            serving.delete_all_flow_endpoints(u0)
            serving.delete_all_flow_endpoints(u1)
            u0.node.close()
        show.step("done: endpoints removed, node closed")
        _two_nodes(show, number)
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)


def _require_fresh(node: Node, url: str) -> None:
    """Refuse a node that serves anything: the demo deletes every endpoint it ends with."""
    try:
        served = [
            endpoint.endpoint
            for user in node.users()
            for endpoint in node.backend.list_endpoints(user.get_user_id())
        ]
    except BaseException:
        node.close()
        raise
    if served:
        node.close()
        raise ConfigurationError(
            f"the demo needs a node of its own, but the node at {url} serves "
            f"{len(served)} endpoint(s) ({', '.join(sorted(served)[:3])}...): run it without "
            f"--home and --db (a temporary node), or give an empty --home."
        )


class _Show:
    """Printing helpers of the demo: step headers, trees, timed requests."""

    def __init__(self, console: _Console) -> None:
        self.console = console

    def say(self, *objects: Any, **kwargs: Any) -> None:
        self.console.print(*objects, **kwargs)

    def step(self, title: str) -> None:
        self.console.rule(f"[bold]{title}")

    def tree(self, cl: Any, values: bool = False) -> None:
        text = serving.format_served_flows(cl, print_values=values)
        self.console.print(text or "(no served flows)", highlight=False)

    def ask(self, proxy: Any, data: dict[str, Any]) -> Any:
        start = time.perf_counter()
        reply = proxy.get_reply_future(proxy.package_input_message(data)).get_data(timeout=30)
        elapsed = (time.perf_counter() - start) * 1000
        self.console.print(f"sent {data} -> reply {reply}  ({elapsed:.2f} ms)")
        return reply


def _one_user(show: _Show, u0: Any, number: int) -> None:
    """One user: serve, mount, send, unserve, delete."""
    show.step("One user - 1. user 0 serves the atomic and the sequential flow")
    show.say(f"serve_flow atomic -> {serving.serve_flow(u0, ATOMIC, 'reverse_number_atomic')}")
    served = serving.serve_flow(u0, SEQUENTIAL, "reverse_number_sequential")
    show.say(f"serve_flow sequential -> {served}")
    show.say(
        f"serve_flow atomic again -> {serving.serve_flow(u0, ATOMIC, 'reverse_number_atomic')}"
    )
    show.tree(u0, values=True)

    show.step("2. mount the sequential flow: its subflows are mounted first")
    flow = serving.get_flow_instance(u0, "reverse_number_sequential")
    show.tree(u0)
    show.say(f"instances:\n{serving.format_flow_instances(u0)}", highlight=False)
    show.say(f"metadata: {serving.get_flow_instance_metadata(u0, flow.get_instance_id())}")

    show.step(f"3. send {number}: reversed twice")
    show.ask(flow, {"id": 0, "number": number})

    show.step("4. unserve the atomic flow: instances keep working, new mounts fail")
    serving.unserve_flow(u0, "reverse_number_atomic")
    show.say(f"is_flow_served -> {serving.is_flow_served(u0, 'reverse_number_atomic')}")
    show.ask(flow, {"id": 1, "number": number})
    try:
        serving.get_flow_instance(u0, "reverse_number_sequential")
    except FlowplexError as exc:
        show.say(f"[yellow]{type(exc).__name__}[/]: {exc}", highlight=False)

    show.step("5. delete the atomic endpoint, the composite instance, then everything")
    serving.delete_flow_endpoint(u0, "reverse_number_atomic")
    show.tree(u0)
    serving.delete_flow_instance(u0, flow.get_instance_id())
    try:
        show.ask(flow, {"id": 2, "number": number})
    except FlowplexError as exc:
        show.say(f"message to the deleted instance -> [yellow]{type(exc).__name__}[/]: {exc}")
    serving.delete_all_flow_endpoints(u0)
    show.tree(u0)


def _two_users(show: _Show, u0: Any, u1: Any, number: int) -> None:
    """Two users: user 1 composes user 0's singleton flow."""
    show.step("Two users - 6. user 0 serves the atomic flow as a singleton")
    serving.serve_flow(u0, ATOMIC, "reverse_number_atomic", singleton=True)

    show.step("7. user 1 serves the sequential flow, whose subflows are user 0's")
    serving.serve_flow(u1, SEQUENTIAL, "reverse_number_sequential")
    overrides = {
        "subflows_config": {
            "first_reverse_flow": {"user_id": u0.get_user_id()},
            "second_reverse_flow": {"user_id": u0.get_user_id()},
        }
    }
    start = time.perf_counter()
    composite = serving.get_flow_instance(
        u1, "reverse_number_sequential", config_overrides=overrides
    )
    show.say(f"cross-user mount: {(time.perf_counter() - start) * 1000:.2f} ms")
    show.ask(composite, {"id": 0, "number": number})

    show.step("8. user 1 mounts user 0's endpoint directly")
    remote = serving.get_flow_instance(u1, "reverse_number_atomic", user_id=u0.get_user_id())
    show.ask(remote, {"id": 0, "number": number})

    show.step("9. the trees: user 0 sees user 1's mount under mounts/<user 1 id>/")
    show.say("user 0:")
    show.tree(u0)
    show.say("user 1:")
    show.tree(u1)


def _db(home: Path) -> str:
    # Named, never taken from FLOWPLEX_DB: the demo's nodes are its own.
    return f"sqlite:///{home / 'flowplex.db'}"


def _free_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


@contextmanager
def _up(home: Path, url: str, *extra: str) -> Iterator[str]:
    """A ``flowplex up`` process serving the node in ``home`` at ``url``; the URL once it
    answers."""
    import httpx

    env = {**os.environ, "FLOWPLEX_HOME": str(home)}
    env.pop("FLOWPLEX_DB", None)
    command = [sys.executable, "-m", "flowplex", "up", "--url", url, "--home", str(home)]
    command += ["--db", _db(home)]
    command += ["--no-opstore", "--heartbeat", "0.5", *extra]
    with (home / "up.log").open("wb") as log:
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise ConfigurationError(
                    f"flowplex up at {url} did not start:\n{(home / 'up.log').read_text()}"
                )
            try:
                if httpx.get(f"{url}/counts", timeout=2.0, trust_env=False).is_success:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        yield url.replace("127.0.0.1", "localhost")
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _wait_listed(registry: str, endpoint: str) -> dict[str, Any]:
    import httpx

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        rows = httpx.get(f"{registry}/flows", params={"pp": 100}, trust_env=False).json()
        for row in rows["items"]:
            if row["url"] == f"/endpoints/{endpoint}" and row["status"] == "online":
                return dict(row)
        time.sleep(0.2)
    raise ConfigurationError(f"the registry at {registry} never listed {endpoint}.")


def _two_nodes(show: _Show, number: int) -> None:
    """Two nodes on this machine: user A on node X composes user B's flow on node Y over HTTP,
    found through the registry node X runs."""
    scratch = Path(tempfile.mkdtemp(prefix="flowplex-demo-net-"))
    try:
        show.step(
            "Two nodes - 10. user B serves the atomic flow on node Y, user A the composite on X"
        )
        user_b = start_node(path=scratch / "y", db=_db(scratch / "y"))
        serving.serve_flow(user_b, ATOMIC, "reverse_number_atomic", singleton=True)
        user_a = start_node(path=scratch / "x", db=_db(scratch / "x"))
        serving.serve_flow(user_a, SEQUENTIAL, "reverse_number_sequential")
        show.say(f"user A: {user_a.get_user_id()}\nuser B: {user_b.get_user_id()}")
        x_at, y_at = _free_url(), _free_url()
        # Node X runs the registry, and lets node Y's registry connect to it.
        with (
            _up(scratch / "x", x_at, "--peer", y_at) as x_url,
            _up(scratch / "y", y_at, "--connect", x_at) as y_url,
        ):
            show.say(f"node X (and registry): {x_url}\nnode Y: {y_url}", highlight=False)

            show.step("11. node Y registers its flows with the registry on node X")
            row = _wait_listed(x_url, "reverse_number_atomic")
            show.say(f"listed: {row['name']} at {row['node']}{row['url']}", highlight=False)

            show.step("12. user A composes it: subflows found through the registry, over HTTP")
            where = {"registry": x_url, "flow_endpoint": "reverse_number_atomic"}
            keys = ("first_reverse_flow", "second_reverse_flow")
            overrides = {"subflows_config": {k: dict(where) for k in keys}}
            start = time.perf_counter()
            composite = serving.get_flow_instance(
                user_a, "reverse_number_sequential", config_overrides=overrides
            )
            show.say(f"cross-node mount: {(time.perf_counter() - start) * 1000:.2f} ms")
            show.ask(composite, {"id": 0, "number": number})

            show.step("13. user A mounts it by name@registry and calls it directly")
            remote = serving.get_flow_instance(user_a, f"reverse_number_atomic@{x_url}")
            show.ask(remote, {"id": 1, "number": number})
        user_a.node.close()
        user_b.node.close()
        show.step("done: both nodes stopped, their folders removed")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
