"""Peers: other ways to do flowplex's round trip, measured in the same run as flowplex.

Every peer does the same thing as the flowplex scenarios: a request carrying
``{"number": 1234}`` goes to a handler that reverses the number, and the reply comes back to
the caller. Each is measured sequentially (p50 of one round trip at a time) and with 8
requests in flight (replies per second), like flowplex.

- "sqlite WAL queue": the simplest honest durable queue on SQLite, with flowplex's settings
  (WAL, ``synchronous=NORMAL``): the caller inserts a request row; one worker thread takes the
  oldest request, deletes it and writes the reply in one transaction; the caller takes the
  reply row. Wake-ups go through an in-process condition (as flowplex's in-process workers'
  do), with a one-second poll as the fallback.
- "postgres SKIP LOCKED queue": the same on PostgreSQL with psycopg, the worker claiming with
  ``DELETE ... WHERE id = (SELECT ... FOR UPDATE SKIP LOCKED LIMIT 1) RETURNING`` and writing
  the reply in the same transaction; one worker thread, same wake-ups; in a scratch schema.
- "ray actor": a call to a method of a Ray actor (``ray.get(actor.reverse.remote(data))``), on
  a local Ray started for the run (when ``ray`` is installed: the ``bench`` extra).
- "celery+redis": a Celery task with the Redis broker and result backend
  (FLOWPLEX_BENCH_REDIS_URL, default ``redis://127.0.0.1:6379/0``), run by a Celery worker
  (solo pool) started as a subprocess for the run, on a queue of its own (when ``celery`` and
  ``redis`` are installed: the ``bench`` extra, and Redis answers).

A peer that cannot run is reported as skipped with the reason, never estimated.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from _common import NO_POSTGRES, Result, measure, pipelined, postgres_url, scratch, skipped

#: label -> what it is a floor for (the flowplex backend it is compared to in the targets).
PEERS = {
    "sqlite WAL queue": "a durable queue on SQLite",
    "postgres SKIP LOCKED queue": "a durable queue on PostgreSQL",
    "ray actor": "an actor call to another process",
    "celery+redis": "a task queue with a worker process",
}

IN_FLIGHT = 8


def reverse(data: dict[str, Any]) -> dict[str, Any]:
    """The handler every peer runs: the ReverseNumber flow's work."""
    return {"output_number": int(str(data["number"])[::-1])}


def scenario(peer: str, shape: str) -> str:
    """The result name of ``peer``'s ``shape`` ("sequential" or "8 in flight")."""
    return f"peer {peer}: {shape}"


class _Wakeups:
    """A generation counter under a condition: waiters sleep until it moves (no lost wake-up:
    a waiter reads the generation before it looks at the database)."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.generation = 0

    def bump(self) -> None:
        with self.cond:
            self.generation += 1
            self.cond.notify_all()

    def wait_past(self, generation: int, timeout: float = 1.0) -> None:
        with self.cond:
            if self.generation == generation:
                self.cond.wait(timeout)


class _Queue:
    """A request/reply queue on a database: one worker thread, callers in the main thread.

    Subclasses open ``caller`` and ``worker`` (connections whose ``execute`` returns a cursor),
    name the driver's parameter ``mark``, and give :meth:`_serve_one`: the worker's
    transaction, taking the oldest request and writing its reply (False if there was none).
    """

    caller: Any
    worker: Any
    mark = "?"

    def __init__(self) -> None:
        mark = self.mark
        self.sql_insert = f"INSERT INTO requests (body) VALUES ({mark}) RETURNING id"
        self.sql_take = f"DELETE FROM replies WHERE id = {mark} RETURNING body"
        self.sql_reply = f"INSERT INTO replies (id, body) VALUES ({mark}, {mark})"
        self.requests = _Wakeups()
        self.replies = _Wakeups()
        self.closing = False
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._work, daemon=True)

    def start(self) -> None:
        self.thread.start()

    def _work(self) -> None:
        try:
            while not self.closing:
                generation = self.requests.generation
                if self._serve_one():
                    self.replies.bump()
                else:
                    self.requests.wait_past(generation)
        except BaseException as exc:  # reported by the caller's next wait
            self.error = exc
            self.replies.bump()

    def send(self, number: int) -> Callable[[], dict[str, Any]]:
        request_id = self._insert(json.dumps({"number": number}))
        self.requests.bump()

        def wait() -> dict[str, Any]:
            deadline = time.monotonic() + 30
            while True:
                generation = self.replies.generation
                body = self._take(request_id)
                if body is not None:
                    return json.loads(body)
                if self.error is not None:
                    raise RuntimeError("the peer's worker failed") from self.error
                if time.monotonic() > deadline:
                    raise TimeoutError(f"no reply for request {request_id}")
                self.replies.wait_past(generation)

        return wait

    def close(self) -> None:
        self.closing = True
        self.requests.bump()
        self.thread.join(timeout=30)
        self.worker.close()
        self.caller.close()

    def _insert(self, body: str) -> int:
        row = self.caller.execute(self.sql_insert, (body,)).fetchone()
        return int(row[0])

    def _serve_one(self) -> bool:
        raise NotImplementedError

    def _take(self, request_id: int) -> str | None:
        row = self.caller.execute(self.sql_take, (request_id,)).fetchone()
        return None if row is None else str(row[0])

    def _reply(self, conn: Any, row: Any) -> None:
        """Write the reply to the request ``row`` (id, body), in the worker's transaction."""
        reply = json.dumps(reverse(json.loads(row[1])))
        conn.execute(self.sql_reply, (row[0], reply))


