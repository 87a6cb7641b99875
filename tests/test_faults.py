"""Fault injection on real processes (see ``faultkit``): killed workers, nodes and runners,
runs longer than their lease, a full disk, a read-only or deleted database file, processes
racing to start a fresh node. Every test asserts counts: every message answered exactly once,
every state equal to the messages it ran, nothing lost, nothing done twice.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import faultkit


def test_workers_killed_repeatedly_lose_nothing_and_do_nothing_twice(
    durable_db: str, tmp_path: Path
) -> None:
    outcome = faultkit.kill_workers(durable_db, tmp_path, kills=4, messages=80)
    assert (outcome.sent, outcome.lost, outcome.duplicated) == (80, 0, 0)


def test_a_worker_killed_mid_message_is_replaced_within_the_short_lease(
    durable_db: str, tmp_path: Path
) -> None:
    # The reply comes well inside the wait bound (PATIENCE), which the old one-minute lease
    # could not meet; the run commits once.
    outcome = faultkit.kill_worker_mid_message(durable_db, tmp_path)
    assert (outcome.sent, outcome.lost, outcome.duplicated) == (1, 0, 0)


def test_a_node_killed_with_messages_queued_answers_them_all_after_a_restart(
    durable_db: str, tmp_path: Path
) -> None:
    outcome = faultkit.kill_node_with_queue(durable_db, tmp_path, messages=80)
    assert (outcome.sent, outcome.lost, outcome.duplicated) == (80, 0, 0)


def test_runs_longer_than_their_lease_run_once(durable_db: str, tmp_path: Path) -> None:
    outcome = faultkit.long_runs(durable_db, tmp_path)
    assert (outcome.sent, outcome.lost, outcome.duplicated) == (4, 0, 0)
    assert outcome.notes["executions"] == 4


def test_a_runner_killed_after_every_task_still_completes_the_run(
    durable_db: str, tmp_path: Path
) -> None:
    outcome = faultkit.kill_runner(durable_db, tmp_path, kills=3, tasks=5)
    assert outcome.lost == 0
    # A kill may cut the task after the one that just finished: done again, once per kill.
    assert outcome.duplicated <= outcome.injected
    assert outcome.notes["executions"] <= 5 + 3


def test_first_start_by_racing_processes_makes_one_user(durable_db: str, tmp_path: Path) -> None:
    outcome = faultkit.first_start_race(durable_db, tmp_path, starters=6)
    assert outcome.notes["users stored"] == 1
    assert outcome.notes["users seen"] == 1


@pytest.fixture
def sqlite_db(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/node.db"


def test_a_full_disk_stops_the_worker_with_one_line_and_loses_nothing(
    sqlite_db: str, tmp_path: Path
) -> None:
    outcome = faultkit.disk_full(sqlite_db, tmp_path)
    assert outcome.notes["exit code"] == 1
    assert (outcome.notes["lines"], outcome.notes["traceback"]) == (1, False)
    assert "disk" in outcome.notes["error"]
    assert (outcome.sent, outcome.lost, outcome.duplicated) == (30, 0, 0)


def test_a_read_only_file_stops_the_worker_with_one_line_and_loses_nothing(
    sqlite_db: str, tmp_path: Path
) -> None:
    outcome = faultkit.read_only(sqlite_db, tmp_path)
    assert outcome.notes["exit code"] == 1
    assert (outcome.notes["lines"], outcome.notes["traceback"]) == (1, False)
    assert "read-only" in outcome.notes["error"]
    assert outcome.lost == 0 and outcome.duplicated == 0


def test_a_deleted_file_stops_the_worker_and_refuses_the_sender(
    sqlite_db: str, tmp_path: Path
) -> None:
    outcome = faultkit.deleted_file(sqlite_db, tmp_path)
    assert outcome.notes["exit code"] == 1
    assert (outcome.notes["lines"], outcome.notes["traceback"]) == (1, False)
    assert "deleted" in outcome.notes["error"]
    assert "deleted" in outcome.notes["sender"]
    # The ten answered before the delete; nothing sent after it was taken.
    assert (outcome.sent, outcome.lost) == (10, 0)


def test_flowplex_up_stops_with_one_error_line_when_its_database_file_is_deleted(
    tmp_path: Path,
) -> None:
    import subprocess
    import sys

    import httpx

    import flowplex
    from mesh_helpers import free_url, wait_until

    home = tmp_path / "home"
    db = f"sqlite:///{home}/flowplex.db"
    flowplex.start_node(path=home, db=db).node.close()
    url = free_url()
    command = [sys.executable, "-m", "flowplex", "up", "--url", url, "--home", str(home)]
    up = subprocess.Popen(
        [*command, "--db", db], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        wait_until(lambda: httpx.get(url + "/flows").status_code == 200, what="flowplex up")
        for suffix in ("", "-wal", "-shm"):
            Path(f"{home}/flowplex.db{suffix}").unlink(missing_ok=True)
        out, _ = up.communicate(timeout=60)
    finally:
        if up.poll() is None:
            up.kill()
            up.communicate()
    assert up.returncode == 1, out
    errors = [line for line in out.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "deleted" in errors[0], out
    assert "Traceback" not in out
