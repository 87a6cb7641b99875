"""Fault injection on real processes: the scenarios of ``test_faults.py`` and ``fault_report.py``.

Each scenario starts ``flowplex worker`` / ``flowplex runner`` processes (or ``python -c``
scripts) on a real database, injects its fault (SIGKILL, a size limit on files, a read-only or
deleted database file), lets the system recover, and returns an :class:`Outcome`: what was
sent, what was lost or done twice, how long recovery took. The tests assert the counts; the
report prints them.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import flowplex
from flowplex import FlowFuture, serving
from waiting import wait_for

TESTS_DIR = Path(__file__).parent

#: The longest any scenario waits for one thing; a bug fails it instead of hanging it.
PATIENCE = 40.0


@dataclass
class Outcome:
    """What a scenario measured."""

    fault: str
    injected: int
    sent: int
    lost: int
    duplicated: int
    #: The longest time from an injected fault to the system doing its work again.
    recovery: float
    notes: dict[str, Any] = field(default_factory=dict)


def env() -> dict[str, str]:
    """The environment of the child processes: the test modules importable."""
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(TESTS_DIR), os.environ.get("PYTHONPATH", "")]),
    }


class Processes:
    """Child processes started by a scenario; all of them killed at the end."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.started: list[subprocess.Popen[bytes]] = []

    def start(self, *args: str, before: str = "") -> subprocess.Popen[bytes]:
        """``python -m flowplex <args>``, after the Python statements ``before`` (run in the
        child before flowplex starts: set a limit, ignore a signal)."""
        log = self.logs / f"proc-{len(self.started)}.log"
        code = f"{before}\nimport sys, runpy\nsys.argv = ['flowplex', *sys.argv[1:]]\n"
        code += "runpy.run_module('flowplex', run_name='__main__')"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-c", code, *args],
                env=env(),
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        proc.log = log  # type: ignore[attr-defined]
        self.started.append(proc)
        return proc

    def worker(self, db: str, *args: str, before: str = "") -> subprocess.Popen[bytes]:
        return self.start("worker", "--db", db, "--path", str(TESTS_DIR), *args, before=before)

    def kill_all(self) -> None:
        for proc in self.started:
            if proc.poll() is None:
                proc.kill()
            proc.wait(10)


@contextmanager
def processes(logs: Path) -> Iterator[Processes]:
    procs = Processes(logs)
    try:
        yield procs
    finally:
        procs.kill_all()


def wait_until(check: Callable[[], Any], what: str, timeout: float = PATIENCE) -> Any:
    """:func:`waiting.wait_for` with the fault suite's patience."""
    return wait_for(check, what, timeout)


def output(proc: subprocess.Popen[bytes]) -> str:
    return Path(proc.log).read_text(errors="replace")  # type: ignore[attr-defined]


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


# -- counting replies -----------------------------------------------------------------------------


def _messages(
    cl: flowplex.Client, proxies: list[Any], count: int, **data: Any
) -> list[tuple[str, str]]:
    """Send ``count`` messages round-robin to ``proxies``; their (flow id, future id)."""
    sent = []
    for i in range(count):
        proxy = proxies[i % len(proxies)]
        future = proxy.get_reply_future(proxy.package_input_message({"i": i, **data}))
        sent.append((proxy.get_instance_id(), future.future_id))
    return sent


def _answered(cl: flowplex.Client, sent: list[tuple[str, str]]) -> int:
    peek = cl.node.backend.peek_reply
    return sum(peek(future_id) is not None for _, future_id in sent)


def _tally(cl: flowplex.Client, sent: list[tuple[str, str]]) -> tuple[int, int]:
    """(lost, duplicated): messages never answered, and runs committed more than once (each
    instance's count must equal the messages sent to it, and the replies' counts must be
    exactly 1..n per instance)."""
    lost = 0
    seen: dict[str, list[int]] = {}
    for flow_id, future_id in sent:
        try:
            data = FlowFuture(future_id, cl).get_data(timeout=0.5)
        except flowplex.FlowTimeoutError:
            lost += 1
            continue
        seen.setdefault(flow_id, []).append(data["count"])
    duplicated = 0
    for flow_id in {f for f, _ in sent}:
        expected = sum(f == flow_id for f, _ in sent)
        state = serving.get_flow_state(cl, flow_id)["count"]
        duplicated += max(0, state - expected)
        counts = sorted(seen.get(flow_id, []))
        duplicated += len(counts) - len(set(counts))
    return lost, duplicated


