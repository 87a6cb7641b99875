"""A node with something to show on the dashboard, and ``flowplex up`` serving it for real.

:func:`build_scene` fills a node database the way a user would (serving flows, mounting
instances, sending messages, one that fails, a finished and a failed task-graph run, an op
version); :func:`start_up` runs ``flowplex up`` on it in a subprocess on a free loopback port.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

import flowplex
from flowplex import serving
from flowplex.artifacts import FileSaver, OpStore, Version, VersionType
from flowplex.engine import FlowEngine, FlowRunner, FlowStore, TaskFlow
from flowplex.errors import FlowError
from flowplex.workers import run_dispatch_worker_thread
from waiting import wait_for

TESTS = Path(__file__).resolve().parent

DONE_SPEC = {
    "label": "nightly-report",
    "tasks": [
        {"key": "fetch", "task_type": "noop"},
        {"key": "clean", "task_type": "noop", "precursors": ["fetch"]},
        {"key": "score", "task_type": "noop", "precursors": ["fetch"]},
        {
            "key": "publish",
            "task_type": "python",
            "precursors": ["clean", "score"],
            "task_params": {"fn": "builtins.dict", "kwargs": {"published": 3}},
        },
    ],
}
FAILED_SPEC = {
    "label": "broken-import",
    "tasks": [
        {"key": "load", "task_type": "noop"},
        {
            "key": "explode",
            "task_type": "python",
            "precursors": ["load"],
            "task_params": {"fn": "no_such_module_here.run"},
        },
    ],
}


@dataclass
class Scene:
    """What :func:`build_scene` made: ids and keys the pages must show."""

    home: Path
    db: str
    counter_id: str = ""
    failing_id: str = ""
    reverse_id: str = ""
    done_run: str = ""
    failed_run: str = ""
    user_id: str = ""
    ops: list[str] = field(default_factory=list)


def build_scene(home: Path) -> Scene:
    """Serve three flows, send them messages (one fails), run two task graphs (one fails) and
    store an op version, all in the node database under ``home``."""
    db = f"sqlite:///{home}/flowplex.db"
    scene = Scene(home, db)
    cl = flowplex.start_node(path=home, db=db)
    scene.user_id = cl.get_user_id()
    serving.serve_flow(cl, "testflows.CounterFlow", "counter")
    serving.serve_flow(cl, "testflows.FailingFlow", "failing")
    serving.serve_flow(cl, "flowplex.examples.ReverseNumberAtomicFlow", "reverse")
    run_dispatch_worker_thread(cl)
    counter = serving.get_flow_instance(cl, "counter")
    for i in range(3):
        counter.get_reply_future(counter.package_input_message({"i": i})).get_data(timeout=30)
    failing = serving.get_flow_instance(cl, "failing")
    with pytest.raises(FlowError, match="boom on 7"):
        failing.get_reply_future(failing.package_input_message({"x": 7})).get_data(timeout=30)
    reverse = serving.get_flow_instance(cl, "reverse")
    scene.counter_id = counter.get_instance_id()
    scene.failing_id = failing.get_instance_id()
    scene.reverse_id = reverse.get_instance_id()
    cl.node.close()

    store = FlowStore(db)
    try:
        scene.done_run = store.create_flow(TaskFlow.from_flow_spec(DONE_SPEC))
        scene.failed_run = store.create_flow(TaskFlow.from_flow_spec(FAILED_SPEC))
        runner = FlowRunner(store, FlowEngine(store=store), max_flows_per_tick=10)
        wait_for(
            lambda: (
                runner.tick()
                and all(store.get_flow(k).finished for k in (scene.done_run, scene.failed_run))
            ),
            "both runs finished",
        )
    finally:
        store.close()

    ops = OpStore(FileSaver(home / "artifacts"), db)
    try:
        first = Version()
        ops.register_valid_link(None, "tokenizer", first)
        ops.save_op_bytes("tokenizer", first, b"a b c")
        ops.register_valid_link(None, "tokenizer", Version.atomic(VersionType.MINOR, "v2"))
        scene.ops = ["tokenizer"]
    finally:
        ops.close()
    return scene


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def start_up(scene: Scene, *extra: str) -> Iterator[str]:
    """``flowplex up`` on the scene's node in a subprocess; yields its base URL once it
    answers, and stops it (SIGTERM) at the end."""
    url = f"http://127.0.0.1:{free_port()}"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("FLOWPLEX_DB", None)
    command = [
        sys.executable,
        "-m",
        "flowplex",
        "up",
        "--url",
        url,
        "--home",
        str(scene.home),
        "--path",
        str(TESTS),
        "--heartbeat",
        "0.5",
        *extra,
    ]
    process = subprocess.Popen(
        command, cwd=scene.home, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:

        def answers() -> bool:
            if process.poll() is not None:
                output = process.stdout.read().decode() if process.stdout else ""
                raise AssertionError(f"flowplex up exited {process.returncode}:\n{output}")
            try:
                return httpx.get(url + "/", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(answers, "flowplex up to answer")
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stdout:
            process.stdout.close()
