"""Messaging semantics of the serving runtime: ordering, concurrency, errors, timeouts, reply
modes, dispatch points, secrets, private keys, redelivery and dead letters.

Every test runs on the memory, SQLite and PostgreSQL backends through ``db_url``. Waits are
bounded (``timeout=`` on futures, ``wait_for`` on state) so a bug fails fast instead of hanging.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import flowplex
import servingflows
from flowplex import (
    Client,
    FlowError,
    FlowFuture,
    FlowMessage,
    FlowProxy,
    FlowTimeoutError,
    MessagingError,
    serving,
)
from flowplex.runtime import Node, open_backend
from flowplex.runtime._dispatch import Dispatcher
from flowplex.testing import FakeClock
from flowplex.workers import run_dispatch_worker_thread, run_dispatch_worker_threads
from waiting import wait_for

ATOMIC = "flowplex.examples.ReverseNumberAtomicFlow"
SEQUENTIAL = "flowplex.examples.ReverseNumberSequentialFlow"
BLOCKING = "flowplex.examples.ReverseNumberBlockingSequentialFlow"
TIMEOUT = 10.0


@pytest.fixture
def cl(tmp_path: Path, db_url: str) -> Iterator[Client]:
    """A fresh node with one user on the backend under test; closed after the test."""
    client = flowplex.start_node(path=tmp_path, db=db_url)
    yield client
    client.node.close()


def ask(proxy: FlowProxy, data: dict[str, Any]) -> dict[str, Any]:
    """Send ``data`` to ``proxy`` and wait (bounded) for the reply data."""
    return proxy.get_reply_future(proxy.package_input_message(data)).get_data(timeout=TIMEOUT)


def outcome(future: FlowFuture) -> Any:
    """The future's reply data or error reply (as the FlowError), or None if none arrived yet.

    It never runs queued messages in this thread, unlike ``get_data``.
    """
    try:
        return future.try_get_data()
    except FlowError as error:
        return error


def mount(cl: Client, class_path: str, endpoint: str, **serve_options: Any) -> FlowProxy:
    """Serve ``class_path`` at ``endpoint`` and mount one instance of it."""
    assert serving.serve_flow(cl, class_path, endpoint, **serve_options)
    return serving.get_flow_instance(cl, endpoint)


def new_gate() -> str:
    """A fresh GateFlow gate (and its "started" event); returns its key."""
    key = uuid.uuid4().hex
    servingflows.GATES[key] = threading.Event()
    servingflows.GATES[f"{key}:started"] = threading.Event()
    return key


# -- ordering and concurrency --------------------------------------------------------------------


def test_messages_to_one_instance_run_one_at_a_time_in_order(cl: Client) -> None:
    """Per-instance FIFO with several workers and several senders: no update is lost, each
    sender's messages run in the order it sent them, and each reply sees the count so far."""
    run_dispatch_worker_threads(cl, 3)
    counter = mount(cl, "testflows.CounterFlow", "counter")
    senders, per_sender = 4, 10
    futures: dict[tuple[int, int], FlowFuture] = {}
    lock = threading.Lock()

    def send(sender: int) -> None:
        for k in range(per_sender):
            future = counter.get_reply_future(counter.package_input_message({"i": [sender, k]}))
            with lock:
                futures[(sender, k)] = future

    threads = [threading.Thread(target=send, args=(s,)) for s in range(senders)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(TIMEOUT)
    total = senders * per_sender
    assert len(futures) == total

    counts = {key: future.get_data(timeout=TIMEOUT)["count"] for key, future in futures.items()}
    assert sorted(counts.values()) == list(range(1, total + 1))
    state = serving.get_flow_state(cl, counter.get_instance_id())
    assert state["count"] == total
    order = [tuple(i) for i in state["seen"]]
    assert sorted(order) == sorted(futures)
    for sender in range(senders):
        assert [k for s, k in order if s == sender] == list(range(per_sender))
    # The n-th message run got count n: runs never overlapped on a stale state.
    for position, key in enumerate(order, start=1):
        assert counts[key] == position


def test_parallel_dispatch_runs_messages_to_one_instance_concurrently(cl: Client) -> None:
    """With parallel_dispatch=True two messages to one instance run at the same time (both pass
    a two-party barrier), each from the stored state, and the state is never saved.

    Both messages are queued before the two workers start, and this thread only polls (it
    runs no messages itself), so the barrier is passed only if the two workers run them at once.
    """
    proxy = mount(cl, "servingflows.BarrierFlow", "barrier", parallel_dispatch=True)
    key = uuid.uuid4().hex
    servingflows.BARRIERS[key] = threading.Barrier(2)
    futures = [
        proxy.get_reply_future(proxy.package_input_message({"barrier": key, "timeout": 2.0}))
        for _ in range(2)
    ]
    run_dispatch_worker_threads(cl, 2)
    # Both runs end (replied or failed) before anything is asserted.
    wait_for(lambda: all(outcome(f) is not None for f in futures), "both replies", TIMEOUT)
    replies = [future.get_data(timeout=TIMEOUT) for future in futures]
    assert len({reply["thread"] for reply in replies}) == 2
    assert [reply["runs"] for reply in replies] == [1, 1]
    assert serving.get_flow_state(cl, proxy.get_instance_id()) == {"runs": 0}


def test_without_parallel_dispatch_messages_to_one_instance_never_overlap(cl: Client) -> None:
    """The same two messages to a non-parallel instance run one after the other: the first
    waits at the barrier alone until it times out, so both fail, and no state is saved."""
    run_dispatch_worker_threads(cl, 2)
    proxy = mount(cl, "servingflows.BarrierFlow", "barrier")
    key = uuid.uuid4().hex
    servingflows.BARRIERS[key] = threading.Barrier(2)
    futures = [
        proxy.get_reply_future(proxy.package_input_message({"barrier": key, "timeout": 0.3}))
        for _ in range(2)
    ]
    for future in futures:
        with pytest.raises(FlowError) as excinfo:
            future.get_data(timeout=TIMEOUT)
        assert excinfo.value.remote_type == "BrokenBarrierError"
    assert serving.get_flow_state(cl, proxy.get_instance_id()) == {"runs": 0}


def test_an_idle_worker_is_not_held_up_by_a_busy_one(cl: Client) -> None:
    """Two workers: while one runs a slow message, the other answers another instance's
    message (a worker must not sit on messages it has claimed but not started)."""
    gate = mount(cl, "servingflows.GateFlow", "gate")
    echo = mount(cl, "testflows.EchoFlow", "echo")
    key = new_gate()
    # Both queued before any worker runs.
    gate_future = gate.get_reply_future(gate.package_input_message({"gate": key, "timeout": 5}))
    echo_future = echo.get_reply_future(echo.package_input_message({"x": 1}))
    run_dispatch_worker_threads(cl, 2)
    try:
        assert servingflows.GATES[f"{key}:started"].wait(TIMEOUT)
        wait_for(echo_future.done, "the idle worker to answer the echo", timeout=2.0)
    finally:
        servingflows.GATES[key].set()
    assert echo_future.get_data(timeout=TIMEOUT) == {"x": 1}
    assert gate_future.get_data(timeout=TIMEOUT) == {"opened": True}


# -- errors and timeouts -------------------------------------------------------------------------


def test_a_flow_that_raises_replies_with_flow_error_and_keeps_its_state(cl: Client) -> None:
    """The caller's future raises FlowError with the remote type, message and traceback; the
    failed run saves no state and the message is not redelivered."""
    run_dispatch_worker_thread(cl)
    proxy = mount(cl, "testflows.FailingFlow", "failing")
    flow_id = proxy.get_instance_id()
    future = proxy.get_reply_future(proxy.package_input_message({"x": 7}))
    with pytest.raises(FlowError) as excinfo:
        future.get_data(timeout=TIMEOUT)
    error = excinfo.value
    assert isinstance(error, MessagingError)
    assert error.remote_type == "ValueError"
    assert error.remote_message == "boom on 7"
    assert "Traceback" in error.remote_traceback
    assert "testflows.py" in error.remote_traceback
    assert "boom on 7" in error.remote_traceback
    assert error.flow_id == flow_id
    assert "ValueError" in str(error) and flow_id in str(error)
    # get_message raises the same way; the error reply is kept by the future.
    with pytest.raises(FlowError):
        future.get_message(timeout=TIMEOUT)
    assert serving.get_flow_state(cl, flow_id) == {"touched": False}
    assert cl.node.backend.pending_count(flow_id) == 0
    assert cl.node.backend.list_dead_letters() == []


def test_an_error_leaves_the_instance_usable(cl: Client) -> None:
    """A bad input fails one message; the next one to the same instance is answered."""
    run_dispatch_worker_thread(cl)
    proxy = mount(cl, ATOMIC, "reverse_number_atomic")
    with pytest.raises(FlowError) as excinfo:
        ask(proxy, {"number": "12"})
    assert excinfo.value.remote_type == "TypeError"
    assert "'number' must be an integer" in excinfo.value.remote_message
    assert ask(proxy, {"number": 12}) == {"output_number": 21}


def test_a_subflow_error_reaches_the_caller_of_a_non_blocking_composite(cl: Client) -> None:
    """The atomic subflow raises; the composite passes the error on and resets its state."""
    run_dispatch_worker_thread(cl)
    assert serving.serve_flow(cl, ATOMIC, "reverse_number_atomic")
    composite = mount(cl, SEQUENTIAL, "reverse_number_sequential")
    with pytest.raises(FlowError) as excinfo:
        ask(composite, {"number": "oops"})
    assert "'number' must be an integer" in excinfo.value.remote_message
    state = serving.get_flow_state(cl, composite.get_instance_id())
    assert state == {"current_call": "first_reverse_flow", "waiting": []}
    assert ask(composite, {"number": 1234}) == {"output_number": 1234}


def test_a_worker_thread_runs_other_messages_while_the_waiting_caller_runs_one(
    cl: Client,
) -> None:
    """The caller waiting on a reply runs messages itself, and worker threads leave new ones to
    it for a moment; but not for longer: while the caller is stuck in one run (at a barrier)
    the worker thread runs the other message, so both pass the barrier."""
    run_dispatch_worker_thread(cl)
    first = mount(cl, "servingflows.BarrierFlow", "barrier")
    second = serving.get_flow_instance(cl, "barrier")
    key = uuid.uuid4().hex
    servingflows.BARRIERS[key] = threading.Barrier(2)
    data = {"barrier": key, "timeout": TIMEOUT}
    futures = [p.get_reply_future(p.package_input_message(data)) for p in (first, second)]
    replies = [future.get_data() for future in futures]  # no timeout: this thread helps
    assert {r["runs"] for r in replies} == {1}
    threads = {r["thread"] for r in replies}
    assert len(threads) == 2 and threading.current_thread().name in threads


def test_get_data_times_out_without_a_worker_then_resolves_when_one_starts(cl: Client) -> None:
    """No worker: get_data(timeout=0.2) raises FlowTimeoutError promptly. Messages sent before
    any worker runs wait in the queue and are answered once one starts, through the same
    future."""
    proxy = mount(cl, "testflows.CounterFlow", "counter")
    first = proxy.get_reply_future(proxy.package_input_message({"i": 1}))
    started = time.monotonic()
    with pytest.raises(FlowTimeoutError) as excinfo:
        first.get_data(timeout=0.2)
    assert time.monotonic() - started < 2.0
    assert isinstance(excinfo.value, TimeoutError)
    assert first.try_get_data() is None
    assert first.done() is False
    second = proxy.get_reply_future(proxy.package_input_message({"i": 2}))
    assert cl.node.backend.pending_count(proxy.get_instance_id()) == 2

    run_dispatch_worker_thread(cl)
    assert first.get_data(timeout=TIMEOUT) == {"count": 1}
    assert second.get_data(timeout=TIMEOUT) == {"count": 2}
    message = first.get_message(timeout=TIMEOUT)
    assert message.is_reply is True


def test_a_run_that_leaves_the_state_as_it_was_saves_nothing(cl: Client) -> None:
    """The first run after a flow is built saves its state; later runs save it only when they
    changed it (each save moves state_version on)."""
    run_dispatch_worker_thread(cl)
    echo = mount(cl, "testflows.EchoFlow", "echo")
    counter = mount(cl, "testflows.CounterFlow", "counter")
    for i in range(3):
        assert ask(echo, {"x": i}) == {"x": i}
        assert ask(counter, {"i": i}) == {"count": i + 1}
    backend = cl.node.backend
    echoed, counted = (backend.get_instance(p.get_instance_id()) for p in (echo, counter))
    assert echoed is not None and echoed.state_version == 1
    assert counted is not None and counted.state_version == 3
    assert counted.state == {"count": 3, "seen": [0, 1, 2]}


def test_a_batch_of_quick_messages_commits_together(cl: Client) -> None:
    """A dispatcher runs the claimed messages of instances seen to be quick one after the
    other and commits them in one transaction: the first one's reply is not in while the
    second still runs; both are once the batch ends. A first message is run alone."""
    dispatcher = Dispatcher(cl.node)
    echo = mount(cl, "testflows.EchoFlow", "echo")
    counter = mount(cl, "servingflows.GatedCounterFlow", "gated")
    warm = [p.get_reply_future(p.package_input_message({})) for p in (echo, counter)]
    assert dispatcher.run_batch(limit=8) == 1  # neither instance ran here yet
    assert dispatcher.run_batch(limit=8) == 1
    assert [outcome(f) for f in warm] == [{}, {"count": 1}]
    key = new_gate()
    servingflows.STARTED[key] = threading.Semaphore(0)
    first = echo.get_reply_future(echo.package_input_message({"x": 1}))
    second = counter.get_reply_future(counter.package_input_message({"gate": key}))
    batch = threading.Thread(target=dispatcher.run_batch, kwargs={"limit": 8})
    batch.start()
    try:
        assert servingflows.STARTED[key].acquire(timeout=TIMEOUT)  # the second one runs
        assert outcome(first) is None
    finally:
        servingflows.GATES[key].set()
        batch.join(TIMEOUT)
    assert (outcome(first), outcome(second)) == ({"x": 1}, {"count": 2})


def test_a_timed_wait_runs_a_quick_message_itself(cl: Client) -> None:
    """get_data(timeout=...) helps as an untimed wait does: with the only worker thread held in
    a long run, the waiting caller runs the message of an instance seen to be quick itself, so
    the reply comes without a hand-off. The instance's first message, of unknown length, is
    left to the worker."""
    run_dispatch_worker_thread(cl)
    quick = mount(cl, "servingflows.ThreadFlow", "thread")
    assert ask(quick, {})["thread"] != threading.current_thread().name
    busy = mount(cl, "servingflows.GateFlow", "gate")
    key = new_gate()
    busy.send_message(busy.package_input_message({"gate": key, "timeout": 2 * TIMEOUT}))
    try:
        assert servingflows.GATES[f"{key}:started"].wait(TIMEOUT)  # the worker is held
        reply = ask(quick, {})
    finally:
        servingflows.GATES[key].set()
    assert reply["thread"] == threading.current_thread().name


def test_get_data_keeps_its_timeout_while_other_work_is_queued(cl: Client) -> None:
    """A future's timeout bounds the wait even when this process runs a worker with slow work
    queued: the waiting caller must not get stuck running someone else's slow message."""
    run_dispatch_worker_thread(cl)
    assert serving.serve_flow(cl, "servingflows.GateFlow", "gate")
    busy = serving.get_flow_instance(cl, "gate")
    queued = serving.get_flow_instance(cl, "gate")
    silent = mount(cl, "testflows.SilentFlow", "silent")
    busy_key, queued_key = new_gate(), new_gate()
    busy.send_message(busy.package_input_message({"gate": busy_key, "timeout": 2}))
    try:
        assert servingflows.GATES[f"{busy_key}:started"].wait(TIMEOUT)  # the worker is busy
        queued.send_message(queued.package_input_message({"gate": queued_key, "timeout": 2}))
        never = silent.get_reply_future(silent.package_input_message({}))  # never answered
        started = time.monotonic()
        with pytest.raises(FlowTimeoutError):
            never.get_data(timeout=0.2)
        elapsed = time.monotonic() - started
    finally:
        servingflows.GATES[busy_key].set()
        servingflows.GATES[queued_key].set()
    assert elapsed < 1.0, f"get_data(timeout=0.2) returned after {elapsed:.2f} s"


def test_await_future_inside_asyncio_run(cl: Client) -> None:
    """``await future`` gives the reply data without blocking the event loop: a coroutine
    opens the gate the awaited flow is waiting on."""
    run_dispatch_worker_thread(cl)
    rev = mount(cl, ATOMIC, "reverse_number_atomic")
    gate = mount(cl, "servingflows.GateFlow", "gate")
    key = new_gate()

    async def open_gate_once_started() -> None:
        started = servingflows.GATES[f"{key}:started"]
        await asyncio.to_thread(started.wait, TIMEOUT)
        servingflows.GATES[key].set()

    async def main() -> tuple[Any, ...]:
        plain = await asyncio.wait_for(
            rev.get_reply_future(rev.package_input_message({"number": 1234})), TIMEOUT
        )
        future = gate.get_reply_future(gate.package_input_message({"gate": key, "timeout": 5}))
        gated, _ = await asyncio.gather(
            future.get_data_async(timeout=TIMEOUT), open_gate_once_started()
        )
        message = await rev.get_reply_future(
            rev.package_input_message({"number": 56})
        ).get_message_async(timeout=TIMEOUT)
        return plain, gated, message.data

    assert asyncio.run(main()) == ({"output_number": 4321}, {"opened": True}, {"output_number": 65})


# -- reply modes ---------------------------------------------------------------------------------


def test_future_reply_is_a_reply_to_the_request(cl: Client) -> None:
    """Reply mode "future": the reply message answers the request (is_reply, same chain)."""
    run_dispatch_worker_thread(cl)
    proxy = mount(cl, ATOMIC, "reverse_number")
    request = proxy.package_input_message({"id": 0, "number": 12345})
    reply = proxy.get_reply_future(request).get_message(timeout=TIMEOUT)
    assert reply.is_reply is True
    assert reply.input_message_id == request.input_message_id
    assert reply.data == {"output_number": 54321}
    assert reply.src_flow_id == proxy.get_instance_id()


def test_push_replies_let_the_non_blocking_composite_finish_on_one_worker(cl: Client) -> None:
    """Reply mode "push": each subflow reply comes back to the composite as a new message, so
    one worker thread (and no help from the waiting caller) runs all 5 messages: 3 composite
    runs, 2 subflow runs, with current_call saved between them."""
    worker = run_dispatch_worker_thread(cl)
    assert serving.serve_flow(cl, ATOMIC, "reverse_number_atomic")
    composite = mount(cl, SEQUENTIAL, "reverse_number_sequential")
    future = composite.get_reply_future(composite.package_input_message({"id": 0, "number": 1234}))
    wait_for(future.done, "the composite's reply", TIMEOUT)  # polling: this thread runs no messages
    assert future.get_data(timeout=TIMEOUT) == {"output_number": 1234}
    wait_for(
        lambda: worker.processed == 5, f"5 processed messages (got {worker.processed})", TIMEOUT
    )
    state = serving.get_flow_state(cl, composite.get_instance_id())
    assert state == {"current_call": "first_reverse_flow", "waiting": []}


def test_the_non_blocking_composite_answers_requests_sent_back_to_back(cl: Client) -> None:
    """Two requests to the non-blocking composite before the first is answered: each gets its
    own answer (the second must not be taken for a subflow's reply to the first)."""
    assert serving.serve_flow(cl, ATOMIC, "reverse_number_atomic")
    composite = mount(cl, SEQUENTIAL, "reverse_number_sequential")
    futures = [
        composite.get_reply_future(composite.package_input_message({"number": n}))
        for n in (1234, 5670)
    ]
    run_dispatch_worker_thread(cl)  # both requests are queued before either runs
    assert futures[0].get_data(timeout=TIMEOUT) == {"output_number": 1234}
    assert futures[1].get_data(timeout=TIMEOUT) == {"output_number": 567}


def test_the_blocking_composite_finishes_on_one_worker(cl: Client) -> None:
    """aiflows needed 2 workers for a blocking composite; flowplex's single worker runs the
    subflow messages while the composite waits on its futures."""
    run_dispatch_worker_thread(cl)
    assert serving.serve_flow(cl, ATOMIC, "reverse_number_atomic")
    composite = mount(cl, BLOCKING, "reverse_number_blocking")
    future = composite.get_reply_future(composite.package_input_message({"number": 1234}))
    wait_for(future.done, "the blocking composite's reply", TIMEOUT)
    assert future.get_data(timeout=TIMEOUT) == {"output_number": 1234}
    assert ask(composite, {"number": 1200}) == {"output_number": 12}


def test_send_message_is_fire_and_forget(cl: Client) -> None:
    """Reply mode "none": the flow runs and its state changes, but no reply is stored, even
    for a future id the sender slipped into reply_data."""
    run_dispatch_worker_thread(cl)
    counter = mount(cl, "testflows.CounterFlow", "counter")
    flow_id = counter.get_instance_id()
    future_id = str(uuid.uuid4())
    message = counter.package_input_message(
        {"i": 1}, reply_data={"mode": "future", "future_id": future_id}
    )
    assert counter.send_message(message) is None
    wait_for(
        lambda: serving.get_flow_state(cl, flow_id)["count"] == 1,
        "the fire-and-forget run",
        TIMEOUT,
    )
    wait_for(
        lambda: cl.node.backend.pending_count(flow_id) == 0, "the message to be acked", TIMEOUT
    )
    assert cl.node.backend.take_reply(future_id) is None
    assert serving.get_flow_state(cl, flow_id) == {"count": 1, "seen": [1]}


def test_a_failure_nobody_waits_for_is_logged(cl: Client, caplog: pytest.LogCaptureFixture) -> None:
    """A fire-and-forget message whose flow raises: no reply, but the failure is logged."""
    run_dispatch_worker_thread(cl)
    failing = mount(cl, "testflows.FailingFlow", "failing")
    failing.send_message(failing.package_input_message({"x": 3}))
    wait_for(
        lambda: any("boom on 3" in r.getMessage() for r in caplog.records),
        "the failure to be logged",
        TIMEOUT,
    )
    assert any(r.levelno == logging.ERROR for r in caplog.records)
    assert serving.get_flow_state(cl, failing.get_instance_id()) == {"touched": False}


def test_messages_queued_for_a_deleted_instance_get_an_error_reply(cl: Client) -> None:
    """Queued before the instance was deleted, answered (with its id) once a worker runs."""
    counter = mount(cl, "testflows.CounterFlow", "counter")
    flow_id = counter.get_instance_id()
    future = counter.get_reply_future(counter.package_input_message({"i": 1}))
    assert serving.delete_flow_instance(cl, flow_id) is True
    run_dispatch_worker_thread(cl)
    with pytest.raises(FlowError) as excinfo:
        future.get_data(timeout=TIMEOUT)
    assert excinfo.value.remote_type == "UnknownInstanceError"
    assert flow_id in excinfo.value.remote_message
    wait_for(lambda: cl.node.backend.pending_count() == 0, "the queue to drain", TIMEOUT)


# -- dispatch points ---------------------------------------------------------------------------


def test_dispatch_point_routes_messages_to_matching_workers_only(cl: Client) -> None:
    """An endpoint served at "gpu" is not run by a "default" worker, but is by a "gpu" one."""
    run_dispatch_worker_thread(cl)
    proxy = mount(cl, ATOMIC, "reverse_number_gpu", dispatch_point="gpu")
    future = proxy.get_reply_future(proxy.package_input_message({"number": 123}))
    with pytest.raises(FlowTimeoutError):
        future.get_data(timeout=0.3)
    assert cl.node.backend.pending_count(proxy.get_instance_id()) == 1
    run_dispatch_worker_thread(cl, dispatch_point="gpu")
    assert future.get_data(timeout=TIMEOUT) == {"output_number": 321}


def test_dispatch_point_override_moves_one_instance(cl: Client) -> None:
    """dispatch_point_override sends one instance's messages to another pool; the endpoint's
    other instances stay on its dispatch point."""
    run_dispatch_worker_thread(cl)
    assert serving.serve_flow(cl, ATOMIC, "reverse_number_atomic")
    stay = serving.get_flow_instance(cl, "reverse_number_atomic")
    moved = serving.get_flow_instance(cl, "reverse_number_atomic", dispatch_point_override="gpu")
    assert cl.node.backend.get_instance(moved.get_instance_id()).dispatch_point == "gpu"
    assert cl.node.backend.get_instance(stay.get_instance_id()).dispatch_point == "default"
    moved_future = moved.get_reply_future(moved.package_input_message({"number": 12}))
    assert ask(stay, {"number": 34}) == {"output_number": 43}
    with pytest.raises(FlowTimeoutError):
        moved_future.get_data(timeout=0.3)
    run_dispatch_worker_thread(cl, dispatch_point="gpu")
    assert moved_future.get_data(timeout=TIMEOUT) == {"output_number": 21}


# -- secrets and private keys --------------------------------------------------------------------


def test_secrets_fill_placeholders_at_run_time_and_are_never_stored(cl: Client) -> None:
    """A "???" config value is filled from the worker's secrets; storage keeps "???"."""
    secret = "sk-test-" + uuid.uuid4().hex
    run_dispatch_worker_thread(cl, secrets={"api_key": secret})
    proxy = mount(cl, "servingflows.SecretFlow", "secret")
    assert ask(proxy, {}) == {"key_hash": servingflows.key_hash(secret)}
    record = cl.node.backend.get_instance(proxy.get_instance_id())
    assert record.config["api_key"] == "???"
    assert secret not in serving.format_served_flows(cl, print_values=True)
    assert secret not in str(record)


def test_a_missing_secret_fails_the_message_naming_the_key(cl: Client) -> None:
    """A worker without the secret answers with a FlowError that names the missing key."""
    run_dispatch_worker_thread(cl)
    proxy = mount(cl, "servingflows.SecretFlow", "secret")
    with pytest.raises(FlowError) as excinfo:
        ask(proxy, {})
    assert excinfo.value.remote_type == "ConfigurationError"
    assert "api_key" in excinfo.value.remote_message
    assert cl.node.backend.pending_count(proxy.get_instance_id()) == 0


def test_private_keys_are_stripped_from_what_the_target_receives(cl: Client) -> None:
    """Keys listed in a message's private_keys never reach the target: from user code, from a
    composite to its subflow, and in a flow's reply."""
    run_dispatch_worker_thread(cl)
    echo = mount(cl, "testflows.EchoFlow", "echo")
    message = echo.package_input_message({"public": 1, "password": "pw"})
    message = message.replace(private_keys=["password"])
    assert echo.get_reply_future(message).get_data(timeout=TIMEOUT) == {"public": 1}

    forward = mount(cl, "servingflows.PrivateForwardFlow", "forward")
    assert ask(forward, {"public": 1, "token": "t0k3n"}) == {"echo_received": {"public": 1}}

    sender = mount(cl, "testflows.SendMessageFlow", "sender")
    assert ask(sender, {}) == {"public": 1}


# -- redelivery, leases, dead letters ------------------------------------------------------------


@pytest.fixture
def clock() -> FakeClock:
    """The clock of ``timed_cl``'s backend: leases run out when the test advances it."""
    return FakeClock()


@pytest.fixture
def timed_cl(tmp_path: Path, db_url: str, clock: FakeClock) -> Iterator[Client]:
    """A fresh node (one user) on the backend under test, its leases timed by ``clock``."""
    node = Node(open_backend(db_url, clock=clock), tmp_path, f"fake-clock-{uuid.uuid4()}")
    client = node.add_user()
    yield client
    node.close()


def claim_as_a_dying_worker(cl: Client, lease: float) -> Any:
    """Claim (as a worker that will die) the one queued message, which must be claimable."""
    claimed = cl.node.backend.claim("default", None, lease, 10)
    assert len(claimed) == 1, claimed
    return claimed[0]


def test_a_message_whose_worker_died_is_delivered_again(timed_cl: Client, clock: FakeClock) -> None:
    """A worker claims a message and dies (never completes): once the lease expires the
    message is delivered again and runs once."""
    cl = timed_cl
    counter = mount(cl, "servingflows.LoggedCounterFlow", "counter")
    log = uuid.uuid4().hex
    future = counter.get_reply_future(counter.package_input_message({"log": log, "i": 1}))
    dead = claim_as_a_dying_worker(cl, lease=10)
    assert dead.deliveries == 1
    dispatcher = Dispatcher(cl.node, "default", lease_seconds=10, max_deliveries=2)
    clock.advance(9)
    assert dispatcher.run_batch() == 0  # still leased to the dead worker
    clock.advance(1)
    assert dispatcher.run_batch() == 1
    assert future.get_data(timeout=TIMEOUT) == {"count": 1}
    assert servingflows.RUN_LOG[log] == [1]
    assert cl.node.backend.list_dead_letters() == []
    assert cl.node.backend.pending_count() == 0


def test_after_max_deliveries_the_caller_gets_an_error_and_a_dead_letter_is_kept(
    timed_cl: Client, clock: FakeClock
) -> None:
    """Two deliveries to workers that died (max_deliveries=2): the next claim gives up, answers
    the caller with a FlowError and keeps the message as a dead letter; it never ran."""
    cl = timed_cl
    counter = mount(cl, "servingflows.LoggedCounterFlow", "counter")
    flow_id = counter.get_instance_id()
    log = uuid.uuid4().hex
    request = counter.package_input_message({"log": log, "i": 1})
    future = counter.get_reply_future(request)
    first = claim_as_a_dying_worker(cl, lease=10)
    clock.advance(10)
    second = claim_as_a_dying_worker(cl, lease=10)
    assert (first.deliveries, second.deliveries) == (1, 2)

    dispatcher = Dispatcher(cl.node, "default", lease_seconds=10, max_deliveries=2)
    clock.advance(10)
    assert dispatcher.run_batch() == 1
    with pytest.raises(FlowError) as excinfo:
        future.get_data(timeout=TIMEOUT)
    assert "max_deliveries=2" in excinfo.value.remote_message
    assert flow_id in excinfo.value.remote_message

    letters = cl.node.backend.list_dead_letters()
    assert len(letters) == 1
    assert letters[0].flow_id == flow_id
    assert "max_deliveries=2" in letters[0].error
    assert letters[0].created_at == clock.time()
    assert FlowMessage.from_json(letters[0].body).data == {"log": log, "i": 1}
    assert cl.node.backend.list_dead_letters(flow_id) == letters
    assert cl.node.backend.list_dead_letters("another-id") == []
    assert cl.node.backend.pending_count(flow_id) == 0
    assert log not in servingflows.RUN_LOG
    assert serving.get_flow_state(cl, flow_id) == {"count": 0}


def test_a_run_whose_lease_was_lost_commits_nothing(timed_cl: Client, clock: FakeClock) -> None:
    """A worker runs a message after its lease expired and another worker took it: the late
    run's completion is refused (no state, no reply, message still queued); the current holder
    then commits a state built from the stored one."""
    cl = timed_cl
    counter = mount(cl, "servingflows.LoggedCounterFlow", "counter")
    flow_id = counter.get_instance_id()
    log = uuid.uuid4().hex
    future = counter.get_reply_future(counter.package_input_message({"log": log, "i": 1}))
    dispatcher = Dispatcher(cl.node, "default", lease_seconds=10)
    late = claim_as_a_dying_worker(cl, lease=10)
    clock.advance(10)
    current = claim_as_a_dying_worker(cl, lease=30)  # another worker took the message

    dispatcher.process(late)
    assert servingflows.RUN_LOG[log] == [1], "the late run did run"
    assert serving.get_flow_state(cl, flow_id) == {"count": 0}
    assert cl.node.backend.pending_count(flow_id) == 1
    assert future.try_get_data() is None

    dispatcher.process(current)
    assert future.get_data(timeout=TIMEOUT) == {"count": 1}
    assert servingflows.RUN_LOG[log] == [1, 1]
    assert serving.get_flow_state(cl, flow_id) == {"count": 1}
    assert cl.node.backend.pending_count(flow_id) == 0


def test_a_flows_wait_for_a_reply_times_out_on_the_dispatchers_clock(
    timed_cl: Client, clock: FakeClock
) -> None:
    """The dispatcher times a running flow's wait for a reply on its clock (by default the
    backend's): a 60 s wait ends when the clock has moved 60 s, not a minute later."""
    cl = timed_cl
    assert serving.serve_flow(cl, "testflows.EchoFlow", "echo", dispatch_point="nobody")
    waiter = mount(cl, "servingflows.TimedWaitFlow", "waiter")
    future = waiter.get_reply_future(waiter.package_input_message({"timeout": 60}))
    # A lease longer than the wait: the message must not be redelivered meanwhile.
    dispatcher = Dispatcher(cl.node, "default", lease_seconds=600)
    assert dispatcher.clock is clock
    ran: list[int] = []
    thread = threading.Thread(target=lambda: ran.append(dispatcher.run_batch()))
    thread.start()
    try:
        # Queued: the waiter's own message (leased) and its request to the echo, which no
        # worker serves: the flow is waiting.
        wait_for(lambda: cl.node.backend.pending_count() == 2, "the flow to wait", TIMEOUT)
        clock.advance(59)
        assert outcome(future) is None
        clock.advance(1)
        thread.join(TIMEOUT)
    finally:
        clock.advance(120)  # a failing test must not leave the flow waiting
        thread.join(TIMEOUT)
    assert ran == [1]
    with pytest.raises(FlowError) as excinfo:
        future.get_data(timeout=TIMEOUT)
    assert excinfo.value.remote_type == "FlowTimeoutError"


def test_a_redelivered_message_runs_on_the_stored_state_not_on_a_run_in_flight(
    timed_cl: Client, clock: FakeClock
) -> None:
    """One dispatcher (a worker thread and a caller helping it share one) runs a message past
    its lease, and then runs the redelivery too: the redelivery must start from the stored
    state, not from the flow object the stale run has already changed."""
    cl = timed_cl
    counter = mount(cl, "servingflows.GatedCounterFlow", "counter")
    dispatcher = Dispatcher(cl.node, "default", lease_seconds=10)
    # A first message, committed: the dispatcher now keeps this instance's flow object.
    first = counter.get_reply_future(counter.package_input_message({}))
    assert dispatcher.run_batch() == 1
    assert first.get_data(timeout=TIMEOUT) == {"count": 1}

    key = new_gate()
    servingflows.STARTED[key] = threading.Semaphore(0)
    second = counter.get_reply_future(counter.package_input_message({"gate": key}))

    ran: list[int] = []

    def run_once() -> None:
        ran.append(dispatcher.run_batch())

    stale = threading.Thread(target=run_once)  # counts, then outlives its lease
    stale.start()
    redelivery = None
    try:
        assert servingflows.STARTED[key].acquire(timeout=TIMEOUT)
        clock.advance(10)
        redelivery = threading.Thread(target=run_once)  # claims it after the lease
        redelivery.start()
        assert servingflows.STARTED[key].acquire(timeout=TIMEOUT)
    finally:
        servingflows.GATES[key].set()
        stale.join(TIMEOUT)
        if redelivery is not None:
            redelivery.join(TIMEOUT)
    assert ran == [1, 1]
    # The stale run's completion was refused; the redelivery counted once over count 1.
    assert second.get_data(timeout=TIMEOUT) == {"count": 2}
    assert serving.get_flow_state(cl, counter.get_instance_id()) == {"count": 2}