def _node(db: str, home: Path, instances: int) -> tuple[flowplex.Client, list[Any]]:
    cl = flowplex.start_node(path=home, db=db)
    serving.serve_flow(cl, "faultflows.SlowFlow", "slow")
    return cl, [serving.get_flow_instance(cl, "slow") for _ in range(instances)]


# -- scenarios ----------------------------------------------------------------------------------


def kill_workers(db: str, home: Path, kills: int = 6, messages: int = 120) -> Outcome:
    """SIGKILL the worker process ``kills`` times while messages flow (a new one started at
    once each time, on the default lease)."""
    cl, proxies = _node(db, home, instances=4)
    try:
        sent = _messages(cl, proxies, messages, seconds=0.02)
        recoveries = []
        with processes(home) as procs:
            worker = procs.worker(db)
            for k in range(kills):
                goal = (k + 1) * messages // (kills + 2)
                wait_until(lambda g=goal: _answered(cl, sent) >= g, f"{goal} replies")
                worker.send_signal(signal.SIGKILL)
                worker.wait(10)
                killed_at, before = time.monotonic(), _answered(cl, sent)
                worker = procs.worker(db)
                wait_until(lambda b=before: _answered(cl, sent) > b, "progress after a kill")
                recoveries.append(time.monotonic() - killed_at)
            wait_until(lambda: _answered(cl, sent) == messages, "every reply")
        lost, duplicated = _tally(cl, sent)
        return Outcome(
            "worker SIGKILL, repeated", kills, messages, lost, duplicated, max(recoveries)
        )
    finally:
        cl.node.close()


def kill_worker_mid_message(db: str, home: Path) -> Outcome:
    """SIGKILL the worker while it runs a long message; another worker (default lease) must
    run it again within seconds, and the message completes once."""
    cl, proxies = _node(db, home, instances=1)
    started = home / "started.log"
    try:
        sent = _messages(cl, proxies, 1, seconds=1.0, started=str(started))
        with processes(home) as procs:
            first = procs.worker(db)
            wait_until(lambda: _lines(started), "the run to start")
            first.send_signal(signal.SIGKILL)
            first.wait(10)
            killed_at = time.monotonic()
            procs.worker(db)
            wait_until(lambda: _answered(cl, sent) == 1, "the reply")
            recovery = time.monotonic() - killed_at
        lost, duplicated = _tally(cl, sent)
        return Outcome("worker SIGKILL mid-message", 1, 1, lost, duplicated, recovery)
    finally:
        cl.node.close()


