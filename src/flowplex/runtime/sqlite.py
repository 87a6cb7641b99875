"""``SQLiteBackend``: the embedded default, one database file shared by any number of processes.

The hot path (enqueue, claim, complete, take_reply) runs plain SQL on the stdlib ``sqlite3``
driver: no ORM, no per-call schema checks, at most one short write transaction per call (a
claim reads the leased messages' instances just after it commits). Connections come from a
small pool, opened by :func:`flowplex.db.connect_sqlite` (transactions explicit, WAL,
``synchronous=NORMAL``, the busy timeout). Write transactions start with
``BEGIN IMMEDIATE``, so they take the write lock first and never fail half-way on a lock. Inside
one process they also queue on a lock of their own: SQLite's busy handler retries by sleeping
for milliseconds, a Python lock hands over in microseconds.

Wake-ups. Commits made by this process notify its waiters at once (a condition variable).
Other processes' commits reach them through a doorbell (:mod:`._doorbell`: a Unix datagram
socket per waiting process, rung after each commit that queues a message or stores a reply),
within tens of microseconds. Underneath, waiters also poll: every ``EXTERNAL_POLL_SECONDS``
(20 ms; 250 ms while the doorbell works) one of them reads ``PRAGMA data_version`` (a counter
SQLite bumps when another connection commits), and if it moved every waiter returns so its
caller claims or takes its reply again. So a lost ring, or a system without the doorbell, costs
latency, never a message.

Checkpoints. SQLite copies the WAL back into the database file (with two disk flushes) inside
whichever commit finds the WAL grown past its threshold: a stall of milliseconds for that one
caller, and a quarter of the mean cost of a round trip on a small machine. Here a thread of the
backend checkpoints instead (``PASSIVE``: it never blocks a writer) every
:data:`CHECKPOINT_EVERY` write transactions of this process, and commits only do it themselves
past a threshold ten times higher, should that thread fall behind.
"""

from __future__ import annotations

import functools
import logging
import os
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .._clock import SYSTEM_CLOCK, Clock
from ..db import DatabaseURL, connect_sqlite, translate_error
from ..errors import (
    ConfigurationError,
    DuplicateKeyError,
    FlowplexError,
    StorageUnwritableError,
)
from ._backend import (
    RECEIVED_KEEP,
    RECEIVED_PRUNE_EVERY,
    Delivery,
    Envelope,
    InstanceRecord,
    ReplyRecord,
)
from ._doorbell import Doorbell
from ._signals import Signals
from ._sql import (
    INSTANCE_COLUMNS,
    Call,
    ClaimedRow,
    Outcome,
    SQLBackend,
    instance_from_row,
    instance_params,
)

__all__ = ["DOORBELL_POLL_SECONDS", "EXTERNAL_POLL_SECONDS", "SQLiteBackend"]

#: How often waiters look for commits made by other processes (without a doorbell).
EXTERNAL_POLL_SECONDS = 0.02
#: The same, as a safety net, while the doorbell rings.
DOORBELL_POLL_SECONDS = 0.25

_IDLE_CONNECTIONS = 8

logger = logging.getLogger("flowplex.node")
#: Write transactions of this process between two checkpoints by its checkpoint thread.
CHECKPOINT_EVERY = 200
#: WAL pages past which a commit checkpoints itself (SQLite's default: 1,000), should the
#: checkpoint thread fall behind.
_COMMIT_CHECKPOINT_PAGES = 10_000

_ENDPOINT_INSTANCES = (
    "SELECT flow_id FROM instances WHERE user_id = ? AND endpoint = ? ORDER BY created_at, rowid"
)
_DELETE_ENDPOINT_INSTANCES = "DELETE FROM instances WHERE user_id = ? AND endpoint = ?"
_DELETE_ENDPOINT = "DELETE FROM endpoints WHERE user_id = ? AND endpoint = ?"

_ADD_INSTANCE = f"INSERT INTO instances ({INSTANCE_COLUMNS}) VALUES ({', '.join('?' * 12)})"

