"""The same flows give the same results in-process and served, on every backend.

Each scenario below drives flows through a :class:`Runner` and returns what a user can observe:
reply data, error replies (remote type and message) and the final states of the instances
involved. It runs once through a ``LocalRuntime`` (the caller runs the messages) and once
through served instances with a dispatch worker thread on memory, SQLite and PostgreSQL, and
the observations must be identical. Where the answer is known, it is checked too, so both
paths cannot agree on a wrong one.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

import pytest

import flowplex
from flowplex import Client, FlowError, FlowFuture, FlowProxy, LocalRuntime, serving
from flowplex.workers import run_dispatch_worker_thread
from waiting import wait_for

TIMEOUT = 30.0  # every wait is bounded: a bug fails the test instead of hanging it

ATOMIC = "flowplex.examples.ReverseNumberAtomicFlow"
BLOCKING = "flowplex.examples.ReverseNumberBlockingSequentialFlow"
NON_BLOCKING = "flowplex.examples.ReverseNumberSequentialFlow"


class Runner(Protocol):
    """Mounts flows and reads their state, in-process or served."""

    def mount(
        self,
        class_path: str,
        overrides: dict[str, Any] | None = None,
        initial_state: dict[str, Any] | None = None,
    ) -> FlowProxy: ...

    def state(self, flow_id: str) -> dict[str, Any]: ...

    def config(self, flow_id: str) -> dict[str, Any]: ...

    def settle(self) -> None:
        """Let fire-and-forget work run to its end."""


class LocalRunner:
    def __init__(self) -> None:
        self.rt = LocalRuntime()

    def mount(
        self,
        class_path: str,
        overrides: dict[str, Any] | None = None,
        initial_state: dict[str, Any] | None = None,
    ) -> FlowProxy:
        return self.rt.get_flow_instance(class_path, overrides, initial_state)

    def state(self, flow_id: str) -> dict[str, Any]:
        return self.rt.get_flow_state(flow_id)

    def config(self, flow_id: str) -> dict[str, Any]:
        return self.rt.get_flow_config(flow_id)

    def settle(self) -> None:
        self.rt.run_until_idle()


class ServedRunner:
    """Serves each class (and its subflows) at an endpoint named after it; one worker thread."""

    def __init__(self, cl: Client) -> None:
        self.cl = cl
        run_dispatch_worker_thread(cl)

    def mount(
        self,
        class_path: str,
        overrides: dict[str, Any] | None = None,
        initial_state: dict[str, Any] | None = None,
    ) -> FlowProxy:
        serving.recursive_serve_flow(self.cl, class_path, class_path)
        return serving.get_flow_instance(
            self.cl, class_path, config_overrides=overrides, initial_state=initial_state
        )

    def state(self, flow_id: str) -> dict[str, Any]:
        return serving.get_flow_state(self.cl, flow_id)

    def config(self, flow_id: str) -> dict[str, Any]:
        record = self.cl.node.backend.get_instance(flow_id)
        assert record is not None
        return record.config

    def settle(self) -> None:
        wait_for(lambda: self.cl.node.backend.pending_count() == 0, "the queue to drain", TIMEOUT)


_INSTANCE_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def result(future: FlowFuture) -> dict[str, Any]:
    """The reply data, or the error reply's remote type and message.

    A subflow's error that a composite passes on names the subflow's instance, whose id differs
    between runs: it is masked, and the nested traceback left out.
    """
    try:
        return {"reply": future.get_data(timeout=TIMEOUT)}
    except FlowError as error:
        message = error.remote_message.split("\n\nRemote traceback:")[0]
        return {"error": [error.remote_type, _INSTANCE_ID.sub("<id>", message)]}


def ask(proxy: FlowProxy, data: dict[str, Any]) -> dict[str, Any]:
    return result(proxy.get_reply_future(proxy.package_input_message(data)))


def subflow_states(runner: Runner, proxy: FlowProxy) -> dict[str, Any]:
    """The composite's state and each subflow's, by subflow key."""
    config = runner.config(proxy.get_instance_id())
    states = {
        key: runner.state(entry["flow_id"]) for key, entry in config["subflows_config"].items()
    }
    return {"self": runner.state(proxy.get_instance_id()), **states}


# -- scenarios ---------------------------------------------------------------------------------


def reply_twice(runner: Runner) -> dict[str, Any]:
    proxy = runner.mount("testflows.ReplyTwiceFlow")
    seen = [ask(proxy, {"n": 1}), ask(proxy, {"n": 2})]
    assert seen == [{"reply": {"reply": "first"}}] * 2
    return {"seen": seen, "state": runner.state(proxy.get_instance_id())}


def raises(runner: Runner) -> dict[str, Any]:
    proxy = runner.mount("testflows.FailingFlow")
    seen = ask(proxy, {"x": 7})
    assert seen == {"error": ["ValueError", "boom on 7"]}
    # The instance stays usable, and its state is as it was before the failed run.
    return {"seen": [seen, ask(proxy, {"x": 8})], "state": runner.state(proxy.get_instance_id())}


def returns_a_list(runner: Runner) -> dict[str, Any]:
    proxy = runner.mount("testflows.ListReturnFlow")
    seen = ask(proxy, {})
    assert seen["error"][0] == "FlowDefinitionError"
    return {"seen": seen}


def bad_state(runner: Runner) -> dict[str, Any]:
    proxy = runner.mount("testflows.BadStateFlow")
    return {"seen": ask(proxy, {}), "state": runner.state(proxy.get_instance_id())}


def composite(class_path: str) -> Callable[[Runner], dict[str, Any]]:
    def scenario(runner: Runner) -> dict[str, Any]:
        proxy = runner.mount(class_path)
        # Two requests in flight at once, then a bad one whose subflow raises.
        futures = [
            proxy.get_reply_future(proxy.package_input_message({"number": n})) for n in (1234, 1200)
        ]
        seen = [result(f) for f in futures]
        assert seen == [{"reply": {"output_number": 1234}}, {"reply": {"output_number": 12}}]
        seen.append(ask(proxy, {"number": "nope"}))
        assert "error" in seen[-1]
        runner.settle()
        return {"seen": seen, "states": subflow_states(runner, proxy)}

    scenario.__name__ = class_path.rsplit(".", 1)[-1]
    return scenario


def interfaces(runner: Runner) -> dict[str, Any]:
    echo = runner.mount(
        "testflows.EchoFlow",
        {"input_interface": ["a"], "output_interface": {"keys_to_rename": {"a": "b"}}},
    )
    atomic = runner.mount(ATOMIC)
    seen = [ask(echo, {"a": 1, "c": 2}), ask(echo, {"c": 2}), ask(atomic, {"num": 1})]
    assert seen[0] == {"reply": {"b": 1}}
    assert seen[1]["error"][0] == seen[2]["error"][0] == "InterfaceError"
    return {"seen": seen}


def private_keys(runner: Runner) -> dict[str, Any]:
    sender = runner.mount("testflows.SendMessageFlow")
    echo = runner.mount("testflows.EchoFlow")
    forward = runner.mount("servingflows.PrivateForwardFlow")
    message = echo.package_input_message({"keep": 1, "token": "x"})
    message.private_keys = ["token"]
    seen = [
        ask(sender, {}),
        result(echo.get_reply_future(message)),
        ask(forward, {"keep": 2, "token": "y"}),
    ]
    assert seen[:2] == [{"reply": {"public": 1}}, {"reply": {"keep": 1}}]
    assert seen[2] == {"reply": {"echo_received": {"keep": 2}}}
    return {"seen": seen}


def async_runs(runner: Runner) -> dict[str, Any]:
    echo = runner.mount("testflows.AsyncEchoFlow")
    chain = runner.mount("testflows.AsyncChainFlow")

    async def main() -> list[dict[str, Any]]:
        awaited = await echo.get_reply_future(echo.package_input_message({"k": 1}))
        return [{"reply": awaited}, ask(chain, {"k": 2})]

    seen = asyncio.run(main())
    assert seen == [{"reply": {"echo": {"k": 1}}}, {"reply": {"via": {"echo": {"k": 2}}}}]
    return {"seen": seen}


def fire_and_forget(runner: Runner) -> dict[str, Any]:
    fan = runner.mount("testflows.FanOutFlow")
    counter = runner.mount("testflows.CounterFlow", initial_state={"count": 10})
    failing = runner.mount("testflows.FailingFlow")
    seen = ask(fan, {})
    counter.send_message(counter.package_input_message({"i": 1}))
    failing.send_message(failing.package_input_message({"x": 1}))
    runner.settle()
    states = subflow_states(runner, fan)
    assert states["a"]["count"] == states["b"]["count"] == 1
    return {
        "seen": seen,
        "states": states,
        "counter": runner.state(counter.get_instance_id()),
        "failing": runner.state(failing.get_instance_id()),
    }


SCENARIOS = [
    reply_twice,
    raises,
    returns_a_list,
    bad_state,
    composite(BLOCKING),
    composite(NON_BLOCKING),
    interfaces,
    private_keys,
    async_runs,
    fire_and_forget,
]


@pytest.fixture
def served(tmp_path: Path, db_url: str) -> Iterator[ServedRunner]:
    cl = flowplex.start_node(path=tmp_path, db=db_url)
    yield ServedRunner(cl)
    cl.node.close()


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.__name__)
def test_local_and_served_runs_are_identical(
    scenario: Callable[[Runner], dict[str, Any]], served: ServedRunner
) -> None:
    assert scenario(served) == scenario(LocalRunner())
