"""The ``call`` task: a task-graph flow sends a message to a served flow and uses its reply.

Every test serves ``flowplex.examples.ReverseNumberAtomicFlow`` on a real node, on the memory,
SQLite and PostgreSQL backends (``db_url``), with a real dispatch worker thread.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import flowplex
from flowplex import Client, serving
from flowplex.engine import FlowEngine, FlowRunner, FlowStore, TaskFlow
from flowplex.testing import FakeClock
from flowplex.workers import run_dispatch_worker_thread
from waiting import wait_for

ATOMIC = "flowplex.examples.ReverseNumberAtomicFlow"
DEADLINE = 30.0


@pytest.fixture
def cl(tmp_path: Path, db_url: str) -> Iterator[Client]:
    client = flowplex.start_node(path=tmp_path / "node", db=db_url)
    serving.serve_flow(client, ATOMIC, "reverse_number")
    yield client
    client.node.close()


def call_flow(number: Any, **params: Any) -> dict[str, Any]:
    return {
        "label": "caller",
        "tasks": [
            {
                "key": "call",
                "task_type": "call",
                "task_params": {
                    "flow_endpoint": "reverse_number",
                    "data": {"number": number},
                    **params,
                },
            },
            {
                "key": "use",
                "task_type": "wire",
                "task_params": {
                    "wirings": ["ctx.flow.tasks.call.data.reply.output_number => ctx.flow.data.out"]
                },
            },
        ],
    }


def test_call_drives_a_served_reverse_number_flow(cl: Client) -> None:
    engine = FlowEngine(client=cl)
    flow = engine.flow_spec_to_flow(call_flow("$ctx.number"))
    # No worker runs yet: the tick sends the message and returns; the task waits RUNNING.
    engine.tick_flow(flow, ctx={"number": 1234})
    call = flow.tasks["call"]
    assert call["status"] == "RUNNING" and flow.status == "RUNNING"
    meta = call["data"]["call"]
    assert meta["flow_endpoint"] == "reverse_number" and meta["user_id"] == cl.get_user_id()
    assert serving.get_flow_instance_metadata(cl, meta["flow_id"]) == {
        "flow_endpoint": "reverse_number",
        "user_id": "local",
    }
    engine.tick_flow_until_has_no_pending(flow)
    assert call["status"] == "RUNNING"  # still no worker: nothing blocks, nothing is lost
    run_dispatch_worker_thread(cl)
    engine.run_flow(flow, max_ticks=int(DEADLINE / 0.01))
    assert flow.status == "COMPLETED"
    assert call["data"]["reply"] == {"output_number": 4321}
    assert flow.data["out"] == 4321


def test_a_saved_call_is_collected_by_another_engine(cl: Client, tmp_path: Path) -> None:
    store = FlowStore(f"sqlite:///{tmp_path}/runs.db")
    store.ensure_tables()
    key = store.create_flow(TaskFlow.from_flow_spec(call_flow(1234)))
    first = FlowRunner(store, FlowEngine(store=store, client=cl))
    assert first.tick() == {"claimed": 1, "progressed": 1, "RUNNING": 1}
    assert "future_id" in store.get_flow(key).tasks["call"]["data"]["call"]
    run_dispatch_worker_thread(cl)
    # A second runner with its own engine (given a client factory) finishes the run.
    second = FlowRunner(store, FlowEngine(store=store, client=lambda: cl))
    deadline = time.monotonic() + DEADLINE
    while store.get_flow(key).status == "RUNNING" and time.monotonic() < deadline:
        second.tick()
        time.sleep(0.01)
    flow = store.get_flow(key)
    assert flow.status == "COMPLETED" and flow.data["out"] == 4321
    store.close()


def test_a_reply_read_by_a_runner_that_dies_before_saving_is_not_lost(
    cl: Client, tmp_path: Path
) -> None:
    """A runner reads the reply, then dies before its save: the reply is still in the runtime
    for the runner that takes the run over, and is dropped once that one has saved."""
    clock = FakeClock()
    store = FlowStore(f"sqlite:///{tmp_path}/runs.db", clock=clock)
    store.ensure_tables()
    key = store.create_flow(TaskFlow.from_flow_spec(call_flow(1234)))
    FlowRunner(store, FlowEngine(store=store, client=cl)).tick()  # sends, saves RUNNING
    future_id = store.get_flow(key).tasks["call"]["data"]["call"]["future_id"]
    run_dispatch_worker_thread(cl)
    wait_for(lambda: cl.peek_reply(future_id) is not None, "the reply")
    doomed = FlowEngine(store=store, client=cl, hold_replies=True)
    [claim] = store.claim_flows(1, lease=10)
    doomed.tick_flow(claim.flow)
    assert claim.flow.tasks["call"]["status"] == "COMPLETED"  # in the dying runner only
    # ... which never saves nor releases. Once its lease runs out, another runner finishes.
    second = FlowRunner(store, FlowEngine(store=store, client=cl))
    assert second.tick()["claimed"] == 0  # still held by the dying runner
    clock.advance(10)
    assert second.tick() == {"claimed": 1, "progressed": 1, "COMPLETED": 1}
    assert store.get_flow(key).data["out"] == 4321
    assert cl.peek_reply(future_id) is None  # dropped once the run that used it was saved
    store.close()


def test_without_a_runner_a_used_reply_is_dropped_at_once(cl: Client) -> None:
    """An engine that holds no replies (the default) drops each reply as its task uses it."""
    run_dispatch_worker_thread(cl)
    engine = FlowEngine(client=cl)
    flow = engine.flow_spec_to_flow(call_flow(12))
    engine.run_flow(flow, max_ticks=int(DEADLINE / 0.01))
    assert flow.data["out"] == 21
    assert cl.peek_reply(flow.tasks["call"]["data"]["call"]["future_id"]) is None


def test_an_error_reply_fails_the_task(cl: Client) -> None:
    run_dispatch_worker_thread(cl)
    engine = FlowEngine(client=cl)
    flow = engine.flow_spec_to_flow(call_flow("not a number"))
    with pytest.raises(flowplex.engine.FlowFailedError, match="must be an integer"):
        engine.run_flow(flow, max_ticks=int(DEADLINE / 0.01))
    assert "'reverse_number' answered with an error: TypeError" in flow.tasks["call"]["error"]


def test_a_call_times_out(cl: Client) -> None:
    engine = FlowEngine(client=cl)  # no worker: the reply never comes
    flow = engine.flow_spec_to_flow(call_flow(1, timeout=0.05))
    with pytest.raises(flowplex.engine.FlowFailedError, match="no reply from 'reverse_number'"):
        engine.run_flow(flow, max_ticks=int(DEADLINE / 0.01))


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"flow_endpoint": "nowhere"}, "Not serving at nowhere"),
        ({"flow_endpoint": "reverse_number", "data": [1]}, "'data' must be a mapping"),
        ({"flow_endpoint": "reverse_number", "timeout": -1}, "'timeout' must be a positive"),
        ({}, "needs 'flow_endpoint'"),
    ],
)
def test_bad_calls_fail_clearly(cl: Client, params: dict[str, Any], message: str) -> None:
    engine = FlowEngine(client=cl)
    flow = engine.flow_spec_to_flow(
        {"tasks": [{"key": "call", "task_type": "call", "task_params": params}]}
    )
    engine.tick_flow(flow)
    assert flow.status == "FAILED"
    assert message in flow.tasks["call"]["error"]
