"""Every failure reaches the caller at once, and nothing wedges an instance.

Each test runs on every backend (memory, a SQLite file, a PostgreSQL schema) with real worker
threads; the waits are bounded well below the lease a stuck message would hold.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import flowplex
from flowplex import FlowError, serving
from flowplex.workers import run_dispatch_worker_thread
from waiting import wait_for

#: Far below the default lease times max deliveries: a reply that comes only after a
#: redelivery (or never) fails the test.
QUICK = 4.0


@pytest.fixture
def client(db_url: str, tmp_path: Path) -> flowplex.Client:
    cl = flowplex.start_node(path=tmp_path, db=db_url)
    yield cl
    cl.node.close()


@pytest.mark.parametrize("bad", ["set", "object"])
def test_an_unencodable_reply_is_an_error_reply_at_once_and_commits_nothing(
    client: flowplex.Client, bad: str
) -> None:
    serving.serve_flow(client, "faultflows.CountingFlow", "counting")
    proxy = serving.get_flow_instance(client, "counting")
    run_dispatch_worker_thread(client, lease_seconds=30.0)
    future = proxy.get_reply_future(proxy.package_input_message({"bad": bad}))
    with pytest.raises(FlowError, match="not JSON-serializable"):
        future.get_data(timeout=QUICK)
    # The count the failed run made is not kept, and the instance answers the next message.
    assert serving.get_flow_state(client, proxy.get_instance_id())["count"] == 0
    ok = proxy.get_reply_future(proxy.package_input_message({}))
    assert ok.get_data(timeout=QUICK) == {"count": 1}
    assert client.node.backend.list_dead_letters() == []


def test_a_composite_failing_on_a_pushed_reply_answers_its_caller_and_rolls_back(
    client: flowplex.Client,
) -> None:
    serving.recursive_serve_flow(client, "faultflows.PushThenFailFlow", "push")
    proxy = serving.get_flow_instance(client, "push")
    run_dispatch_worker_thread(client, lease_seconds=30.0)
    failing = proxy.get_reply_future(proxy.package_input_message({"fail": True}))
    with pytest.raises(FlowError, match="cannot handle the counter's reply"):
        failing.get_data(timeout=QUICK)
    # Back at the state from before the failed request: the next request works.
    state = serving.get_flow_state(client, proxy.get_instance_id())
    assert state["step"] == "idle"
    assert "request" not in state
    ok = proxy.get_reply_future(proxy.package_input_message({}))
    assert ok.get_data(timeout=QUICK) == {"count": 2}
    assert serving.get_flow_state(client, proxy.get_instance_id())["done"] == 1


def test_a_pushed_reply_to_a_deleted_composite_answers_the_original_caller(
    client: flowplex.Client,
) -> None:
    serving.recursive_serve_flow(client, "faultflows.PushElsewhereFlow", "push")
    proxy = serving.get_flow_instance(client, "push")
    composite = proxy.get_instance_id()
    run_dispatch_worker_thread(client, lease_seconds=30.0)
    future = proxy.get_reply_future(proxy.package_input_message({}))
    wait_for(
        lambda: serving.get_flow_state(client, composite)["step"] == "waiting",
        "the composite to wait for its subflow",
    )
    # The counter's request waits at "sub"; the composite goes before it is answered.
    assert serving.delete_flow_instance(client, composite)
    run_dispatch_worker_thread(client, "sub", lease_seconds=30.0)
    with pytest.raises(FlowError, match="Unknown flow instance"):
        future.get_data(timeout=QUICK)


def test_a_run_longer_than_its_lease_runs_once(client: flowplex.Client, tmp_path: Path) -> None:
    """The worker's heartbeat keeps the lease while the run lasts over three leases: a second
    worker never gets the message, so every message runs exactly once."""
    serving.serve_flow(client, "faultflows.SlowFlow", "slow")
    proxy = serving.get_flow_instance(client, "slow")
    for _ in range(2):
        # Short enough to run out thrice per run, long enough for a loaded machine to beat in time.
        run_dispatch_worker_thread(client, lease_seconds=0.5)
    log = tmp_path / "runs.log"
    futures = [
        proxy.get_reply_future(
            proxy.package_input_message({"i": i, "seconds": 1.6, "log": str(log)})
        )
        for i in range(2)
    ]
    assert [f.get_data(timeout=30)["i"] for f in futures] == [0, 1]
    assert sorted(line.split()[0] for line in log.read_text().splitlines()) == ["0", "1"]
    assert serving.get_flow_state(client, proxy.get_instance_id())["count"] == 2
    assert client.node.backend.list_dead_letters() == []


def test_messages_queued_to_a_deleted_instance_are_answered_at_once(
    client: flowplex.Client,
) -> None:
    """No worker runs: the delete itself answers what was queued."""
    serving.serve_flow(client, "faultflows.CountingFlow", "counting")
    proxy = serving.get_flow_instance(client, "counting")
    futures = [proxy.get_reply_future(proxy.package_input_message({})) for _ in range(3)]
    assert serving.delete_flow_instance(client, proxy.get_instance_id())
    for future in futures:
        with pytest.raises(FlowError, match="deleted before it ran"):
            future.get_data(timeout=QUICK)
    assert client.node.backend.pending_count() == 0


def test_a_dispatcher_keeps_a_bounded_number_of_flows(client: flowplex.Client) -> None:
    """Flows kept between messages go when their instance is deleted, and beyond a bound
    (least recently used first): a long-running worker's memory stays flat."""
    from flowplex.runtime import Dispatcher

    serving.serve_flow(client, "faultflows.CountingFlow", "counting")
    dispatcher = Dispatcher(client.node, cache_size=8)
    client.node.run_in_callers(dispatcher)

    def one_message(proxy: object) -> None:
        future = proxy.get_reply_future(proxy.package_input_message({}))  # type: ignore[attr-defined]
        assert future.get_data(timeout=QUICK) == {"count": 1}

    for _ in range(30):  # created, run, deleted
        proxy = serving.get_flow_instance(client, "counting")
        one_message(proxy)
        assert serving.delete_flow_instance(client, proxy.get_instance_id())
    assert dispatcher.cached_flows == 0
    kept = [serving.get_flow_instance(client, "counting") for _ in range(30)]
    for proxy in kept:
        one_message(proxy)
    assert dispatcher.cached_flows == 8


