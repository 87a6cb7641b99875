"""The command line as people use it: ``send`` keeps its instance, ``instances`` is a table,
failed runs exit non-zero, Ctrl-C says what it finishes and a second one exits, help speaks
plainly. Long-running commands run as real processes and get real signals."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from typer.testing import CliRunner

import flowplex
from dashboard_scene import FAILED_SPEC, TESTS, free_port
from flowplex import serving
from flowplex.cli import app
from flowplex.engine import FlowStore
from waiting import wait_for

runner = CliRunner()
SLOW = "testflows.SlowFlow"


def invoke(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_send_reuses_one_instance_per_endpoint_and_user(tmp_path: Path) -> None:
    home = ["--home", str(tmp_path), "--path", str(TESTS)]
    assert invoke("serve", "testflows.CounterFlow", "counter", *home)[0] == 0
    counts = []
    for _ in range(3):
        code, out, err = invoke("send", "counter", '{"i": 1}', *home)
        assert code == 0, err
        counts.append(json.loads(out)["count"])
    assert counts == [1, 2, 3]  # one instance, its state carried on
    assert _instance_count(tmp_path) == 1
    code, out, err = invoke("send", "counter", '{"i": 1}', "--new", *home)
    assert json.loads(out) == {"count": 1} and "mounted instance" in err
    code, out, _ = invoke("send", "counter", '{"i": 1}', *home)
    assert json.loads(out) == {"count": 2}  # the new one is the default now
    for expected in (1, 2):
        code, out, _ = invoke("send", "counter", "{}", "--instance", "night", *home)
        assert json.loads(out) == {"count": expected}
    assert _instance_count(tmp_path) == 3


def _instance_count(home: Path) -> int:
    cl = flowplex.start_node(path=home)
    try:
        return len(cl.node.backend.list_instances(cl.get_user_id()))
    finally:
        cl.node.close()


def test_send_to_an_instance_of_another_endpoint_is_an_error(tmp_path: Path) -> None:
    home = ["--home", str(tmp_path), "--path", str(TESTS)]
    invoke("serve", "testflows.CounterFlow", "counter", *home)
    invoke("serve", "testflows.EchoFlow", "echo", *home)
    invoke("send", "counter", "{}", *home)
    cl = flowplex.start_node(path=tmp_path)
    (record,) = cl.node.backend.list_instances(cl.get_user_id())
    cl.node.close()
    result = runner.invoke(app, ["send", "echo", "{}", "--flow-id", record.flow_id, *home])
    assert result.exit_code == 2
    assert "belongs to endpoint 'counter'" in _plain(result.output)
    code, out, _ = invoke("send", "counter", "{}", "--flow-id", record.flow_id, *home)
    assert code == 0 and json.loads(out) == {"count": 2}
    result = runner.invoke(app, ["send", "counter", "{}", "--flow-id", "nope", "--new", *home])
    assert result.exit_code == 2 and "not both" in _plain(result.output)


def _plain(text: str) -> str:
    """Rich's boxed error as one line of words."""
    return " ".join(re.sub(r"[│╭╮╰╯─]", " ", text).split())


def test_instances_is_a_table_with_queue_and_errors(tmp_path: Path) -> None:
    home = ["--home", str(tmp_path), "--path", str(TESTS)]
    invoke("serve", "testflows.CounterFlow", "counter", *home)
    invoke("serve", "testflows.FailingFlow", "failing", *home)
    invoke("send", "counter", '{"i": 4}', *home)
    assert invoke("send", "failing", '{"x": 3}', *home)[0] == 1
    result = subprocess.run(
        [sys.executable, "-m", "flowplex", "instances", "--home", str(tmp_path)],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
        check=True,
    )
    lines = result.stdout.splitlines()
    header = next(line for line in lines if "instance" in line)
    for column in ("endpoint", "served by", "mounted by", "state", "queued", "in flight", "dead"):
        assert column in header
    counter = next(line for line in lines if "counter" in line)
    assert '"count": 1' in counter
    failing = next(line for line in lines if "failing" in line)
    assert "ValueError: boom on 3" in failing