# One statement per envelope: no row when the instance does not exist. A message is a head
# (claimable in turn) if its instance is parallel or has nothing else queued.
_ENQUEUE = """
INSERT INTO messages
    (flow_id, body, dispatch_point, user_id, parallel, head, deliveries, lease, lease_until)
SELECT flow_id, ?, dispatch_point, user_id, parallel_dispatch,
    parallel_dispatch OR NOT EXISTS (SELECT 1 FROM messages AS m WHERE m.flow_id = ?),
    0, NULL, 0
FROM instances WHERE flow_id = ?
RETURNING dispatch_point
"""
_RECEIVE = "INSERT OR IGNORE INTO received (key, received_at) VALUES (?, ?)"
_PRUNE_RECEIVED = "DELETE FROM received WHERE received_at < ?"

_PUT_REPLY = """
INSERT INTO replies (future_id, body, created_at) VALUES (?, ?, ?)
ON CONFLICT (future_id) DO NOTHING
"""
_CLAIMABLE = "m.dispatch_point = ? AND m.head = 1 AND m.lease_until <= ?"
_PEEK = f"SELECT 1 FROM messages AS m WHERE {_CLAIMABLE} LIMIT 1"
_PEEK_USER = f"SELECT 1 FROM messages AS m WHERE {_CLAIMABLE} AND m.user_id = ? LIMIT 1"
# One statement, so a transaction by itself. RETURNING gives the rows in no set order.
_CLAIM = f"""
UPDATE messages SET lease = ?, lease_until = ?, deliveries = deliveries + 1
WHERE seq IN (
    SELECT m.seq FROM messages AS m WHERE {_CLAIMABLE} {{user}} ORDER BY m.seq LIMIT ?
)
RETURNING seq, flow_id, body, deliveries
"""
_CLAIM_ANY = _CLAIM.format(user="")
_CLAIM_USER = _CLAIM.format(user="AND m.user_id = ?")
# Completion: the message goes only while the lease is still the caller's. With it, the
# instance's next message (its seq, or NULL), which a one-at-a-time instance promotes to head:
# mostly there is none, and the complete runs no statement for it.
_ACK = """
DELETE FROM messages WHERE seq = ? AND lease = ?
RETURNING parallel, (
    SELECT min(m.seq) FROM messages AS m WHERE m.flow_id = messages.flow_id AND m.seq > ?
)
"""
_PROMOTE = "UPDATE messages SET head = 1 WHERE seq = ? RETURNING dispatch_point"
_EXTEND = "UPDATE messages SET lease_until = ? WHERE seq = ? AND lease = ?"
_RELEASE = """
UPDATE messages SET lease = NULL, lease_until = 0, deliveries = max(0, deliveries - 1)
WHERE seq = ? AND lease = ?
RETURNING dispatch_point
"""


