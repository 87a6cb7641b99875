"""The served scenario of seeds 000 and 001, as ``flowplex demo`` runs it.

Two users on one node (the embedded SQLite default unless told otherwise): user 0 serves the
ReverseNumber flows, mounts, unserves and deletes them (seed 000); then user 1 composes user 0's
singleton flow (seed 001). Every step prints what it did and what came back.
"""

from __future__ import annotations

import time
from typing import Any, Protocol

from .. import serving
from ..config import Settings
from ..errors import FlowplexError
from ..runtime import start_node_with_users
from ..workers import run_dispatch_worker_thread

ATOMIC = "flowplex.examples.ReverseNumberAtomicFlow"
SEQUENTIAL = "flowplex.examples.ReverseNumberSequentialFlow"


class _Console(Protocol):
    def print(self, *objects: Any, **kwargs: Any) -> None: ...

    def rule(self, title: str = "") -> None: ...


def run_demo(console: _Console, number: int = 1234, db: str | None = None) -> None:
    """Run the scenario on the node at ``db`` (default: FLOWPLEX_DB / FLOWPLEX_HOME)."""
    settings = Settings.from_env()
    url = db or settings.db_url
    u0, u1 = start_node_with_users(
        2, path=settings.home if url == settings.db_url else None, db=url
    )
    say = console.print
    show = _Show(console)
    show.step("Node")
    say(f"database: {url}")
    say(f"user 0: {u0.get_user_id()}\nuser 1: {u1.get_user_id()}")
    run_dispatch_worker_thread(u0)
    run_dispatch_worker_thread(u1)
    say("one dispatch worker thread per user (blocking composites need no second one)")
    try:
        _seed_000(show, u0, number)
        _seed_001(show, u0, u1, number)
    finally:
        serving.delete_all_flow_endpoints(u0)
        serving.delete_all_flow_endpoints(u1)
        u0.node.close()
    show.step("done: endpoints removed, node closed")


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


def _seed_000(show: _Show, u0: Any, number: int) -> None:
    """One user: serve, mount, send, unserve, delete."""
    show.step("Seed 000 - 1. user 0 serves the atomic and the sequential flow")
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


def _seed_001(show: _Show, u0: Any, u1: Any, number: int) -> None:
    """Two users: user 1 composes user 0's singleton flow."""
    show.step("Seed 001 - 6. user 0 serves the atomic flow as a singleton")
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