class SqliteQueue(_Queue):
    """The naive SQLite WAL queue (see the module docstring)."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.caller = self._connect(path)
        self.caller.executescript(
            "CREATE TABLE requests (id INTEGER PRIMARY KEY AUTOINCREMENT, body TEXT NOT NULL);"
            "CREATE TABLE replies (id INTEGER PRIMARY KEY, body TEXT NOT NULL);"
        )
        self.worker = self._connect(path)
        self.start()

    @staticmethod
    def _connect(path: Path) -> sqlite3.Connection:
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
        return conn

    def _serve_one(self) -> bool:
        conn = self.worker
        conn.execute("BEGIN IMMEDIATE")
        try:
            row = conn.execute(
                "DELETE FROM requests WHERE id = (SELECT min(id) FROM requests) RETURNING id, body"
            ).fetchone()
            if row is not None:
                self._reply(conn, row)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return row is not None


class PostgresQueue(_Queue):
    """The naive PostgreSQL ``FOR UPDATE SKIP LOCKED`` queue (see the module docstring)."""

    mark = "%s"

    def __init__(self, url: str) -> None:
        import psycopg

        super().__init__()
        self.caller = psycopg.connect(url, autocommit=True)
        self.caller.execute(
            "CREATE TABLE requests (id bigserial PRIMARY KEY, body text NOT NULL);"
            "CREATE TABLE replies (id bigint PRIMARY KEY, body text NOT NULL)"
        )
        self.worker = psycopg.connect(url)
        self.start()

    def _serve_one(self) -> bool:
        conn = self.worker
        with conn.transaction():
            row = conn.execute(
                "DELETE FROM requests WHERE id = (SELECT id FROM requests ORDER BY id "
                "FOR UPDATE SKIP LOCKED LIMIT 1) RETURNING id, body"
            ).fetchone()
            if row is not None:
                self._reply(conn, row)
        return row is not None


@contextlib.contextmanager
def _sqlite_peer(tmp: Path) -> Iterator[Callable[[int], Callable[[], Any]]]:
    queue = SqliteQueue(tmp / "peer-queue.db")
    try:
        yield queue.send
    finally:
        queue.close()


@contextlib.contextmanager
def _postgres_peer(url: str) -> Iterator[Callable[[int], Callable[[], Any]]]:
    with scratch(url) as scoped:
        queue = PostgresQueue(scoped)
        try:
            yield queue.send
        finally:
            queue.close()


@contextlib.contextmanager
def _ray_peer(tmp: Path) -> Iterator[Callable[[int], Callable[[], Any]]]:
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray

    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        configure_logging=False,
        _temp_dir=str(tmp / "ray"),
    )
    try:
        # Defined here, so that Ray ships it by value: its workers do not import bench/.
        class Reverser:
            def reverse(self, data: dict[str, Any]) -> dict[str, Any]:
                return {"output_number": int(str(data["number"])[::-1])}

        actor = ray.remote(Reverser).remote()

        def send(number: int) -> Callable[[], Any]:
            ref = actor.reverse.remote({"number": number})
            return lambda: ray.get(ref, timeout=30)

        send(1)()  # the actor's process is up before anything is timed
        yield send
    finally:
        ray.shutdown()


def redis_url() -> str:
    """The Redis the Celery peer uses: FLOWPLEX_BENCH_REDIS_URL or the local default."""
    return os.environ.get("FLOWPLEX_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")


@contextlib.contextmanager
def _celery_peer(tmp: Path) -> Iterator[Callable[[int], Callable[[], Any]]]:
    import redis

    redis.Redis.from_url(redis_url(), socket_connect_timeout=2).ping()
    queue = f"flowplex-bench-{uuid.uuid4().hex[:8]}"
    env = {
        **os.environ,
        "FLOWPLEX_BENCH_REDIS_URL": redis_url(),
        "FLOWPLEX_BENCH_CELERY_QUEUE": queue,
    }
    os.environ["FLOWPLEX_BENCH_CELERY_QUEUE"] = queue
    import _celery_app

    _celery_app.app.conf.task_default_queue = queue
    log = (tmp / "celery-worker.log").open("w")
    proc = subprocess.Popen(
        [
            sys.executable,
            *("-m", "celery", "-A", "_celery_app", "worker", "--pool=solo", "-Q", queue),
            *("--loglevel=WARNING", "--without-gossip", "--without-mingle", "--without-heartbeat"),
        ],
        cwd=Path(__file__).parent,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:

        def send(number: int) -> Callable[[], Any]:
            result = _celery_app.reverse.delay({"number": number})
            return lambda: result.get(timeout=30)

        try:
            send(1)()  # the worker is up and consuming before anything is timed
        except Exception as exc:
            log.flush()
            raise RuntimeError(f"the Celery worker did not answer (log: {log.name})") from exc
        yield send
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        with contextlib.suppress(Exception):
            redis.Redis.from_url(redis_url()).delete(queue)


def _installed(*modules: str) -> str | None:
    """None if every module can be imported, else the skip reason."""
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        return f"skipped (not installed: {', '.join(missing)}; pip install -e '.[bench]')"
    return None


def _opener(
    label: str, tmp: Path
) -> tuple[
    contextlib.AbstractContextManager[Callable[[int], Callable[[], Any]]] | None, str | None
]:
    """The peer's context (yielding its ``send``), or None and why it is skipped."""
    if label == "sqlite WAL queue":
        return _sqlite_peer(tmp), None
    if label == "postgres SKIP LOCKED queue":
        url = postgres_url()
        if not url:
            return None, NO_POSTGRES
        why = _installed("psycopg")
        return (None, why) if why else (_postgres_peer(url), None)
    if label == "ray actor":
        why = _installed("ray")
        return (None, why) if why else (_ray_peer(tmp), None)
    why = _installed("celery", "redis")
    return (None, why) if why else (_celery_peer(tmp), None)


