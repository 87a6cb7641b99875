"""Flows for the serving-runtime tests (importable as ``servingflows.<Class>``).

Flows that must coordinate with the test (barriers, gates, run logs) look their
synchronisation objects up in module-level registries by a key carried in the message data, so
each test uses fresh objects and no state leaks between tests.
"""

from __future__ import annotations

import hashlib
import threading
from typing import Any

from flowplex import AtomicFlow, CompositeFlow, FlowMessage

#: Barriers by name: ``BarrierFlow`` waits on ``BARRIERS[data["barrier"]]``.
BARRIERS: dict[str, threading.Barrier] = {}
#: Events by name: ``GateFlow`` sets ``GATES[key + ":started"]`` then waits on ``GATES[key]``.
GATES: dict[str, threading.Event] = {}
#: Semaphores by gate name: ``GatedCounterFlow`` releases ``STARTED[key]`` each time it starts.
STARTED: dict[str, threading.Semaphore] = {}
#: Runs by log name: ``LoggedCounterFlow`` appends ``data["i"]`` to ``RUN_LOG[data["log"]]``.
RUN_LOG: dict[str, list[Any]] = {}


def key_hash(value: str) -> str:
    """What ``SecretFlow`` replies for a key: its SHA-256, so the key itself never travels."""
    return hashlib.sha256(value.encode()).hexdigest()


class BarrierFlow(AtomicFlow):
    """Counts its runs in its state, then waits on a shared barrier before replying.

    Two messages pass the barrier only if they run at the same time: a parallel_dispatch
    instance. One at a time, the barrier times out and the run raises BrokenBarrierError.
    """

    default_config = {"name": "Barrier", "description": "Waits for a partner run."}

    def set_up_flow_state(self) -> None:
        self.flow_state["runs"] = 0

    def run(self, input_message: FlowMessage) -> dict[str, Any]:
        self.flow_state["runs"] += 1
        barrier = BARRIERS[input_message.data["barrier"]]
        barrier.wait(timeout=input_message.data.get("timeout", 5.0))
        return {"runs": self.flow_state["runs"], "thread": threading.current_thread().name}


class ThreadFlow(AtomicFlow):
    """Replies with the name of the thread that ran it."""

    default_config = {"name": "Thread", "description": "Names its thread."}

    def run(self, input_message: FlowMessage) -> dict[str, Any]:
        return {"thread": threading.current_thread().name}


class GateFlow(AtomicFlow):
    """Signals that it started, then holds its worker until the test opens the gate."""

    default_config = {"name": "Gate", "description": "Blocks until released."}

    def run(self, input_message: FlowMessage) -> dict[str, Any]:
        key = input_message.data["gate"]
        GATES[f"{key}:started"].set()
        opened = GATES[key].wait(timeout=input_message.data.get("timeout", 5.0))
        return {"opened": opened}


class LoggedCounterFlow(AtomicFlow):
    """A counter that also records each run outside the runtime (to see runs that commit
    nothing)."""

    default_config = {"name": "LoggedCounter", "description": "Counts and logs its runs."}

    def set_up_flow_state(self) -> None:
        self.flow_state["count"] = 0

    def run(self, input_message: FlowMessage) -> dict[str, Any]:
        self.flow_state["count"] += 1
        RUN_LOG.setdefault(input_message.data["log"], []).append(input_message.data.get("i"))
        return {"count": self.flow_state["count"]}


class SecretFlow(AtomicFlow):
    """Its ``api_key`` is a ``"???"`` placeholder the worker fills; replies with its hash."""

    default_config = {
        "name": "Secret",
        "description": "Uses an API key from the worker's secrets.",
        "api_key": "???",
    }

    def run(self, input_message: FlowMessage) -> dict[str, Any]:
        return {"key_hash": key_hash(self.flow_config["api_key"])}


class PrivateForwardFlow(CompositeFlow):
    """Forwards its input to an echo subflow; ``token`` is private, so the echo never sees it."""

    default_config = {
        "name": "PrivateForward",
        "description": "Forwards data with a private key to a subflow.",
        "private_keys": ["token"],
        "subflows_config": {
            "echo": {"flow_class_name": "testflows.EchoFlow", "flow_endpoint": "echo"}
        },
    }

    def run(self, input_message: FlowMessage) -> dict[str, Any]:
        echo = self.subflows["echo"]
        received = echo.get_reply_future(
            self.package_input_message(dict(input_message.data))
        ).get_data(timeout=10)
        return {"echo_received": received}


class TimedWaitFlow(CompositeFlow):
    """Asks its echo subflow and waits ``data["timeout"]`` seconds for the answer."""

    default_config = {
        "name": "TimedWait",
        "description": "Waits for a subflow's reply, up to a timeout.",
        "subflows_config": {
            "echo": {"flow_class_name": "testflows.EchoFlow", "flow_endpoint": "echo"}
        },
    }

    def run(self, input_message: FlowMessage) -> dict[str, Any]:
        echo = self.subflows["echo"]
        request = self.package_input_message({"ping": True})
        return echo.get_reply_future(request).get_data(timeout=input_message.data["timeout"])


class NoClassNameCompositeFlow(CompositeFlow):
    """A composite whose subflow names an endpoint but no flow_class_name."""

    default_config = {
        "name": "NoClassName",
        "description": "recursive_serve_flow cannot serve its subflow.",
        "subflows_config": {"echo": {"flow_endpoint": "echo_without_class"}},
    }

    def run(self, input_message: FlowMessage) -> dict[str, Any]:
        return {}


class GatedCounterFlow(AtomicFlow):
    """Counts a run in its state, signals it started (a semaphore release), then waits for the
    gate ``GATES[data["gate"]]`` before replying with the count (see ``GateFlow``)."""

    default_config = {"name": "GatedCounter", "description": "Counts, then blocks."}

    def set_up_flow_state(self) -> None:
        self.flow_state["count"] = 0

    def run(self, input_message: FlowMessage) -> dict[str, Any]:
        self.flow_state["count"] += 1
        key = input_message.data.get("gate")
        if key is not None:
            STARTED[key].release()
            GATES[key].wait(timeout=input_message.data.get("timeout", 5.0))
        return {"count": self.flow_state["count"]}