def test_runs_tick_exits_non_zero_when_the_run_fails(tmp_path: Path) -> None:
    home = ["--home", str(tmp_path)]
    spec = tmp_path / "broken.json"
    spec.write_text(json.dumps(FAILED_SPEC))
    key = invoke("runs", "create", str(spec), *home)[1].strip()
    result = runner.invoke(app, ["runs", "tick", key, "--until-finished", *home])
    assert result.exit_code == 1
    assert f"{key} FAILED" in result.stdout
    assert f"error: run {key} FAILED" in result.stderr
    assert "no_such_module_here" in result.stderr
    ok = tmp_path / "ok.yaml"
    ok.write_text("tasks: [{task_type: noop}]\n")
    key = invoke("runs", "create", str(ok), *home)[1].strip()
    result = runner.invoke(app, ["runs", "tick", "--until-finished", *home])
    assert result.exit_code == 0, result.output
    assert f"{key} COMPLETED" in result.stdout


def _help_pages() -> Iterator[tuple[str, str]]:
    """``--help`` of the root command and of every command and sub-command."""
    import typer.main

    root = typer.main.get_command(app)

    def walk(command: object, path: list[str]) -> Iterator[tuple[str, str]]:
        out = runner.invoke(app, [*path, "--help"], env={"COLUMNS": "200"})
        assert out.exit_code == 0, (path, out.output)
        yield " ".join(["flowplex", *path]), out.output
        for name in sorted(getattr(command, "commands", {})):
            yield from walk(command.commands[name], [*path, name])  # type: ignore[attr-defined]

    yield from walk(root, [])


#: Words that belong to the systems flowplex replaced (allowed only on the migrating page).
JARGON = ("seed", "aiflows", "colink", "kodo", "missioncontrol", "mission control", "chariots")


def test_help_has_no_type_labels_and_no_jargon() -> None:
    pages = list(_help_pages())
    assert len(pages) >= 20
    for name, text in pages:
        for label in ("<bool>", "<str>", "<int", "<float", "<path>", "<list"):
            assert label not in text, f"{name} --help shows {label}"
        lowered = text.lower()
        for word in JARGON:
            assert word not in lowered, f"{name} --help says {word!r}"


def test_the_readme_speaks_flowplex_words() -> None:
    readme = (TESTS.parent / "README.md").read_text()
    # The one place the original systems are named is the migrating page the README links to.
    readme = readme.replace("docs/migrating.md", "")
    lowered = readme.lower()
    for word in JARGON:
        assert word not in lowered, f"README.md says {word!r}"


# -- Ctrl-C -------------------------------------------------------------------------------------


@contextmanager
def running(*args: str, cwd: Path) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    """``flowplex ARGS`` as a process whose stderr goes to a file; killed if still alive."""
    log = cwd / f"stderr-{args[0]}.txt"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "flowplex", *args],
            cwd=cwd,
            stdout=subprocess.DEVNULL,
            stderr=sink,
            env={**os.environ, "COLUMNS": "200"},
        )
    try:
        yield process, log
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def _interrupt_twice(process: subprocess.Popen[bytes], log: Path, finishing: str) -> None:
    """First Ctrl-C: the process says what it finishes and keeps going; second: it exits."""
    process.send_signal(signal.SIGINT)
    wait_for(lambda: finishing in log.read_text(), f"{finishing!r} on stderr")
    assert "Ctrl-C again to exit at once" in log.read_text()
    assert process.poll() is None, "the first Ctrl-C should let the work in hand finish"
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=15) == 130
    assert "exiting now" in log.read_text()


def _slow_node(home: Path) -> Path:
    """A node serving the slow flow, with a 60 s message queued for it; the file its run
    creates when it begins (the tests wait for that, not for the message's lease: a worker
    told to stop between its claim and the run gives the message back instead)."""
    started = home / "started"
    cl = flowplex.start_node(path=home)
    serving.serve_flow(cl, SLOW, "slow")
    proxy = serving.get_flow_instance(cl, "slow")
    proxy.send_message(proxy.package_input_message({"seconds": 60, "started": str(started)}))
    cl.node.close()
    return started


