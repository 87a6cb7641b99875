"""Shapes of aiflows code that flowplex's own API accepts (the compat layer builds on them).

- a flow constructor that takes only keywords (``def __init__(self, **kwargs)``);
- ``FlowMessage`` objects kept in ``flow_state``, stored as JSON and given back as messages;
- a bare key as an interface (``input_interface: number``);
- ``print_flow_instances(cl, print_values=True)``.

Each runs on the memory, SQLite and PostgreSQL backends where it touches storage.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import flowplex
from flowplex import (
    AtomicFlow,
    Client,
    FlowDefinitionError,
    FlowInstanceError,
    FlowMessage,
    FlowStateError,
    InterfaceError,
    serving,
)
from flowplex.flows import build_flow
from flowplex.workers import run_dispatch_worker_thread

TIMEOUT = 10.0
HERE = __name__


@pytest.fixture
def cl(tmp_path: Path, db_url: str) -> Iterator[Client]:
    client = flowplex.start_node(path=tmp_path, db=db_url)
    run_dispatch_worker_thread(client)
    yield client
    client.node.close()


def ask(cl: Client, endpoint: str, data: dict[str, Any], **mount: Any) -> dict[str, Any]:
    flow = serving.get_flow_instance(cl, endpoint, **mount)
    return flow.get_reply_future(flow.package_input_message(data)).get_data(timeout=TIMEOUT)


# -- constructors taking keywords ----------------------------------------------------------------


class KwargsFlow(AtomicFlow):
    """A constructor as aiflows' flows write it."""

    default_config = {"name": "Kwargs", "description": "Takes keywords only."}

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.built_with = sorted(kwargs)

    def run(self, input_message: FlowMessage) -> dict[str, Any]:
        return {"built_with": self.built_with, "count": self.flow_state.get("count", 0)}


def test_a_keywords_only_constructor_is_built_with_keywords() -> None:
    flow = build_flow(KwargsFlow, KwargsFlow.get_config(), {"count": 2})
    assert flow.built_with == ["flow_config", "flow_state"]
    assert flow.flow_state == {"count": 2}
    assert KwargsFlow.instantiate_from_default_config(name="Other").name == "Other"
    assert KwargsFlow.instantiate_from_config(KwargsFlow.get_config()).name == "Kwargs"


def test_a_keywords_only_constructor_mounts_and_runs(cl: Client) -> None:
    serving.serve_flow(cl, f"{HERE}.KwargsFlow", "kwargs")
    reply = ask(cl, "kwargs", {}, initial_state={"count": 3})
    assert reply == {"built_with": ["flow_config", "flow_state"], "count": 3}


def test_a_keywords_only_constructor_runs_locally() -> None:
    reply = flowplex.run_local(KwargsFlow, {}, initial_state={"count": 1})
    assert reply == {"built_with": ["flow_config", "flow_state"], "count": 1}


class PositionalFlow(AtomicFlow):
    """A constructor with its own names for the two arguments, called positionally."""

    default_config = {"name": "Positional", "description": "Renames its arguments."}

    def __init__(self, config: dict[str, Any], state: dict[str, Any] | None = None) -> None:
        super().__init__(config, state)


def test_a_positional_constructor_is_still_called_positionally() -> None:
    flow = build_flow(PositionalFlow, PositionalFlow.get_config(), {"n": 1})
    assert flow.flow_state == {"n": 1}


class NeedsMoreFlow(AtomicFlow):
    default_config = {"name": "NeedsMore", "description": "Wants a third argument."}

    def __init__(self, *, flow_config: dict[str, Any], flow_state: Any, extra: int) -> None:
        super().__init__(flow_config, flow_state)


def test_a_constructor_that_fits_neither_way_is_refused_saying_why() -> None:
    with pytest.raises(FlowDefinitionError) as info:
        build_flow(NeedsMoreFlow, NeedsMoreFlow.get_config())
    text = str(info.value)
    assert "NeedsMoreFlow cannot be built as NeedsMoreFlow(flow_config, flow_state)" in text
    assert "too many positional arguments" in text


# -- messages kept in flow_state -----------------------------------------------------------------


class KeepsRequestsFlow(AtomicFlow):
    """Keeps each request (a FlowMessage) and answers it with the one before."""

    default_config = {"name": "KeepsRequests", "description": "Remembers messages."}

    def set_up_flow_state(self) -> None:
        self.flow_state = {"previous": None, "history": []}

    def run(self, input_message: FlowMessage) -> dict[str, Any]:
        previous = self.flow_state["previous"]
        history = self.flow_state["history"]
        assert previous is None or isinstance(previous, FlowMessage)
        assert all(isinstance(m["message"], FlowMessage) for m in history)
        self.flow_state["previous"] = input_message
        history.append({"message": input_message})
        return {
            "previous": None if previous is None else previous.data["n"],
            "previous_id": None if previous is None else previous.message_id,
            "history": [m["message"].data["n"] for m in history],
        }


