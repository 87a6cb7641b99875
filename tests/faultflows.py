"""Flows that fail in the ways the failure tests inject (importable as ``faultflows.<Class>``)."""

from __future__ import annotations

import os
import time
from typing import Any

from flowplex import AtomicFlow, CompositeFlow, FlowMessage


class CountingFlow(AtomicFlow):
    """Counts its runs in its state; ``data["bad"]`` makes the reply unencodable (a set or an
    object) after the count went up, so a failure must not commit it."""

    default_config = {"name": "Counting", "description": "Counts; replies badly on request."}

    def set_up_flow_state(self) -> None:
        self.flow_state["count"] = 0

    def run(self, input_message: FlowMessage) -> dict[str, Any]:
        self.flow_state["count"] += 1
        bad = input_message.data.get("bad")
        if bad == "set":
            return {"x": {1, 2}}
        if bad == "object":
            return {"x": object()}
        return {"count": self.flow_state["count"]}


class SlowFlow(AtomicFlow):
    """Counts its runs, notes its start in ``data["started"]``, sleeps ``data["seconds"]``, and
    notes its end in ``data["log"]`` (files, one ``"<i> <pid>"`` line per run)."""

    default_config = {"name": "Slow", "description": "Takes its time."}

    def set_up_flow_state(self) -> None:
        self.flow_state["count"] = 0

    def run(self, input_message: FlowMessage) -> dict[str, Any]:
        self.flow_state["count"] += 1
        started = input_message.data.get("started")
        if started:
            with open(started, "a") as f:
                f.write(f"{input_message.data.get('i')} {os.getpid()}\n")
        time.sleep(float(input_message.data.get("seconds", 0.0)))
        log = input_message.data.get("log")
        if log:
            with open(log, "a") as f:
                f.write(f"{input_message.data.get('i')} {os.getpid()}\n")
        return {"count": self.flow_state["count"], "i": input_message.data.get("i")}


class PushThenFailFlow(CompositeFlow):
    """Non-blocking: forwards a request to its counter, and fails on the pushed reply when the
    request said ``fail``; otherwise answers the request it kept in its state."""

    default_config = {
        "name": "PushThenFail",
        "description": "Fails while handling a pushed reply.",
        "subflows_config": {
            "counter": {"flow_class_name": "faultflows.CountingFlow", "flow_endpoint": "counter"}
        },
    }

    def set_up_flow_state(self) -> None:
        self.flow_state["step"] = "idle"
        self.flow_state["done"] = 0

    def run(self, input_message: FlowMessage) -> None:
        if not input_message.is_reply:
            if self.flow_state["step"] != "idle":
                raise RuntimeError(f"busy at step {self.flow_state['step']}")
            self.flow_state["step"] = "waiting"
            self.flow_state["request"] = input_message
            self.flow_state["fail"] = bool(input_message.data.get("fail"))
            counter = self.subflows["counter"]
            counter.get_reply(self.package_input_message({}))
            return
        if self.flow_state["fail"]:
            raise RuntimeError("cannot handle the counter's reply")
        request = self.flow_state.pop("request")
        self.flow_state["step"] = "idle"
        self.flow_state["done"] += 1
        self.send_message(self.package_output_message(request, dict(input_message.data)))


class PushElsewhereFlow(PushThenFailFlow):
    """PushThenFailFlow whose counter runs at the dispatch point ``sub``: a test holds the
    counter's request back by running no worker there."""

    default_config = {
        "name": "PushElsewhere",
        "subflows_config": {
            "counter": {"flow_endpoint": "counter_sub", "dispatch_point": "sub"},
        },
    }


def nap(seconds: float, log: str, name: str) -> str:
    """A ``python`` task for the runner tests: takes ``seconds``, then logs its run."""
    time.sleep(seconds)
    with open(log, "a") as f:
        f.write(f"{name} {os.getpid()}\n")
    return name


class PushQueueFlow(PushThenFailFlow):
    """PushThenFailFlow that keeps a request arriving mid-conversation waiting in its state and
    starts it right after answering the current one (in the same run)."""

    default_config = {"name": "PushQueue"}

    def set_up_flow_state(self) -> None:
        super().set_up_flow_state()
        self.flow_state["waiting"] = []

    def run(self, input_message: FlowMessage) -> None:
        if not input_message.is_reply and self.flow_state["step"] != "idle":
            self.flow_state["waiting"].append(input_message)
            return
        super().run(input_message)
        if input_message.is_reply and self.flow_state["waiting"]:
            super().run(self.flow_state["waiting"].pop(0))