class SQLiteBackend(SQLBackend):
    """A :class:`~flowplex.runtime.Backend` on a SQLite file; see the module doc.

    ``url`` is ``sqlite:///relative/path.db`` or ``sqlite:////absolute/path.db``; missing
    parent directories are created and the schema is migrated on open. Lease deadlines and
    creation times are read from ``clock`` (the system clock by default).
    """

    def __init__(self, url: str | DatabaseURL, *, clock: Clock | None = None) -> None:
        db = DatabaseURL.parse(url)
        if db.kind != "sqlite" or db.path is None:
            raise ConfigurationError(f"SQLiteBackend needs a sqlite:/// file URL, got {db}")
        self.url = db.text
        self.path = db.path
        self.clock = clock or SYSTEM_CLOCK
        self._db = db
        self._where = f"the database at {db}"
        self._pool: deque[sqlite3.Connection] = deque()
        self._pool_lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._signals = Signals()
        self._log_writes = {}
        # (dispatch point, user) pairs whose queue the last claim may have emptied: the next
        # claim there looks first, unless a commit queued messages there since. Only a hint,
        # updated without a lock: a lost update costs one needless look, or one needless write.
        self._idle: set[tuple[str, str | None]] = set()
        self._closed = False
        self._writes = 0
        self._checkpoint_due = threading.Event()
        self._checkpointer: threading.Thread | None = None
        conn = self._connect()
        try:
            self._migrate_unless_current(conn, db)
            # Baseline for noticing other processes' commits (see the module doc).
            self._watch = self._connect()
        except BaseException:
            conn.close()
            raise
        try:
            self._data_version = self._watch.execute("PRAGMA data_version").fetchone()[0]
        except sqlite3.Error as exc:
            conn.close()
            self._watch.close()
            raise translate_error(exc, self._where) from exc
        # The file as opened: a write finding another file (or none) at the path fails
        # loudly instead of going into an unlinked file nobody will read again.
        self._file_id = _file_id(self.path)
        self._watch_lock = threading.Lock()
        self._last_poll = time.monotonic()
        self._poll_every = EXTERNAL_POLL_SECONDS
        self._doorbell_tried = False
        self._doorbell = Doorbell(self.path, self._signals.everything)
        self._pool.append(conn)

    # -- connections ------------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        conn = connect_sqlite(self.path, cached_statements=256)
        try:
            conn.execute(f"PRAGMA wal_autocheckpoint = {_COMMIT_CHECKPOINT_PAGES}")
        except sqlite3.Error as exc:
            conn.close()
            raise translate_error(exc, self._where) from exc
        return conn

    def _written(self) -> None:
        """Count a committed write transaction; every :data:`CHECKPOINT_EVERY`, have the
        checkpoint thread (started on first use) checkpoint the WAL."""
        self._writes += 1
        if self._writes < CHECKPOINT_EVERY:
            return
        self._writes = 0
        self._checkpoint_due.set()
        if self._checkpointer is None and not self._closed:
            self._checkpointer = threading.Thread(
                target=self._checkpoint, name="flowplex-checkpoint", daemon=True
            )
            self._checkpointer.start()

    def _checkpoint(self) -> None:
        while True:
            self._checkpoint_due.wait()
            self._checkpoint_due.clear()
            if self._closed:
                return
            try:
                self._check_file()
                with self._read() as conn:
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
            except FlowplexError as exc:
                # Commits checkpoint themselves past a higher threshold meanwhile.
                logger.debug("could not checkpoint %s: %s", self._where, exc)

    def _acquire(self) -> sqlite3.Connection:
        try:
            return self._pool.pop()
        except IndexError:
            if self._closed:
                raise self._closed_error() from None
            return self._connect()

    def _release(self, conn: sqlite3.Connection) -> None:
        with self._pool_lock:
            if not self._closed and len(self._pool) < _IDLE_CONNECTIONS:
                self._pool.append(conn)
                return
        conn.close()

    def _check_file(self) -> None:
        """Raise :class:`StorageUnwritableError` if the database file was deleted or replaced
        since this backend opened it (one ``stat``: cheap enough for every write)."""
        try:
            now = _file_id(self.path)
        except FileNotFoundError:
            now = None
        if now != self._file_id:
            what = "deleted" if now is None else "replaced by another file"
            raise StorageUnwritableError(
                f"{self._where}: the database file was {what} while this process had it "
                f"open; stop it and start it again on the right file."
            )

    def _read(self) -> _Use:
        return _Use(self, write=False)

    def _write(self, single: bool = False) -> _Use:
        return _Use(self, write=True, single=single)

    def _write_one(self) -> _Use:
        # One statement is its own transaction; no BEGIN/COMMIT needed around it.
        return _Use(self, write=True, single=True)

    # -- endpoints --------------------------------------------------------------------------

    def delete_endpoint(self, user_id: str, endpoint: str) -> list[str]:
        """Delete the endpoint and every instance mounted on it; returns the instance ids."""
        with self._write() as conn:
            ids = [r[0] for r in conn.execute(_ENDPOINT_INSTANCES, (user_id, endpoint))]
            conn.executemany(self.sql["forget_log"], [(flow_id,) for flow_id in ids])
            conn.execute(_DELETE_ENDPOINT_INSTANCES, (user_id, endpoint))
            conn.execute(_DELETE_ENDPOINT, (user_id, endpoint))
        return ids

    # -- instances --------------------------------------------------------------------------

    def add_instances(self, instances: Sequence[InstanceRecord]) -> None:
        """Store new instances, all or none; ``DuplicateKeyError`` if an id exists already."""
        rows = [instance_params(record) for record in instances]
        if not rows:
            return
        try:
            with self._write() as conn:
                conn.executemany(_ADD_INSTANCE, rows)
        except DuplicateKeyError:
            # Rolled back, rows inserted before the clash too: name the id that clashed.
            with self._read() as conn:
                taken = _first_taken(conn, [row[0] for row in rows])
            raise DuplicateKeyError(f"instance {taken} exists already") from None

    # -- messages ---------------------------------------------------------------------------

    def enqueue(
        self, envelopes: Sequence[Envelope], replies: Sequence[ReplyRecord] = ()
    ) -> list[str]:
        """Queue messages and store replies in one transaction; returns the unknown flow ids."""
        if not envelopes and not replies:
            return []
        points: set[str] = set()
        with self._write(single=len(envelopes) + len(replies) == 1) as conn:
            unknown = _put(conn, envelopes, replies, points, self.clock.time())
        self._notify(points, replies)
        return unknown

    def enqueue_once(
        self,
        key: str,
        envelopes: Sequence[Envelope],
        replies: Sequence[ReplyRecord] = (),
        *,
        wake: bool = True,
    ) -> list[str] | None:
        """As :meth:`enqueue`, unless ``key`` was stored before (then None, nothing stored)."""
        points: set[str] = set()
        now = self.clock.time()
        self._received += 1
        with self._write() as conn:
            if conn.execute(_RECEIVE, (key, now)).rowcount == 0:
                return None
            if self._received % RECEIVED_PRUNE_EVERY == 0:
                conn.execute(_PRUNE_RECEIVED, (now - RECEIVED_KEEP,))
            unknown = _put(conn, envelopes, replies, points, now)
        self._notify(points, replies, here=wake)
        return unknown

    def _claim(
        self, dispatch_point: str, user_id: str | None, lease_seconds: float, limit: int, lease: str
    ) -> list[ClaimedRow]:
        # Idle workers only read: they look at the file here, so that one whose file went
        # away stops too, not just one that writes.
        self._check_file()
        key = (dispatch_point, user_id)
        if key in self._idle:
            # The last claim here may have taken the last message: look before taking the
            # write lock, so idle workers (in this and other processes) polling an empty
            # queue, or woken for a message another thread took meanwhile, stay off it.
            with self._read() as conn:
                now = self.clock.time()
                if user_id is None:
                    found = conn.execute(_PEEK, (dispatch_point, now)).fetchone()
                else:
                    found = conn.execute(_PEEK_USER, (dispatch_point, now, user_id)).fetchone()
            if found is None:
                return []
        with self._write_one() as conn:
            now = self.clock.time()
            until = now + lease_seconds
            if user_id is None:
                params: tuple[Any, ...] = (lease, until, dispatch_point, now, limit)
                rows = conn.execute(_CLAIM_ANY, params).fetchall()
            else:
                params = (lease, until, dispatch_point, now, user_id, limit)
                rows = conn.execute(_CLAIM_USER, params).fetchall()
        if len(rows) < max(limit, 2):
            # Short of a full batch: most likely nothing is left, and the next claim here looks
            # first. (A request running its own message claims one, just after queueing it; the
            # worker threads woken by that message then look, instead of taking the write lock
            # for nothing while the next request queues its message.)
            self._idle.add(key)
        else:
            self._idle.discard(key)
        if not rows:
            return []
        rows.sort()
        # Read after the lease is committed: nothing but the holder of an instance's lease
        # changes its state, so this is the state the message runs on. An instance deleted
        # meanwhile reads as None, as if deleted just after the claim.
        flow_ids = list({row[1]: None for row in rows})
        with self._read() as conn:
            found = {
                r[0]: r for r in conn.execute(_instances_sql(len(flow_ids)), flow_ids).fetchall()
            }
        return [
            (*row, None if (r := found.get(row[1])) is None else instance_from_row(r))
            for row in rows
        ]

    def _complete(self, delivery: Delivery, outcome: Outcome) -> tuple[bool, list[str]]:
        points: set[str] = set()
        with self._write() as conn:
            if not self._ack(conn, delivery, outcome, points):
                return False, []
            unknown = _put(conn, outcome.envelopes, outcome.replies, points, outcome.now)
        self._notify(points, outcome.replies)
        return True, unknown

    def extend_lease(self, delivery: Delivery, lease_seconds: float) -> bool:
        """Keep ``delivery`` leased ``lease_seconds`` from now; False if no longer held."""
        with self._write_one() as conn:
            until = self.clock.time() + lease_seconds
            cursor = conn.execute(_EXTEND, (until, delivery.seq, delivery.lease))
            return bool(cursor.rowcount > 0)

    def _complete_many(
        self, items: Sequence[tuple[Delivery, Outcome]]
    ) -> list[tuple[bool, list[str]]]:
        points: set[str] = set()
        replies: list[ReplyRecord] = []
        results: list[tuple[bool, list[str]]] = []
        with self._write() as conn:
            for delivery, outcome in items:
                if not self._ack(conn, delivery, outcome, points):
                    results.append((False, []))
                    continue
                unknown = _put(conn, outcome.envelopes, outcome.replies, points, outcome.now)
                replies.extend(outcome.replies)
                results.append((True, unknown))
        self._notify(points, replies)
        return results

    def _ack(
        self, conn: sqlite3.Connection, delivery: Delivery, outcome: Outcome, points: set[str]
    ) -> bool:
        """Acknowledge ``delivery`` with its state, dead letter and log entry, inside the
        caller's transaction, promoting the next message of a one-at-a-time instance (its
        dispatch point joins ``points``); False if the lease was lost (nothing written)."""
        params = (delivery.seq, delivery.lease, delivery.seq)
        acked = conn.execute(_ACK, params).fetchone()
        if acked is None:
            return False
        self._record(conn, delivery, outcome)
        parallel, next_seq = acked
        if not parallel and next_seq is not None:
            points.update(r[0] for r in conn.execute(_PROMOTE, (next_seq,)))
        return True

    def release(self, delivery: Delivery) -> None:
        """Give a leased message back at once, uncounting its delivery."""
        with self._write_one() as conn:
            rows = conn.execute(_RELEASE, (delivery.seq, delivery.lease)).fetchall()
        if rows:
            self._notify({rows[0][0]}, ())

    # -- wake-ups ---------------------------------------------------------------------------

    def _wait(self, wake: Callable[[float], bool], timeout: float) -> None:
        """Commits in this process wake at once; other processes' within about 20 ms (the
        doorbell, else polling ``PRAGMA data_version``)."""
        until = time.monotonic() + max(0.0, timeout)
        while not wake(min(until, time.monotonic() + self._poll_every)):
            if time.monotonic() >= until:
                return
            self._poll_other_processes()

    def _watch_others(self) -> None:
        self._ensure_doorbell()

    def _ensure_doorbell(self) -> None:
        """Listen for other processes' rings from the first wait on."""
        if self._doorbell_tried:
            return
        self._doorbell_tried = True
        if Doorbell.available() and self._doorbell.listen():
            self._poll_every = DOORBELL_POLL_SECONDS
            # A commit just before the doorbell listened rang nobody here: look once.
            self._signals.everything()

    def _poll_other_processes(self) -> None:
        """Wake every waiter if another connection committed since the last look."""
        now = time.monotonic()
        with self._watch_lock:
            if self._closed or now - self._last_poll < self._poll_every:
                return
            self._last_poll = now
            try:
                version = self._watch.execute("PRAGMA data_version").fetchone()[0]
            except sqlite3.Error:
                version = None  # closed meanwhile, or the file is gone: let callers find out
            changed = version != self._data_version
            self._data_version = version
        if changed:
            self._signals.everything()

    def _notify(
        self, points: set[str], replies: Sequence[ReplyRecord], *, here: bool = True
    ) -> None:
        """Wake the waiters of other processes, and this one's unless ``here`` is False (then
        only those of ``replies``)."""
        if points or replies:
            self._doorbell.ring()
        if points and here:
            # The claims there still look first (a cheap read): the message may be taken by
            # the request that queued it before a woken worker gets to it.
            self._signals.messages(points)
        if replies:
            self._signals.replies([r.future_id for r in replies])

    def close(self) -> None:
        """Close every connection and wake every waiter. Idempotent."""
        with self._pool_lock:
            self._closed = True
            idle = list(self._pool)
            self._pool.clear()
        self._signals.close()
        self._doorbell.close()
        self._checkpoint_due.set()  # its thread sees the backend closed and ends
        for conn in idle:
            conn.close()
        with self._watch_lock:
            self._watch.close()

    def __repr__(self) -> str:
        return f"SQLiteBackend({self.url!r})"