def run(quick: bool, only: str, tmp: Path) -> list[Result]:
    """Measure every peer whose scenario names contain ``only`` (all when empty)."""
    results = []
    for label in PEERS:
        names = [scenario(label, "sequential"), scenario(label, f"{IN_FLIGHT} in flight")]
        if only and not any(only in name for name in names):
            continue
        context, why = _opener(label, tmp)
        if context is None:
            results.extend(skipped(name, why or "skipped", "peers") for name in names)
            continue
        print(f"... peer {label}", file=sys.stderr)
        # The slow peers (about a millisecond a call or more) get fewer calls.
        fast = label.startswith("sqlite")
        n = (1_000 if quick else 10_000) if fast else (300 if quick else 2_000)
        try:
            with context as send:
                seq = measure(names[0], lambda send=send: send(1234)(), n, warmup=max(n // 20, 5))
                flight = pipelined(names[1], send, n, IN_FLIGHT, warmup=max(n // 20, 8))
        except Exception as exc:  # a peer that fails to start is reported, not faked
            reason = f"skipped (failed: {type(exc).__name__}: {exc})"
            results.extend(skipped(name, reason, "peers") for name in names)
            continue
        for result in (seq, flight):
            result.group = "peers"
            result.extra["peer"] = label
        results.extend([seq, flight])
    return results
