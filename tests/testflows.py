"""Small flows used by the tests (importable as ``testflows.<Class>``)."""

from __future__ import annotations

import asyncio
from typing import Any

from flowplex import AtomicFlow, CompositeFlow, FlowMessage


class EchoFlow(AtomicFlow):
    default_config = {"name": "Echo", "description": "Replies with its input."}

    def run(self, input_message: FlowMessage) -> dict[str, Any]:
        return dict(input_message.data)


class CounterFlow(AtomicFlow):
    default_config = {"name": "Counter", "description": "Counts messages in its state."}

    def set_up_flow_state(self) -> None:
        self.flow_state["count"] = 0
        self.flow_state["seen"] = []

    def run(self, input_message: FlowMessage) -> dict[str, Any]:
        self.flow_state["count"] += 1
        self.flow_state["seen"].append(input_message.data.get("i"))
        return {"count": self.flow_state["count"]}


class FailingFlow(AtomicFlow):
    default_config = {"name": "Failing", "description": "Raises on every message."}

    def set_up_flow_state(self) -> None:
        self.flow_state["touched"] = False

    def run(self, input_message: FlowMessage) -> dict[str, Any]:
        self.flow_state["touched"] = True
        raise ValueError(f"boom on {input_message.data.get('x')}")


class AsyncEchoFlow(AtomicFlow):
    default_config = {"name": "AsyncEcho", "description": "Replies after an await."}

    async def run(self, input_message: FlowMessage) -> dict[str, Any]:
        await asyncio.sleep(0)
        return {"echo": input_message.data}


class SendMessageFlow(AtomicFlow):
    default_config = {
        "name": "Sender",
        "description": "Replies with send_message.",
        "private_keys": ["secret"],
    }

    def run(self, input_message: FlowMessage) -> None:
        reply = self.package_output_message(input_message, {"public": 1, "secret": "s3cr3t"})
        self.send_message(reply)


class SilentFlow(AtomicFlow):
    default_config = {"name": "Silent", "description": "Never replies."}

    def run(self, input_message: FlowMessage) -> None:
        return None


class BadStateFlow(AtomicFlow):
    default_config = {"name": "BadState", "description": "Puts a set in its state."}

    def run(self, input_message: FlowMessage) -> dict[str, Any]:
        self.flow_state["oops"] = {1, 2}
        return {}


class ListReturnFlow(AtomicFlow):
    default_config = {"name": "ListReturn", "description": "Returns a list, not a dict."}

    def run(self, input_message: FlowMessage) -> Any:
        return [1, 2]


class AsyncChainFlow(CompositeFlow):
    """Awaits its subflow's future inside an async run."""

    default_config = {
        "name": "AsyncChain",
        "description": "Awaits a subflow.",
        "subflows_config": {
            "echo": {"flow_class_name": "testflows.AsyncEchoFlow", "flow_endpoint": "echo"}
        },
    }

    async def run(self, input_message: FlowMessage) -> dict[str, Any]:
        sub = self.subflows["echo"]
        data = await sub.get_reply_future(sub.package_input_message(dict(input_message.data)))
        return {"via": data}


class FanOutFlow(CompositeFlow):
    """Sends one request to each of two counters, fire-and-forget, then replies."""

    default_config = {
        "name": "FanOut",
        "description": "Fire-and-forget to subflows.",
        "subflows_config": {
            "a": {"flow_class_name": "testflows.CounterFlow", "flow_endpoint": "counter_a"},
            "b": {"flow_class_name": "testflows.CounterFlow", "flow_endpoint": "counter_b"},
        },
    }

    def run(self, input_message: FlowMessage) -> dict[str, Any]:
        for key in ("a", "b"):
            self.subflows[key].send_message(self.package_input_message({"i": 1}))
        return {"sent": 2}


class CrashOnceFlow(AtomicFlow):
    """Counts runs; the first time it sees no marker file it writes one and hangs (to be killed)."""

    default_config = {"name": "CrashOnce", "description": "Hangs on its first run."}

    def set_up_flow_state(self) -> None:
        self.flow_state["runs"] = 0

    def run(self, input_message: FlowMessage) -> dict[str, Any]:
        import os
        import time
        from pathlib import Path

        self.flow_state["runs"] += 1
        marker = Path(input_message.data["marker"])
        if not marker.exists():
            # Written whole, then renamed: the test polls for the file and must never read it
            # half-written.
            partial = marker.with_name(marker.name + ".partial")
            partial.write_text(str(os.getpid()))
            partial.rename(marker)
            time.sleep(120)  # the test kills the worker process here
        return {"runs": self.flow_state["runs"], "pid": os.getpid()}


class ReplyTwiceFlow(AtomicFlow):
    """Replies twice to each message: with send_message, then by returning. The first wins."""

    default_config = {"name": "ReplyTwice", "description": "Replies twice per message."}

    def set_up_flow_state(self) -> None:
        self.flow_state["runs"] = 0

    def run(self, input_message: FlowMessage) -> dict[str, Any]:
        self.flow_state["runs"] += 1
        self.send_message(self.package_output_message(input_message, {"reply": "first"}))
        return {"reply": "second"}


#: How many times SetUpFailsFlow.set_up_flow_state ran (to show a failed mount is not retried).
SET_UP_CALLS: list[str] = []


class SetUpFailsFlow(AtomicFlow):
    """Its set_up_flow_state raises a plain ValueError (user code failing, not a storage race)."""

    default_config = {"name": "SetUpFails", "description": "Cannot set up its state."}

    def set_up_flow_state(self) -> None:
        SET_UP_CALLS.append(self.get_instance_id())
        raise ValueError("no state for you")


class WrongInitFlow(AtomicFlow):
    """A constructor that does not take (flow_config, flow_state)."""

    default_config = {"name": "WrongInit", "description": "Needs an extra argument."}

    def __init__(self, client: Any, flow_config: dict[str, Any], flow_state: Any) -> None:
        super().__init__(flow_config, flow_state)
        self.client = client


class SingletonBesideFailingFlow(CompositeFlow):
    """A singleton subflow next to one whose set-up fails: the mount fails once, unretried."""

    default_config = {
        "name": "SingletonBesideFailing",
        "description": "Its second subflow cannot be mounted.",
        "subflows_config": {
            "shared": {
                "flow_class_name": "testflows.EchoFlow",
                "flow_endpoint": "shared_echo",
                "singleton": True,
            },
            "broken": {"flow_class_name": "testflows.SetUpFailsFlow", "flow_endpoint": "broken"},
        },
    }

    def run(self, input_message: FlowMessage) -> dict[str, Any]:
        return {}


class BothArgumentsFlow(AtomicFlow):
    """A constructor that requires both (flow_config, flow_state): the contract, exactly."""

    default_config = {"name": "BothArguments", "description": "No defaults in __init__."}

    def __init__(self, flow_config: dict[str, Any], flow_state: Any) -> None:
        super().__init__(flow_config, flow_state)

    def run(self, input_message: FlowMessage) -> dict[str, Any]:
        return {"ok": True}


class SlowFlow(AtomicFlow):
    """Takes ``data["seconds"]`` to answer: a message a worker is still running when it is
    told to stop (the Ctrl-C tests). With ``data["started"]``, a path, it creates that file
    first, so a test in another process knows the run has begun."""

    default_config = {"name": "Slow", "description": "Sleeps, then replies."}

    def run(self, input_message: FlowMessage) -> dict[str, Any]:
        import time
        from pathlib import Path

        if "started" in input_message.data:
            Path(input_message.data["started"]).touch()
        time.sleep(float(input_message.data.get("seconds", 30)))
        return {"slept": True}