class _Use(Call[sqlite3.Connection]):
    """A pooled connection for one call. With ``write``, the process's write lock and one
    ``BEGIN IMMEDIATE`` transaction that commits on success and rolls back on any error; with
    ``single`` too, the call runs one statement, which is a transaction by itself. Driver
    errors become flowplex errors (:func:`flowplex.db.translate_error`)."""

    __slots__ = ("_backend", "_single", "_write")

    def __init__(self, backend: SQLiteBackend, write: bool, single: bool = False) -> None:
        self._backend = backend
        self._write = write
        self._single = single

    def _backend_of(self) -> SQLiteBackend:
        return self._backend

    def _acquire(self) -> sqlite3.Connection:
        return self._backend._acquire()

    def _begin(self, conn: sqlite3.Connection) -> None:
        if self._write:
            self._backend._write_lock.acquire()
            self._backend._check_file()
            if not self._single:
                conn.execute("BEGIN IMMEDIATE")

    def _abandon(self, conn: sqlite3.Connection) -> None:
        if self._write:
            self._backend._write_lock.release()
        self._backend._release(conn)

    def __exit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        backend = self._backend
        conn = self._conn
        try:
            if self._write:
                try:
                    if conn.in_transaction:
                        conn.execute("COMMIT" if exc is None else "ROLLBACK")
                    if exc is None:
                        backend._written()
                except sqlite3.Error as err:
                    _rollback_quietly(conn)
                    if exc is None:
                        raise backend._driver_error(err) from err
                finally:
                    backend._write_lock.release()
        finally:
            backend._release(conn)
        if isinstance(exc, sqlite3.Error):
            raise backend._driver_error(exc) from exc


