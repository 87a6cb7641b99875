"""Nothing is lost: node restarts, killed worker processes, several worker processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import flowplex
from flowplex import FlowFuture, serving
from flowplex.workers import run_dispatch_worker_thread
from waiting import wait_for

TESTS_DIR = Path(__file__).parent


def _worker_process(db: str, *args: str) -> subprocess.Popen[str]:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(TESTS_DIR), os.environ.get("PYTHONPATH", "")]),
    }
    return subprocess.Popen(
        [sys.executable, "-m", "flowplex", "worker", "--db", db, *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[str]]]:
    procs: list[subprocess.Popen[str]] = []
    yield procs
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()


def test_queued_messages_endpoints_instances_and_state_survive_a_restart(
    durable_db: str, tmp_path: Path
) -> None:
    cl = flowplex.start_node(path=tmp_path, db=durable_db)
    user = cl.get_user_id()
    serving.serve_flow(cl, "testflows.CounterFlow", "counter")
    counter = serving.get_flow_instance(cl, "counter", initial_state={"count": 100})
    # No worker yet: the messages wait in the queue.
    futures = [counter.get_reply_future(counter.package_input_message({"i": i})) for i in range(5)]
    future_ids = [f.future_id for f in futures]
    flow_id = counter.get_instance_id()
    cl.node.close()

    cl = flowplex.start_node(path=tmp_path, db=durable_db)
    try:
        assert cl.get_user_id() == user
        assert serving.is_flow_served(cl, "counter")
        assert serving.get_flow_instance_metadata(cl, flow_id) == {
            "flow_endpoint": "counter",
            "user_id": "local",
        }
        assert cl.node.backend.pending_count(flow_id) == 5
        run_dispatch_worker_thread(cl)
        replies = [FlowFuture(fid, cl).get_data(timeout=10) for fid in future_ids]
        assert replies == [{"count": 101 + i} for i in range(5)]
        state = serving.get_flow_state(cl, flow_id)
        assert state == {"count": 105, "seen": [0, 1, 2, 3, 4]}
    finally:
        cl.node.close()


def test_a_worker_killed_mid_message_loses_nothing(
    durable_db: str, tmp_path: Path, processes: list[subprocess.Popen[str]]
) -> None:
    cl = flowplex.start_node(path=tmp_path, db=durable_db)
    try:
        sys.path.insert(0, str(TESTS_DIR))
        serving.serve_flow(cl, "testflows.CrashOnceFlow", "crash_once")
        proxy = serving.get_flow_instance(cl, "crash_once")
        marker = tmp_path / "marker"
        future = proxy.get_reply_future(proxy.package_input_message({"marker": str(marker)}))

        first = _worker_process(durable_db, "--lease", "1")
        processes.append(first)
        wait_for(marker.exists, "the first worker to start the run", 30)
        assert marker.read_text() == str(first.pid)
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)

        # The killed run committed nothing: the state is as before, the message still queued.
        assert serving.get_flow_state(cl, proxy.get_instance_id()) == {"runs": 0}
        assert cl.node.backend.pending_count(proxy.get_instance_id()) == 1

        second = _worker_process(durable_db, "--lease", "1")
        processes.append(second)
        reply = future.get_data(timeout=30)
        assert reply == {"runs": 1, "pid": second.pid}
        assert serving.get_flow_state(cl, proxy.get_instance_id()) == {"runs": 1}
        assert cl.node.backend.pending_count() == 0
        assert cl.node.backend.list_dead_letters() == []
    finally:
        cl.node.close()


def test_several_worker_processes_share_one_database(
    durable_db: str, tmp_path: Path, processes: list[subprocess.Popen[str]]
) -> None:
    cl = flowplex.start_node(path=tmp_path, db=durable_db)
    try:
        serving.serve_flow(cl, "testflows.CounterFlow", "counter")
        counters = [serving.get_flow_instance(cl, "counter") for _ in range(4)]
        for _ in range(2):
            proc = _worker_process(durable_db, "--concurrency", "2")
            processes.append(proc)
            # The banner comes after the signal handlers are installed.
            assert proc.stdout is not None
            assert "flowplex worker:" in proc.stdout.readline()
        futures = {
            c.get_instance_id(): [
                c.get_reply_future(c.package_input_message({"i": i})) for i in range(25)
            ]
            for c in counters
        }
        for flow_id, pending in futures.items():
            # Per-instance FIFO across processes: the replies count up in send order.
            assert [f.get_data(timeout=30)["count"] for f in pending] == list(range(1, 26))
            assert serving.get_flow_state(cl, flow_id)["seen"] == list(range(25))
        for proc in processes:
            proc.send_signal(signal.SIGTERM)
        for proc in processes:
            out, _ = proc.communicate(timeout=20)  # the rest of the output, after the banner
            assert proc.returncode == 0, out
            assert "stopped after" in out
    finally:
        cl.node.close()
