"""The dispatcher writes each processed message to its instance's log, on the node's clocks.

Every outcome gets an entry with its completion (a run that returned, one that raised, a
message given up on as a dead letter): the entry's time is the backend's clock at the
completion and its duration the dispatcher's clock around the run, so a fake clock fixes both.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from flowplex import Client, FlowError, FlowProxy, serving
from flowplex.runtime import Dispatcher, LogEntry, Node, open_backend
from flowplex.testing import FakeClock
from waiting import wait_for

TIMEOUT = 10.0


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def cl(tmp_path: Path, db_url: str, clock: FakeClock) -> Iterator[Client]:
    """A fresh node (one user) on the backend under test, timed by ``clock``."""
    node = Node(open_backend(db_url, clock=clock), tmp_path, f"log-{uuid.uuid4()}")
    yield node.add_user()
    node.close()


def mount(cl: Client, class_path: str, endpoint: str) -> FlowProxy:
    assert serving.serve_flow(cl, class_path, endpoint)
    return serving.get_flow_instance(cl, endpoint)


def only_entry(cl: Client, flow_id: str) -> LogEntry:
    [entry] = cl.node.backend.message_log(flow_id)
    return entry


def test_a_run_that_returns_is_logged_with_its_message_and_reply(
    cl: Client, clock: FakeClock
) -> None:
    echo = mount(cl, "testflows.EchoFlow", "echo")
    message = echo.package_input_message({"x": 1})
    future = echo.get_reply_future(message)
    clock.advance(5)
    assert Dispatcher(cl.node).run_batch() == 1
    assert future.get_data(timeout=TIMEOUT) == {"x": 1}
    entry = only_entry(cl, echo.get_instance_id())
    assert (entry.outcome, entry.error, entry.deliveries) == ("ok", None, 1)
    assert json.loads(entry.body)["data"] == {"x": 1}
    assert entry.reply is not None and json.loads(entry.reply)["data"] == {"x": 1}
    assert (entry.finished_at, entry.duration) == (clock.time(), 0.0)


def test_a_run_that_raises_is_logged_with_its_error(cl: Client, clock: FakeClock) -> None:
    failing = mount(cl, "testflows.FailingFlow", "failing")
    future = failing.get_reply_future(failing.package_input_message({"x": 7}))
    assert Dispatcher(cl.node).run_batch() == 1
    with pytest.raises(FlowError):
        future.get_data(timeout=TIMEOUT)
    entry = only_entry(cl, failing.get_instance_id())
    assert (entry.outcome, entry.error) == ("error", "ValueError: boom on 7")
    assert entry.reply is not None and "boom on 7" in entry.reply
    stats = cl.node.backend.instance_stats([failing.get_instance_id()])
    assert stats[failing.get_instance_id()].last_error == "ValueError: boom on 7"


def test_a_message_given_up_on_is_logged_as_dead(cl: Client, clock: FakeClock) -> None:
    echo = mount(cl, "testflows.EchoFlow", "echo")
    future = echo.get_reply_future(echo.package_input_message({"x": 1}))
    [dying] = cl.node.backend.claim("default", None, 10, 10)  # a worker that dies
    clock.advance(10)
    assert Dispatcher(cl.node, max_deliveries=1).run_batch() == 1
    with pytest.raises(FlowError):
        future.get_data(timeout=TIMEOUT)
    entry = only_entry(cl, dying.flow_id)
    assert (entry.outcome, entry.deliveries, entry.finished_at) == ("dead", 2, clock.time())
    assert entry.error is not None and "max_deliveries=1" in entry.error


def test_the_duration_is_the_run_on_the_dispatchers_clock(cl: Client, clock: FakeClock) -> None:
    """A flow waits 60 s (on the dispatcher's clock) for a reply that never comes: its entry
    says the run took those 60 s."""
    assert serving.serve_flow(cl, "testflows.EchoFlow", "echo", dispatch_point="nobody")
    waiter = mount(cl, "servingflows.TimedWaitFlow", "waiter")
    future = waiter.get_reply_future(waiter.package_input_message({"timeout": 60}))
    dispatcher = Dispatcher(cl.node, lease_seconds=600)
    thread = threading.Thread(target=dispatcher.run_batch)
    thread.start()
    try:
        wait_for(lambda: cl.node.backend.pending_count() == 2, "the flow to wait", TIMEOUT)
        clock.advance(60)
        thread.join(TIMEOUT)
    finally:
        clock.advance(120)  # a failing test must not leave the flow waiting
        thread.join(TIMEOUT)
    with pytest.raises(FlowError):
        future.get_data(timeout=TIMEOUT)
    entry = only_entry(cl, waiter.get_instance_id())
    assert entry.outcome == "error" and entry.error is not None
    assert entry.error.startswith("FlowTimeoutError")
    assert entry.duration == 60.0


def test_a_log_limit_of_zero_logs_nothing(cl: Client) -> None:
    cl.node.backend.log_limit = 0
    echo = mount(cl, "testflows.EchoFlow", "echo")
    future = echo.get_reply_future(echo.package_input_message({"x": 1}))
    assert Dispatcher(cl.node).run_batch() == 1
    assert future.get_data(timeout=TIMEOUT) == {"x": 1}
    assert cl.node.backend.message_log(echo.get_instance_id(), limit=10) == []