def _rollback_quietly(conn: sqlite3.Connection) -> None:
    try:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
    except sqlite3.Error:
        pass


def _put(
    conn: sqlite3.Connection,
    envelopes: Sequence[Envelope],
    replies: Sequence[ReplyRecord],
    points: set[str],
    now: float,
) -> list[str]:
    """Queue ``envelopes`` and store ``replies`` (created ``now``) inside the caller's write
    transaction; adds the dispatch points that got messages to ``points`` and returns the
    unknown flow ids."""
    unknown = []
    for env in envelopes:
        rows = conn.execute(_ENQUEUE, (env.body, env.flow_id, env.flow_id)).fetchall()
        if rows:
            points.add(rows[0][0])
        else:
            unknown.append(env.flow_id)
    if replies:
        conn.executemany(_PUT_REPLY, [(r.future_id, r.body, now) for r in replies])
    return unknown


def _file_id(path: Path) -> tuple[int, int]:
    """The (device, inode) of the file at ``path``."""
    st = os.stat(path)
    return (st.st_dev, st.st_ino)


@functools.cache
def _instances_sql(count: int) -> str:
    """SELECT the instances with ``count`` given flow ids."""
    return f"SELECT {INSTANCE_COLUMNS} FROM instances WHERE flow_id IN ({', '.join('?' * count)})"


def _first_taken(conn: sqlite3.Connection, flow_ids: list[str]) -> str:
    """The first of ``flow_ids`` that exists already or repeats (the one that failed)."""
    seen: set[str] = set()
    for flow_id in flow_ids:
        if (
            flow_id in seen
            or conn.execute(SQLiteBackend.sql["get_instance"], (flow_id,)).fetchone() is not None
        ):
            return flow_id
        seen.add(flow_id)
    return flow_ids[0]