def kill_node_with_queue(db: str, home: Path, messages: int = 100) -> Outcome:
    """Queue messages, start the node's worker process (two threads), SIGKILL it part-way,
    restart it: every message is answered once."""
    cl, proxies = _node(db, home, instances=4)
    try:
        sent = _messages(cl, proxies, messages, seconds=0.01)
        with processes(home) as procs:
            node = procs.worker(db, "--concurrency", "2")
            wait_until(lambda: _answered(cl, sent) >= messages // 3, "a third of the replies")
            node.send_signal(signal.SIGKILL)
            node.wait(10)
            killed_at, before = time.monotonic(), _answered(cl, sent)
            procs.worker(db, "--concurrency", "2")
            wait_until(lambda: _answered(cl, sent) > before, "progress after the restart")
            recovery = time.monotonic() - killed_at
            wait_until(lambda: _answered(cl, sent) == messages, "every reply")
        lost, duplicated = _tally(cl, sent)
        return Outcome("node SIGKILL + restart", 1, messages, lost, duplicated, recovery)
    finally:
        cl.node.close()


def long_runs(db: str, home: Path) -> Outcome:
    """Runs three times their lease, on two worker processes: each runs exactly once."""
    cl, proxies = _node(db, home, instances=4)
    log = home / "runs.log"
    try:
        sent = _messages(cl, proxies, 4, seconds=1.5, log=str(log))
        with processes(home) as procs:
            for _ in range(2):
                procs.worker(db, "--lease", "0.5")
            wait_until(lambda: _answered(cl, sent) == 4, "every reply")
        lost, duplicated = _tally(cl, sent)
        runs = len(_lines(log))
        return Outcome(
            "runs 3x longer than the lease",
            4,
            4,
            lost,
            duplicated + max(0, runs - 4),
            0.0,
            {"executions": runs},
        )
    finally:
        cl.node.close()


def kill_runner(db: str, home: Path, kills: int = 4, tasks: int = 6) -> Outcome:
    """SIGKILL the task-graph runner each time a task finishes, ``kills`` times: the run
    still completes, each task done once plus at most one redo per kill."""
    from flowplex.engine import FlowStore, TaskFlow

    log = home / "tasks.log"
    store = FlowStore(db)
    store.ensure_tables()
    spec = {
        "tasks": [
            {
                "key": f"t{i}",
                "task_type": "python",
                "task_params": {"fn": "faultflows.nap", "args": [0.4, str(log), f"t{i}"]},
                "precursors": [f"t{i - 1}"] if i else [],
            }
            for i in range(tasks)
        ]
    }
    key = store.create_flow(TaskFlow.from_flow_spec(spec))
    recoveries = []
    try:
        with processes(home) as procs:
            args = ("runner", "--db", db, "--lease", "1", "--interval", "0.05")
            runner = procs.start(*args, "--path", str(TESTS_DIR))
            for k in range(kills):
                wait_until(lambda k=k: len(_lines(log)) > k, f"task {k} to finish")
                runner.send_signal(signal.SIGKILL)
                runner.wait(10)
                killed_at, done = time.monotonic(), len(_lines(log))
                runner = procs.start(*args, "--path", str(TESTS_DIR))
                wait_until(lambda d=done: len(_lines(log)) > d, "a task after the kill")
                recoveries.append(time.monotonic() - killed_at)
            wait_until(lambda: store.get_flow(key).status == "COMPLETED", "the run to complete")
        runs = _lines(log)
        names = {line.split()[0] for line in runs}
        return Outcome(
            "runner SIGKILL, repeated",
            kills,
            tasks,
            tasks - len(names),
            len(runs) - len(names),
            max(recoveries),
            {"executions": len(runs)},
        )
    finally:
        store.close()


def _stopped_worker(
    db: str,
    home: Path,
    fault: str,
    inject: Callable[[], None],
    *,
    before: str = "",
    repair: Callable[[], None] | None = None,
    **data: Any,
) -> Outcome:
    """Messages flow to a worker process; ``inject`` makes the database unwritable: the worker
    must exit with one error line and a non-zero code. Messages sent after it are refused (the
    sender cannot write either) or stay queued; with ``repair``, a worker started after it
    answers every one of them once."""
    cl, proxies = _node(db, home, instances=2)
    try:
        sent = _messages(cl, proxies, 10)
        with processes(home) as procs:
            worker = procs.worker(db, before=before)
            wait_until(lambda: _answered(cl, sent) == 10, "the first replies")
            inject_at = time.monotonic()
            inject()
            refused = ""
            try:
                sent += _messages(cl, proxies, 20, **data)
            except flowplex.BackendError as exc:
                refused = str(exc)
            wait_until(lambda: worker.poll() is not None, "the worker to exit")
            detected = time.monotonic() - inject_at
            notes = _exit_notes(worker)
            if refused:
                notes["sender"] = refused
            if repair is not None:
                repair()
                procs.worker(db)
                wait_until(lambda: _answered(cl, sent) == len(sent), "every reply after repair")
        if repair is not None:
            lost, duplicated = _tally(cl, sent)
        else:
            lost, duplicated = len(sent) - _answered(cl, sent), 0
        return Outcome(fault, 1, len(sent), lost, duplicated, detected, notes)
    finally:
        cl.node.close()


def _exit_notes(worker: subprocess.Popen[bytes]) -> dict[str, Any]:
    """How a worker process ended: its exit code, its error line, how many lines of output
    it printed after its start-up line (one is right: the error), and any traceback."""
    lines = output(worker).splitlines()
    errors = [line for line in lines if line.startswith("error:")]
    return {
        "exit code": worker.returncode,
        "error": errors[-1] if errors else "",
        "lines": len(lines) - 1,
        "traceback": any("Traceback" in line for line in lines),
    }


def disk_full(db: str, home: Path) -> Outcome:
    """The worker's files may not grow past 1 MB (RLIMIT_FSIZE: its writes fail with EFBIG,
    as on a full disk) while large messages arrive; then a worker without the limit answers
    everything."""
    limit = "import resource, signal\nsignal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
    limit += "resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, resource.RLIM_INFINITY))"
    return _stopped_worker(
        db,
        home,
        "disk full (RLIMIT_FSIZE)",
        lambda: None,
        before=limit,
        repair=lambda: None,
        pad="x" * 300_000,
    )


def read_only(db: str, home: Path) -> Outcome:
    """A worker starts on a read-only database file (immutable, for root) holding queued
    messages: it exits with one error line; made writable again, a new worker answers every
    message once."""
    path = Path(db.removeprefix("sqlite:///"))
    cl, proxies = _node(db, home, instances=2)
    try:
        sent = _messages(cl, proxies, 20)
        cl.node.close()
        _make_read_only(path, True)
        with processes(home) as procs:
            started = time.monotonic()
            worker = procs.worker(db)
            wait_until(lambda: worker.poll() is not None, "the worker to exit")
            detected = time.monotonic() - started
            notes = _exit_notes(worker)
            _make_read_only(path, False)
            cl = flowplex.start_node(path=home, db=db)
            procs.worker(db)
            wait_until(lambda: _answered(cl, sent) == len(sent), "every reply after repair")
        lost, duplicated = _tally(cl, sent)
        return Outcome("read-only database file", 1, len(sent), lost, duplicated, detected, notes)
    finally:
        _make_read_only(path, False)
        cl.node.close()


def _make_read_only(path: Path, on: bool) -> None:
    # Not the -shm file: SQLite maps it into memory, and a write to a page of an immutable
    # mapped file kills the process (SIGBUS) instead of failing.
    files = [p for p in (path, Path(f"{path}-wal")) if p.exists()]
    if os.geteuid() == 0:  # root writes through file modes: make the files immutable
        for p in files:
            subprocess.run(["chattr", "+i" if on else "-i", str(p)], check=True)
    else:
        for p in files:
            p.chmod(0o444 if on else 0o644)


def deleted_file(db: str, home: Path) -> Outcome:
    """The database file is deleted under a running worker and its sender."""
    path = Path(db.removeprefix("sqlite:///"))

    def inject() -> None:
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)

    return _stopped_worker(db, home, "database file deleted", inject)


def first_start_race(db: str, home: Path, starters: int = 4) -> Outcome:
    """Processes start a node (one home, one fresh database) at once: exactly one default
    user between them."""
    code = (
        "import sys, time, flowplex\n"
        "while time.time() < float(sys.argv[1]): time.sleep(0.001)\n"
        "print(flowplex.start_node(path=sys.argv[2], db=sys.argv[3]).get_user_id())\n"
    )
    go = str(time.time() + 1.5)
    children = [
        subprocess.Popen(
            [sys.executable, "-c", code, go, str(home / "racing"), db],
            env=env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for i in range(starters)
    ]
    users = set()
    for child in children:
        out, _ = child.communicate(timeout=PATIENCE)
        assert child.returncode == 0, out
        users.add(out.strip().splitlines()[-1])
    cl = flowplex.start_node(path=home / "racing", db=db)
    try:
        stored = len(cl.node.backend.list_users())
    finally:
        cl.node.close()
    return Outcome(
        "first start, processes racing",
        starters,
        starters,
        0,
        stored - 1,
        0.0,
        {"users seen": len(users), "users stored": stored},
    )
