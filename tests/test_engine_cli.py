"""``flowplex runs ...`` and ``flowplex runner`` on real SQLite files (and the embedded default)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from flowplex.cli import app
from flowplex.engine import EngineError, FlowSpecError, FlowStore
from flowplex.errors import ConfigurationError

runner = CliRunner()
TESTS_DIR = Path(__file__).resolve().parent
DEADLINE = 30.0

SPEC_YAML = """\
label: cli_flow
tasks:
  - key: task_1
    task_type: print
    task_params: {msg: I am task_1.}
  - key: task_2
    task_type: print
    task_params: {msg: I am task_2.}
"""


@pytest.fixture
def db(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/runs.db"


def invoke(*args: str) -> str:
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, (result.output, result.exception)
    return result.output


def create(tmp_path: Path, db: str, text: str = SPEC_YAML, name: str = "spec.yaml") -> str:
    path = tmp_path / name
    path.write_text(text)
    key = invoke("runs", "create", str(path), "--db", db).strip()
    assert key.startswith("flow:")
    return key


def test_create_ls_show_tick(tmp_path: Path, db: str) -> None:
    key = create(tmp_path, db)
    listing = invoke("runs", "ls", "--db", db)
    assert key in listing and "cli_flow" in listing and "PENDING" in listing and "0/2" in listing
    assert "(no runs)" in invoke("runs", "ls", "--status", "completed", "--db", db)

    shown = invoke("runs", "show", key, "--db", db)
    assert "task_1 print PENDING" in shown and "task_2 print PENDING" in shown

    out = invoke("runs", "tick", key, "--db", db)
    assert out.splitlines() == ["I am task_1.", f"{key} RUNNING (1/2 tasks completed)"]
    out = invoke("runs", "tick", key, "--until-finished", "--db", db)
    assert out.splitlines() == ["I am task_2.", f"{key} COMPLETED (2/2 tasks completed)"]
    assert key in invoke("runs", "ls", "--status", "COMPLETED", "--db", db)
    assert "task_2 print COMPLETED" in invoke("runs", "show", key, "--db", db)


def test_tick_all_until_finished_with_json(tmp_path: Path, db: str) -> None:
    spec = {"label": "j", "tasks": [{"task_type": "noop"}, {"task_type": "noop"}]}
    keys = {create(tmp_path, db, json.dumps(spec), f"s{i}.json") for i in range(2)}
    out = invoke("runs", "tick", "--until-finished", "--json", "--db", db)
    decoder, pos, dicts = json.JSONDecoder(), 0, []
    while pos < len(out.strip()):
        value, end = decoder.raw_decode(out, pos)
        dicts.append(value)
        pos = end + 1
    assert {d["key"] for d in dicts} == keys
    assert {d["status"] for d in dicts} == {"COMPLETED"}
    assert "(no runs to tick)" in invoke("runs", "tick", "--db", db)


def test_one_round_ticks_every_pending_run(tmp_path: Path, db: str) -> None:
    # "one runner round (every claimable run ticked ...)": the runner's default of ten a
    # round used to leave the rest untouched while listing them.
    spec = {"tasks": [{"task_type": "noop"}]}
    keys = [create(tmp_path, db, json.dumps(spec), f"s{i}.json") for i in range(12)]
    out = invoke("runs", "tick", "--db", db)
    assert out.count("COMPLETED") == 12
    store = FlowStore(db)
    assert {store.get_flow(k).status for k in keys} == {"COMPLETED"}
    store.close()


def test_tick_until_finished_runs_child_runs_too(tmp_path: Path, db: str) -> None:
    child = {"tasks": [{"task_type": "print", "task_params": {"msg": "in the child"}}]}
    spec = {
        "label": "nested",
        "tasks": [
            {"key": "sub", "task_type": "flow", "task_params": {"flow_spec": child}},
            {"key": "after", "task_type": "print", "task_params": {"msg": "after the child"}},
        ],
    }
    key = create(tmp_path, db, json.dumps(spec), "nested.json")
    out = invoke("runs", "tick", key, "--until-finished", "--interval", "0.01", "--db", db)
    assert out.splitlines() == [
        "in the child",
        "after the child",
        f"{key} COMPLETED (2/2 tasks completed)",
    ]
    listing = invoke("runs", "ls", "--status", "COMPLETED", "--db", db)
    assert listing.count("flow:") == 2


def test_show_prints_errors_and_joins(tmp_path: Path, db: str) -> None:
    spec = {
        "label": "bad",
        "cfg": {"fail_fast": False},
        "tasks": [
            {"key": "a", "task_type": "noop", "precursors": ["ROOT"]},
            {"key": "b", "task_type": "nonesuch", "precursors": ["ROOT"]},
            {"key": "c", "task_type": "noop", "precursors": ["a", "b"]},
        ],
    }
    key = create(tmp_path, db, json.dumps(spec), "bad.json")
    ticked = runner.invoke(app, ["runs", "tick", key, "--until-finished", "--db", db])
    assert ticked.exit_code == 1  # the run FAILED
    assert f"error: run {key} FAILED: task 'b' (nonesuch)" in ticked.stderr
    shown = invoke("runs", "show", key, "--db", db)
    assert "FAILED" in shown and "c noop PENDING (see above)" in shown
    assert "error: task 'b' (nonesuch): unknown task_type 'nonesuch'" in shown


def test_the_default_database_is_the_embedded_one(tmp_path: Path) -> None:
    path = tmp_path / "spec.yaml"
    path.write_text(SPEC_YAML)
    key = invoke("runs", "create", str(path)).strip()
    # conftest points FLOWPLEX_HOME at tmp_path/.flowplex
    store = FlowStore(f"sqlite:///{tmp_path}/.flowplex/flowplex.db")
    assert store.get_flow(key).label == "cli_flow"
    store.close()


def test_bad_input(tmp_path: Path, db: str) -> None:
    result = runner.invoke(app, ["runs", "create", str(tmp_path / "missing.yaml"), "--db", db])
    assert result.exit_code == 2 and "no such file" in result.output
    empty = tmp_path / "empty.yaml"
    empty.write_text("\n")
    result = runner.invoke(app, ["runs", "create", str(empty), "--db", db])
    assert result.exit_code == 2 and "empty flow spec file" in result.output
    broken = tmp_path / "broken.json"
    broken.write_text("{nope")
    result = runner.invoke(app, ["runs", "create", str(broken), "--db", db])
    assert result.exit_code == 2 and "not valid JSON" in result.output
    cyclic = tmp_path / "cyclic.yaml"
    cyclic.write_text("tasks: [{key: a, task_type: noop, precursors: [a]}]\n")
    result = runner.invoke(app, ["runs", "create", str(cyclic), "--db", db])
    assert isinstance(result.exception, FlowSpecError)
    result = runner.invoke(app, ["runs", "ls", "--status", "SLEEPING", "--db", db])
    assert result.exit_code == 2 and "unknown status" in result.output
    result = runner.invoke(app, ["runs", "ls", "--db", "memory://"])
    assert result.exit_code == 2 and "outlives the command" in result.output
    key = create(tmp_path, db)
    invoke("runs", "tick", key, "--until-finished", "--db", db)
    result = runner.invoke(app, ["runs", "tick", key, "--db", db])
    assert isinstance(result.exception, EngineError)
    assert "already COMPLETED" in str(result.exception)


def test_errors_print_as_one_line_through_main(tmp_path: Path, db: str) -> None:
    create(tmp_path, db)
    out = subprocess.run(
        [sys.executable, "-m", "flowplex", "runs", "show", "flow:nope", "--db", db],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 1
    assert out.stderr.strip() == "error: no flow with key 'flow:nope'."


@pytest.mark.parametrize("command", [["ls"], ["show", "flow:nope"]])
def test_reading_runs_never_creates_a_database(tmp_path: Path, command: list[str]) -> None:
    # A mistyped --db used to leave an empty database behind, and list nothing as if all is well.
    missing = tmp_path / "typo.db"
    result = runner.invoke(app, ["runs", *command, "--db", f"sqlite:///{missing}"])
    assert isinstance(result.exception, ConfigurationError)
    assert f"no database at {missing}" in str(result.exception)
    assert not missing.exists()


def test_runner_runs_flows_and_stops_gracefully(tmp_path: Path, db: str) -> None:
    keys = [create(tmp_path, db) for _ in range(2)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS_DIR), *sys.path])}
    proc = subprocess.Popen(
        [sys.executable, "-m", "flowplex", "runner", "--db", db, "--interval", "0.05"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    store = FlowStore(db)
    try:
        deadline = time.monotonic() + DEADLINE
        while {store.get_flow(k).status for k in keys} != {"COMPLETED"}:
            assert time.monotonic() < deadline, "the runner did not finish the flows"
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=DEADLINE)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        store.close()
    assert proc.returncode == 0, stderr
    assert stdout.count("I am task_1.") == 2 and stdout.count("I am task_2.") == 2
    assert stderr.startswith("flowplex runner: <FlowStore sqlite:///")
    assert "ticked 2 flow(s): completed 2" in stderr
    assert stderr.rstrip().endswith("stopped: 2 completed, 0 failed, 0 lost claim(s)")


def test_call_tasks_use_a_client_of_the_same_node(tmp_path: Path) -> None:
    import flowplex
    from flowplex import serving
    from flowplex.workers import run_dispatch_worker_thread

    db = f"sqlite:///{tmp_path}/node.db"
    cl = flowplex.start_node(path=tmp_path / "node", db=db)
    try:
        serving.serve_flow(cl, "flowplex.examples.ReverseNumberAtomicFlow", "reverse_number")
        run_dispatch_worker_thread(cl)
        spec = {
            "tasks": [
                {
                    "key": "call",
                    "task_type": "call",
                    "task_params": {"flow_endpoint": "reverse_number", "data": {"number": 1234}},
                }
            ]
        }
        key = create(tmp_path, db, json.dumps(spec), "call.json")
        out = invoke(
            "runs", "tick", key, "--until-finished", "--interval", "0.01", "--json", "--db", db
        )
        flow = json.loads(out)
        assert flow["status"] == "COMPLETED"
        assert flow["graph"]["tasks"]["call"]["data"]["reply"] == {"output_number": 4321}
    finally:
        cl.node.close()


def test_a_single_tick_drops_the_reply_its_call_task_used(tmp_path: Path) -> None:
    # `runs tick KEY` (no --until-finished) ran a FlowRunner's engine, which holds used replies
    # until they are released, and never released them: each reply stayed in the node for ever.
    import flowplex
    from flowplex import serving
    from flowplex.workers import run_dispatch_worker_thread

    db = f"sqlite:///{tmp_path}/node.db"
    cl = flowplex.start_node(path=tmp_path / "node", db=db)
    try:
        serving.serve_flow(cl, "flowplex.examples.ReverseNumberAtomicFlow", "reverse_number")
        spec = {
            "tasks": [
                {
                    "key": "call",
                    "task_type": "call",
                    "task_params": {"flow_endpoint": "reverse_number", "data": {"number": 12}},
                }
            ]
        }
        key = create(tmp_path, db, json.dumps(spec), "call.json")
        assert "RUNNING" in invoke("runs", "tick", key, "--db", db)  # sent; no worker yet
        store = FlowStore(db)
        future_id = store.get_flow(key).tasks["call"]["data"]["call"]["future_id"]
        store.close()
        run_dispatch_worker_thread(cl)
        deadline = time.monotonic() + DEADLINE
        while cl.peek_reply(future_id) is None:
            assert time.monotonic() < deadline, "no reply from the worker"
            time.sleep(0.01)
        assert f"{key} COMPLETED" in invoke("runs", "tick", key, "--db", db)
        assert cl.peek_reply(future_id) is None
    finally:
        cl.node.close()