def test_messages_in_state_are_stored_as_json_and_given_back(
    cl: Client, tmp_path: Path, db_url: str
) -> None:
    serving.serve_flow(cl, f"{HERE}.KeepsRequestsFlow", "keeps")
    flow = serving.get_flow_instance(cl, "keeps")
    first = flow.package_input_message({"n": 1})
    replies = [
        flow.get_reply_future(msg).get_data(timeout=TIMEOUT)
        for msg in (first, flow.package_input_message({"n": 2}))
    ]
    assert replies[0] == {"previous": None, "previous_id": None, "history": [1]}
    assert replies[1]["previous"] == 1 and replies[1]["history"] == [1, 2]

    stored = serving.get_flow_state(cl, flow.get_instance_id())
    json.dumps(stored)  # plain JSON in storage
    kept = stored["previous"]["__flowmessage__"]
    assert kept["data"] == {"n": 2} and kept["message_type"] == "FlowMessage"
    assert [m["message"]["__flowmessage__"]["data"] for m in stored["history"]] == [
        {"n": 1},
        {"n": 2},
    ]

    if db_url != "memory://":  # a reopened node (a new process) gets the messages back
        user = cl.get_user_id()
        cl.node.close()
        reopened = next(
            c
            for c in flowplex.start_node_with_users(1, path=tmp_path, db=db_url)
            if c.get_user_id() == user
        )
        run_dispatch_worker_thread(reopened)
        again = flowplex.FlowProxy(reopened, flow.address, flow_endpoint="keeps")
        reply = again.get_reply_future(again.package_input_message({"n": 3})).get_data(TIMEOUT)
        assert reply["previous"] == 2 and reply["history"] == [1, 2, 3]
        reopened.node.close()


def test_a_message_in_the_initial_state_is_stored_too() -> None:
    request = FlowMessage(data={"n": 7})
    flow = KeepsRequestsFlow(KeepsRequestsFlow.get_config(), {"previous": request})
    assert flow.flow_state["previous"] == {"__flowmessage__": request.to_dict()}


class BadStateFlow(AtomicFlow):
    default_config = {"name": "BadState", "description": "Keeps a set next to a message."}

    def run(self, input_message: FlowMessage) -> dict[str, Any]:
        self.flow_state["kept"] = [input_message, {1, 2}]
        return {}


def test_state_that_is_not_json_besides_messages_is_still_refused() -> None:
    with pytest.raises(flowplex.FlowError) as info:
        flowplex.run_local(BadStateFlow, {})
    assert info.value.remote_type == FlowStateError.__name__
    assert "flow_state['kept'][1]" in info.value.remote_message


# -- a bare key as an interface --------------------------------------------------------------------


class BareKeyFlow(AtomicFlow):
    default_config = {
        "name": "BareKey",
        "description": "Declares one-key interfaces without a list.",
        "input_interface": "number",
        "output_interface": "output_number",
    }

    def run(self, input_message: FlowMessage) -> dict[str, Any]:
        return {"output_number": -input_message.data["number"], "seen": input_message.data}


def test_a_bare_key_interface_applies(cl: Client) -> None:
    serving.serve_flow(cl, f"{HERE}.BareKeyFlow", "bare")
    assert ask(cl, "bare", {"number": 5, "noise": 1}) == {"output_number": -5}
    with pytest.raises(flowplex.FlowError) as info:
        ask(cl, "bare", {"noise": 1})
    assert info.value.remote_type == InterfaceError.__name__


# -- print_flow_instances(print_values=True) ------------------------------------------------------


def test_print_flow_instances_with_values(cl: Client, capsys: pytest.CaptureFixture[str]) -> None:
    other = cl.node.add_user()
    serving.serve_flow(cl, f"{HERE}.KwargsFlow", "kwargs")
    mine = serving.get_flow_instance(cl, "kwargs").get_instance_id()
    theirs = serving.get_flow_instance(other, "kwargs", user_id=cl.get_user_id())

    serving.print_flow_instances(cl, print_values=True)
    assert capsys.readouterr().out.splitlines() == [
        f' {mine}: {{"flow_endpoint": "kwargs", "user_id": "local"}}',
        f' {theirs.get_instance_id()}: {{"flow_endpoint": "kwargs", "user_id": '
        f'"{other.get_user_id()}"}}',
    ]
    serving.print_flow_instances(cl)
    assert capsys.readouterr().out.split() == [mine, theirs.get_instance_id()]


def test_flow_instance_error_names_its_endpoint_as_a_string(cl: Client) -> None:
    with pytest.raises(FlowInstanceError) as info:
        serving.get_flow_instance(cl, "nowhere")
    assert info.value.flow_endpoint == "nowhere"