@pytest.mark.parametrize("fault", ["deleted", "replaced"])
def test_a_deleted_or_replaced_sqlite_file_fails_loudly(tmp_path: Path, fault: str) -> None:
    """Writes into a file nobody will read again are refused, not reported as done; the worker
    thread stops, saying why."""
    import shutil

    from flowplex.errors import StorageUnwritableError

    db = tmp_path / "node.db"
    cl = flowplex.start_node(path=tmp_path, db=f"sqlite:///{db}")
    try:
        serving.serve_flow(cl, "faultflows.CountingFlow", "counting")
        proxy = serving.get_flow_instance(cl, "counting")
        worker = run_dispatch_worker_thread(cl, lease_seconds=30.0)
        assert proxy.get_reply_future(proxy.package_input_message({})).get_data(QUICK)
        if fault == "deleted":
            for suffix in ("", "-wal", "-shm"):
                Path(f"{db}{suffix}").unlink(missing_ok=True)
        else:
            shutil.copy(db, tmp_path / "copy.db")
            (tmp_path / "copy.db").replace(db)
        with pytest.raises(StorageUnwritableError, match=f"file was {fault}"):
            proxy.get_reply_future(proxy.package_input_message({}))
        cl.node.backend.wake()
        wait_for(lambda: not worker.is_alive(), "the worker to stop")
        assert isinstance(worker.fatal, StorageUnwritableError)
    finally:
        cl.node.close()


def test_a_conversation_started_after_answering_another_keeps_what_that_one_did(
    client: flowplex.Client,
) -> None:
    """A composite answers one request and, in the same run, starts the one it kept waiting.
    That second conversation failing must not roll the composite back past the first (whose
    caller was answered), nor send the first caller its error."""
    serving.recursive_serve_flow(client, "faultflows.PushQueueFlow", "queue")
    proxy = serving.get_flow_instance(client, "queue")
    first = proxy.get_reply_future(proxy.package_input_message({}))
    second = proxy.get_reply_future(proxy.package_input_message({"fail": True}))
    run_dispatch_worker_thread(client, lease_seconds=30.0)
    assert first.get_data(timeout=QUICK) == {"count": 1}
    wait_for(lambda: client.node.backend.pending_count() == 0, "the second conversation")
    assert serving.get_flow_state(client, proxy.get_instance_id())["done"] == 1
    del second  # its caller is unknown to the runtime: the failure is logged


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_the_runner_saves_each_task_and_keeps_its_claim_past_the_lease(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """A task blocks three leases long: the (not instant) task before it is saved already (a
    runner killed now would not redo it), and no other runner can claim the flow meanwhile."""
    import threading
    import time

    from flowplex.engine import FlowRunner, FlowStore, TaskFlow

    url = f"sqlite:///{tmp_path}/runs.db" if kind == "sqlite" else request.getfixturevalue("pg_url")
    store, competitor = FlowStore(url), FlowStore(url)
    store.ensure_tables()
    started, release = tmp_path / "started", tmp_path / "release"
    spec = {
        "tasks": [
            {
                "key": "first",
                "task_type": "python",
                "task_params": {"fn": "faultflows.nap", "args": [0.1, str(tmp_path / "log"), "a"]},
            },
            {
                "key": "blocked",
                "task_type": "python",
                "task_params": {
                    "fn": "engineflows.block_until_file",
                    "args": [str(started), str(release)],
                },
                "precursors": ["first"],
            },
        ]
    }
    key = store.create_flow(TaskFlow.from_flow_spec(spec))
    # The lease is short enough that a run outlives it three times, long enough that a loaded
    # machine still beats in time (a third of it between beats).
    runner = FlowRunner(store, lease=0.6)
    (claim,) = store.claim_flows(lease=0.6)
    thread = threading.Thread(target=runner.run_claim, args=(claim,))
    thread.start()
    try:
        wait_for(started.exists, "the blocking task to start")
        assert store.get_flow(key).tasks["first"]["status"] == "COMPLETED"
        until = time.monotonic() + 2.0  # over three leases
        while time.monotonic() < until:
            assert competitor.claim_flow(key, lease=30) is None
            # A competing runner polls; a loop without pause would starve SQLite's other writer.
            time.sleep(0.02)
    finally:
        release.write_text("go")
        thread.join(30)
    assert store.get_flow(key).status == "COMPLETED"
    store.close()
    competitor.close()