def test_ctrl_c_in_worker(tmp_path: Path) -> None:
    started = _slow_node(tmp_path)
    with running("worker", "--home", str(tmp_path), "--path", str(TESTS), cwd=tmp_path) as (
        process,
        log,
    ):
        wait_for(started.exists, "the worker running the slow message")
        _interrupt_twice(process, log, "finishing the messages in hand")


def test_ctrl_c_in_send(tmp_path: Path) -> None:
    started = tmp_path / "started"
    cl = flowplex.start_node(path=tmp_path)
    serving.serve_flow(cl, SLOW, "slow")
    cl.node.close()
    data = json.dumps({"seconds": 60, "started": str(started)})
    args = ("send", "slow", data, "--home", str(tmp_path), "--path", str(TESTS))
    with running(*args, cwd=tmp_path) as (process, log):
        wait_for(started.exists, "send's worker running the slow message")
        _interrupt_twice(process, log, "the message stays queued for instance")


def test_ctrl_c_in_up(tmp_path: Path) -> None:
    started = _slow_node(tmp_path)
    url = f"http://127.0.0.1:{free_port()}"
    args = ("up", "--url", url, "--home", str(tmp_path), "--path", str(TESTS))
    with running(*args, cwd=tmp_path) as (process, log):
        wait_for(started.exists, "up's worker running the slow message")
        _interrupt_twice(process, log, "finishing the requests and the messages in hand")


def test_ctrl_c_in_runner(tmp_path: Path) -> None:
    spec = tmp_path / "slow.json"
    slow = {"task_type": "python", "task_params": {"fn": "time.sleep", "args": [60]}}
    spec.write_text(json.dumps({"label": "slow", "tasks": [slow]}))
    key = invoke("runs", "create", str(spec), "--home", str(tmp_path))[1].strip()
    store = FlowStore(f"sqlite:///{tmp_path}/flowplex.db")

    def claimed() -> bool:
        session = store.session
        session.rollback()  # end the last look's transaction: its snapshot misses the claim
        row = session.get(store.model, key)
        return row is not None and row.claimed_by is not None

    try:
        with running("runner", "--home", str(tmp_path), cwd=tmp_path) as (process, log):
            wait_for(claimed, "the runner claiming the slow run")
            _interrupt_twice(process, log, "finishing the round in hand")
    finally:
        store.close()


def test_the_first_ctrl_c_sets_the_stop_event_the_main_thread_is_waiting_on() -> None:
    """A signal handler runs in the main thread, which may be inside ``stop.wait()`` and hold
    the event's lock (not reentrant) just then: setting the event right there would deadlock."""
    from flowplex.cli._common import Interrupts

    stop = threading.Event()
    interrupts = Interrupts("finishing", stop)
    handled = threading.Event()

    def signal_during_wait() -> None:
        with stop._cond:  # held as stop.wait() holds it around its check
            interrupts.handle(signal.SIGINT, None)
        handled.set()

    threading.Thread(target=signal_during_wait, daemon=True).start()
    assert handled.wait(10), "the handler deadlocked on the stop event's lock"
    assert stop.wait(10)


@pytest.mark.parametrize("command", [["worker"], ["runner"]])
def test_one_ctrl_c_on_an_idle_process_exits_cleanly(tmp_path: Path, command: list[str]) -> None:
    with running(*command, "--home", str(tmp_path), cwd=tmp_path) as (process, log):
        wait_for(lambda: "pid" in log.read_text(), "the banner")
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=30) == 0
        assert "stopping:" in log.read_text()


def test_the_api_docs_speak_flowplex_words(tmp_path: Path) -> None:
    from flowplex.server import NodeServer

    with NodeServer("http://127.0.0.1:3399", f"sqlite:///{tmp_path}/n.db", tmp_path) as server:
        schemas = [json.dumps(server.app.openapi())]
        assert server.opstore is not None
        schemas.append(json.dumps(server.opstore.app.openapi()))
    for schema in schemas:
        lowered = schema.lower()
        for word in JARGON:
            assert word not in lowered, f"the API docs say {word!r}"
