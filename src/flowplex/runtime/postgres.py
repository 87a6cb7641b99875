"""``PostgresBackend``: the shared database for worker processes on many machines.

The hot path runs plain SQL through psycopg 3 on pooled connections (prepared on first use),
each call one transaction sent as one pipeline where it can be, so most calls cost a single
round trip to the server.

Queue. ``claim`` takes the oldest claimable messages with ``FOR UPDATE SKIP LOCKED``, so
concurrent workers never wait for, or take, each other's rows. A message is claimable when it is
a *head* (``messages.head``: every message of a parallel instance, the oldest one of any other)
and its lease has run out. Lease times use the database clock, one clock for every machine,
unless the backend was given a ``clock`` (a test's fake one): then that clock's time is sent
with each claim.
Keeping ``head`` right under concurrency is what ``enqueue`` and ``complete`` lock the instance
rows for (``FOR NO KEY UPDATE``, in flow id order so two transactions never deadlock): whoever
decides whether a new message is the head, or which message becomes the next head, sees every
committed change to that instance's queue.

Wake-ups. Each commit that queues messages or stores replies also sends ``pg_notify`` on the
channels ``flowplex_messages`` (payload: the dispatch point) and ``flowplex_replies`` (payload:
the future id), delivered when it commits. A listener thread with its own connection turns them
into in-process wake-ups; commits made by this process wake its waiters directly. If the
listener's connection fails, waits fall back to returning every 50 ms (callers re-check) until
it reconnects.

Vacuum. Each acknowledged message leaves a dead entry where claims look first (the index of
heads: the next head is a new row version), and autovacuum comes at most once a minute: a
long backlog would drain slower and slower. So every :data:`VACUUM_EVERY` acknowledgements a
process vacuums the queue table itself, in a thread of its own, skipping it if another
process is at it.
"""

from __future__ import annotations

import contextlib
import logging
import select
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import psycopg
from psycopg import pq

from .._clock import SYSTEM_CLOCK, Clock
from ..db import DatabaseURL, connect_postgres, translate_error
from ..errors import BackendError, ConfigurationError, DuplicateKeyError
from ._backend import (
    RECEIVED_KEEP,
    RECEIVED_PRUNE_EVERY,
    Delivery,
    Envelope,
    InstanceRecord,
    ReplyRecord,
)
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

__all__ = ["MESSAGES_CHANNEL", "REPLIES_CHANNEL", "PostgresBackend"]

#: NOTIFY channel for queued messages; the payload is the dispatch point.
MESSAGES_CHANNEL = "flowplex_messages"
#: NOTIFY channel for stored replies; the payload is the future id.
REPLIES_CHANNEL = "flowplex_replies"

_IDLE_CONNECTIONS = 8

#: Messages acknowledged by one process between two vacuums of the queue (see the module doc).
VACUUM_EVERY = 250
# Index cleanup explicitly: left to "auto", a vacuum skips the index when few pages hold dead
# rows, and the index is what the claims walk.
_VACUUM = "VACUUM (SKIP_LOCKED, INDEX_CLEANUP ON) messages"

logger = logging.getLogger("flowplex.node")

# Claim, release and take_reply run on connections that commit without waiting for the WAL
# flush (a fsync: the largest cost of a small commit). Safe, because losing such a commit in a
# server crash only undoes a lease (the message is delivered again, as if the lease had run
# out) or brings back a reply nobody waits for any more; and any later durable commit flushes
# it anyway, the WAL being written in order. Everything else waits for the flush.
_NOT_DURABLE = "SET synchronous_commit = off"
# Every statement is prepared on first use. Planning one of them costs more than running it,
# and their plans do not depend on the values (equality lookups on indexes), so the plan made
# once is kept instead of the server re-planning the first executions and comparing.
_GENERIC_PLANS = "SET plan_cache_mode = force_generic_plan"
_FALLBACK_POLL_SECONDS = 0.05
_LISTENER_START_TIMEOUT = 10.0
_LISTENER_RETRY_SECONDS = 1.0

_I = ", ".join(f"i.{c.strip()}" for c in INSTANCE_COLUMNS.split(","))
# The claim's "now": the time sent with it (an injected clock), else the database's.
_NOW = "coalesce(%(now)s::float8, extract(epoch FROM statement_timestamp())::float8)"

_DELETE_ENDPOINT = """
WITH gone AS (
    DELETE FROM instances WHERE user_id = %(user)s AND endpoint = %(endpoint)s
    RETURNING flow_id, created_at
), endpoint AS (
    DELETE FROM endpoints WHERE user_id = %(user)s AND endpoint = %(endpoint)s
), logs AS (
    DELETE FROM message_log WHERE flow_id IN (
        SELECT flow_id FROM instances WHERE user_id = %(user)s AND endpoint = %(endpoint)s
    )
)
SELECT flow_id FROM gone ORDER BY created_at, flow_id
"""

# The arrays keep the statement text fixed (prepared once) whatever the batch size.
_ADD_INSTANCES = f"""
INSERT INTO instances ({INSTANCE_COLUMNS})
SELECT * FROM unnest(
    %s::text[], %s::text[], %s::text[], %s::text[], %s::text[], %s::text[], %s::text[],
    %s::int[], %s::text[], %s::text[], %s::bool[], %s::float8[])
ON CONFLICT DO NOTHING
RETURNING flow_id
"""

_LOCK_INSTANCES = (
    "SELECT flow_id FROM instances WHERE flow_id = ANY(%s) ORDER BY flow_id FOR NO KEY UPDATE"
)
_LOCK_INSTANCE = "SELECT flow_id FROM instances WHERE flow_id = %s FOR NO KEY UPDATE"
# Runs after _LOCK_INSTANCES in the same transaction, so NOT EXISTS sees every committed
# message of the (locked) instance. Within the batch, only the first message of an instance
# can be its head.
_ENQUEUE = f"""
WITH batch AS (
    SELECT f, b, n FROM unnest(%s::text[], %s::text[]) WITH ORDINALITY AS t(f, b, n)
), queued AS (
    INSERT INTO messages
        (flow_id, body, dispatch_point, user_id, parallel, head, deliveries, lease, lease_until)
    SELECT batch.f, batch.b, i.dispatch_point, i.user_id, i.parallel_dispatch,
        i.parallel_dispatch OR (
            row_number() OVER (PARTITION BY batch.f ORDER BY batch.n) = 1
            AND NOT EXISTS (SELECT 1 FROM messages AS m WHERE m.flow_id = batch.f)),
        0, NULL, 0
    FROM batch JOIN instances AS i ON i.flow_id = batch.f
    ORDER BY batch.n
    RETURNING dispatch_point
)
SELECT p.d FROM (SELECT DISTINCT dispatch_point FROM queued) AS p(d)
CROSS JOIN LATERAL pg_notify('{MESSAGES_CHANNEL}', p.d)
"""
# _ENQUEUE for a single message (the common case), without the batch machinery.
_RECEIVE = """
INSERT INTO received (key, received_at) VALUES (%s, %s) ON CONFLICT DO NOTHING RETURNING key
"""
_PRUNE_RECEIVED = "DELETE FROM received WHERE received_at < %s"

_ENQUEUE_ONE = f"""
WITH queued AS (
    INSERT INTO messages
        (flow_id, body, dispatch_point, user_id, parallel, head, deliveries, lease, lease_until)
    SELECT i.flow_id, %(body)s, i.dispatch_point, i.user_id, i.parallel_dispatch,
        i.parallel_dispatch
        OR NOT EXISTS (SELECT 1 FROM messages AS m WHERE m.flow_id = %(flow)s),
        0, NULL, 0
    FROM instances AS i WHERE i.flow_id = %(flow)s
    RETURNING dispatch_point
)
SELECT q.dispatch_point FROM queued AS q
CROSS JOIN LATERAL pg_notify('{MESSAGES_CHANNEL}', q.dispatch_point)
"""
_PUT_REPLIES = f"""
WITH stored AS (
    INSERT INTO replies (future_id, body, created_at)
    SELECT * FROM unnest(%s::text[], %s::text[], %s::float8[])
    ON CONFLICT (future_id) DO NOTHING
    RETURNING future_id
)
SELECT count(*) FROM stored CROSS JOIN LATERAL pg_notify('{REPLIES_CHANNEL}', stored.future_id)
"""
_CLAIM = f"""
WITH picked AS (
    SELECT seq FROM messages
    WHERE dispatch_point = %(point)s AND head AND lease_until <= {_NOW} {{user}}
    ORDER BY seq LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
), leased AS (
    UPDATE messages AS m
    SET lease = %(lease)s, lease_until = {_NOW} + %(seconds)s, deliveries = m.deliveries + 1
    FROM picked WHERE m.seq = picked.seq
    RETURNING m.seq, m.flow_id, m.body, m.deliveries
)
SELECT leased.seq, leased.flow_id, leased.body, leased.deliveries, {_I}
FROM leased LEFT JOIN instances AS i ON i.flow_id = leased.flow_id
ORDER BY leased.seq
"""
_CLAIM_ANY = _CLAIM.format(user="")
_CLAIM_USER = _CLAIM.format(user="AND user_id = %(user)s")
# A complete's acknowledgement, which fails (division by zero, see _LostLease) when the lease
# was lost: the transaction then rolls back whatever was sent after it in the same pipeline,
# so the whole complete is one round trip, never waiting for the ack's answer half-way.
_ACK_OR_FAIL = """
WITH acked AS (DELETE FROM messages WHERE seq = %s AND lease = %s RETURNING seq)
SELECT 1 / count(*) FROM acked
"""
# The acknowledged message was its instance's oldest, so the next one is found from its seq
# on: the index scan starts past the instance's deleted messages (dead until vacuumed). Every
# message of a parallel instance is a head already: nothing is promoted, nobody woken.
_NEXT_HEAD = f"""
WITH promoted AS (
    UPDATE messages SET head = true
    WHERE seq = (SELECT min(seq) FROM messages WHERE flow_id = %s AND seq > %s) AND NOT head
    RETURNING dispatch_point
)
SELECT p.dispatch_point FROM promoted AS p
CROSS JOIN LATERAL pg_notify('{MESSAGES_CHANNEL}', p.dispatch_point)
"""
_EXTEND = f"""
UPDATE messages SET lease_until = {_NOW} + %(seconds)s
WHERE seq = %(seq)s AND lease = %(lease)s
RETURNING 1
"""
_RELEASE = f"""
WITH released AS (
    UPDATE messages
    SET lease = NULL, lease_until = 0, deliveries = greatest(0, deliveries - 1)
    WHERE seq = %s AND lease = %s
    RETURNING dispatch_point
)
SELECT r.dispatch_point FROM released AS r
CROSS JOIN LATERAL pg_notify('{MESSAGES_CHANNEL}', r.dispatch_point)
"""


class PostgresBackend(SQLBackend):
    """A :class:`~flowplex.runtime.Backend` on a PostgreSQL database; see the module doc.

    ``url`` is a libpq URL (``postgresql://user:password@host:port/db?options=...``); the schema
    is migrated on open. Tables live in the connection's ``search_path``, so
    ``?options=-csearch_path%3Dname`` puts a node in its own schema. Without ``clock``, leases
    follow the database server's clock and creation times the system clock; with one, both
    follow it.
    """

    placeholder = "%s"

    def __init__(self, url: str | DatabaseURL, *, clock: Clock | None = None) -> None:
        db = DatabaseURL.parse(url)
        if db.kind != "postgresql":
            raise ConfigurationError(f"PostgresBackend needs a postgresql:// URL, got {db}")
        self.url = db.text
        self._db = db
        self.clock = clock or SYSTEM_CLOCK
        # Sent with each claim as its "now"; None lets the database clock decide.
        self._lease_clock = clock
        self._where = f"the database at {db}"
        # Idle connections: [durable, lease-only] (see _NOT_DURABLE).
        self._pools: tuple[deque[psycopg.Connection[Any]], ...] = (deque(), deque())
        self._pool_lock = threading.Lock()
        self._own_pids: set[int] = set()
        self._signals = Signals()
        self._log_writes = {}
        self._closed = False
        self._listener: threading.Thread | None = None
        self._listener_lock = threading.Lock()
        self._listening = False
        self._listener_ready = threading.Event()
        self._acks = 0
        self._vacuuming = False
        self._vacuum_lock = threading.Lock()
        conn = self._connect()
        try:
            self._migrate_unless_current(conn, db)
        except BaseException:
            conn.close()
            raise
        # Written to by close() to interrupt the listener's select().
        self._wake_r, self._wake_w = socket.socketpair()
        self._pools[0].append(conn)

    # -- connections ------------------------------------------------------------------------

    def _connect(self, durable: bool = True) -> psycopg.Connection[Any]:
        conn = connect_postgres(self._db, autocommit=True, prepare_threshold=0)
        try:
            conn.execute(_GENERIC_PLANS)
            if not durable:
                conn.execute(_NOT_DURABLE)
        except psycopg.Error as exc:
            conn.close()
            raise translate_error(exc, self._where) from exc
        self._own_pids.add(conn.info.backend_pid)
        return conn

    def _acquire(self, durable: bool) -> psycopg.Connection[Any]:
        try:
            return self._pools[not durable].pop()
        except IndexError:
            if self._closed:
                raise self._closed_error() from None
            return self._connect(durable)

    def _release(self, conn: psycopg.Connection[Any], durable: bool) -> None:
        healthy = not conn.closed and conn.info.transaction_status == pq.TransactionStatus.IDLE
        pool = self._pools[not durable]
        with self._pool_lock:
            if healthy and not self._closed and len(pool) < _IDLE_CONNECTIONS:
                pool.append(conn)
                return
        self._discard(conn)

    def _discard(self, conn: psycopg.Connection[Any]) -> None:
        if not conn.closed:
            self._own_pids.discard(conn.info.backend_pid)
        conn.close()

    def _use(self, durable: bool = True) -> _Use:
        """A connection for one statement (its own transaction: the connection autocommits)."""
        return _Use(self, transaction=False, durable=durable)

    def _read(self) -> _Use:
        """A connection for one reading statement."""
        return self._use()

    def _write(self) -> _Use:
        """A connection for one writing statement (its own transaction)."""
        return self._use()

    def _write_one(self) -> _Use:
        """A connection for one statement moving a lease or taking a reply (not durable)."""
        return self._use(durable=False)

    def _transaction(self) -> _Use:
        """A connection in one pipelined transaction; statements whose results are not read
        inside the block all travel in the round trip of the COMMIT."""
        return _Use(self, transaction=True, durable=True)

    @contextlib.contextmanager
    def _users_locked(self) -> Iterator[psycopg.Connection[Any]]:
        """A transaction holding the users table against other writers (readers go on)."""
        with self._transaction() as conn:
            conn.execute("LOCK TABLE users IN SHARE ROW EXCLUSIVE MODE")
            yield conn

    # -- endpoints --------------------------------------------------------------------------

    def delete_endpoint(self, user_id: str, endpoint: str) -> list[str]:
        """Delete the endpoint and every instance mounted on it; returns the instance ids."""
        with self._use() as conn:
            rows = conn.execute(_DELETE_ENDPOINT, {"user": user_id, "endpoint": endpoint})
            return [row[0] for row in rows.fetchall()]

    # -- instances --------------------------------------------------------------------------

    def add_instances(self, instances: Sequence[InstanceRecord]) -> None:
        """Store new instances, all or none; ``DuplicateKeyError`` if an id exists already."""
        if not instances:
            return
        rows = [instance_params(record) for record in instances]
        # Lists, not tuples: psycopg sends a list as an array, a tuple as a record.
        columns = [list(column) for column in zip(*rows, strict=True)]
        with self._transaction() as conn:
            added = {row[0] for row in conn.execute(_ADD_INSTANCES, columns).fetchall()}
            if len(added) < len(instances):
                seen: set[str] = set()
                for record in instances:
                    if record.flow_id not in added or record.flow_id in seen:
                        # Raising inside the transaction rolls back the rows that did go in.
                        raise DuplicateKeyError(f"instance {record.flow_id} exists already")
                    seen.add(record.flow_id)

    # -- messages ---------------------------------------------------------------------------

    def enqueue(
        self, envelopes: Sequence[Envelope], replies: Sequence[ReplyRecord] = ()
    ) -> list[str]:
        """Queue messages and store replies in one transaction; returns the unknown flow ids."""
        if not envelopes and not replies:
            return []
        with self._transaction() as conn:
            put = _Put(conn, envelopes, replies, self.clock.time())
        return self._after_put(put, ())

    def enqueue_once(
        self,
        key: str,
        envelopes: Sequence[Envelope],
        replies: Sequence[ReplyRecord] = (),
        *,
        wake: bool = True,
    ) -> list[str] | None:
        """As :meth:`enqueue`, unless ``key`` was stored before (then None, nothing stored)."""
        now = self.clock.time()
        self._received += 1
        with self._transaction() as conn:
            if conn.execute(_RECEIVE, (key, now)).fetchone() is None:
                return None
            if self._received % RECEIVED_PRUNE_EVERY == 0:
                conn.execute(_PRUNE_RECEIVED, (now - RECEIVED_KEEP,))
            put = _Put(conn, envelopes, replies, now)
        # Without ``wake``, only the NOTIFY wakes this process's workers (a moment later).
        return self._after_put(put, (), wake=wake)

    def _claim(
        self, dispatch_point: str, user_id: str | None, lease_seconds: float, limit: int, lease: str
    ) -> list[ClaimedRow]:
        self._ensure_listener()
        params = {
            "point": dispatch_point,
            "user": user_id,
            "limit": limit,
            "lease": lease,
            "seconds": lease_seconds,
            "now": None if self._lease_clock is None else self._lease_clock.time(),
        }
        with self._write_one() as conn:
            rows = conn.execute(_CLAIM_ANY if user_id is None else _CLAIM_USER, params).fetchall()
        return [
            (row[0], row[1], row[2], row[3], None if row[4] is None else instance_from_row(row, 4))
            for row in rows
        ]

    def _complete(self, delivery: Delivery, outcome: Outcome) -> tuple[bool, list[str]]:
        flow_id = delivery.flow_id
        try:
            with self._transaction() as conn:
                # Instance locks first, in flow id order, then the message row: the order of
                # every other writer, so no deadlock.
                locks = sorted({flow_id, *(env.flow_id for env in outcome.envelopes)})
                if len(locks) == 1:
                    locked = conn.execute(_LOCK_INSTANCE, (flow_id,))
                else:
                    locked = conn.execute(_LOCK_INSTANCES, (locks,))
                conn.execute(_ACK_OR_FAIL, (delivery.seq, delivery.lease))
                self._record(conn, delivery, outcome)
                # The next message of a one-at-a-time instance becomes claimable.
                promoted = conn.execute(_NEXT_HEAD, (flow_id, delivery.seq))
                put = _Put(conn, outcome.envelopes, outcome.replies, outcome.now, locked)
        except _LostLease:
            return False, []
        self._acked(1)
        return True, self._after_put(put, [row[0] for row in promoted.fetchall()])

    def _complete_many(
        self, items: Sequence[tuple[Delivery, Outcome]]
    ) -> list[tuple[bool, list[str]]]:
        try:
            return self._complete_all(items)
        except _LostLease:
            # Some lease was lost (rare), and nothing was written: each alone, so that one
            # alone fails.
            return [self._complete(delivery, outcome) for delivery, outcome in items]

    def _complete_all(
        self, items: Sequence[tuple[Delivery, Outcome]]
    ) -> list[tuple[bool, list[str]]]:
        """Complete every item in one pipelined transaction (one round trip); _LostLease, and
        nothing written, if any lease was lost."""
        envelopes = [env for _, outcome in items for env in outcome.envelopes]
        locks = sorted({*(d.flow_id for d, _ in items), *(env.flow_id for env in envelopes)})
        promoted = []
        with self._transaction() as conn:
            # As in _complete: the instance locks first, in flow id order, then the messages.
            locked = conn.execute(_LOCK_INSTANCES, (locks,))
            replies: list[ReplyRecord] = []
            for delivery, outcome in items:
                conn.execute(_ACK_OR_FAIL, (delivery.seq, delivery.lease))
                self._record(conn, delivery, outcome)
                promoted.append(conn.execute(_NEXT_HEAD, (delivery.flow_id, delivery.seq)))
                replies.extend(outcome.replies)
            put = _Put(conn, envelopes, replies, items[-1][1].now, locked)
        points = [row[0] for cursor in promoted for row in cursor.fetchall()]
        self._acked(len(items))
        unknown = set(self._after_put(put, points))
        return [
            (True, [env.flow_id for env in outcome.envelopes if env.flow_id in unknown])
            for _, outcome in items
        ]

    def _acked(self, count: int) -> None:
        """Count acknowledged messages: every :data:`VACUUM_EVERY`, vacuum the queue (in a
        thread, one at a time)."""
        with self._vacuum_lock:
            self._acks += count
            if self._acks < VACUUM_EVERY or self._vacuuming or self._closed:
                return
            self._acks = 0
            self._vacuuming = True
        threading.Thread(target=self._vacuum, name="flowplex-vacuum", daemon=True).start()

    def _vacuum(self) -> None:
        try:
            with self._use() as conn:
                conn.execute(_VACUUM, prepare=False)
        except Exception as exc:
            # Not the table's owner, or the database away: autovacuum still comes.
            logger.debug("could not vacuum the queue of %s: %s", self._where, exc)
        finally:
            self._vacuuming = False

    def _after_put(self, put: _Put, points: Sequence[str], *, wake: bool = True) -> list[str]:
        """Wake this process's waiters for what ``put`` committed (those of its messages only
        with ``wake``); the unknown flow ids."""
        unknown, queued_points = put.outcome()
        all_points = {*points, *queued_points}
        if all_points and wake:
            self._signals.messages(all_points)
        if put.replies:
            self._signals.replies([r.future_id for r in put.replies])
        return unknown

    def extend_lease(self, delivery: Delivery, lease_seconds: float) -> bool:
        """Keep ``delivery`` leased ``lease_seconds`` from now; False if no longer held."""
        params = {
            "seq": delivery.seq,
            "lease": delivery.lease,
            "seconds": lease_seconds,
            "now": None if self._lease_clock is None else self._lease_clock.time(),
        }
        with self._write_one() as conn:
            return conn.execute(_EXTEND, params).fetchone() is not None

    def release(self, delivery: Delivery) -> None:
        """Give a leased message back at once, uncounting its delivery."""
        with self._write_one() as conn:
            rows = conn.execute(_RELEASE, (delivery.seq, delivery.lease)).fetchall()
        if rows:
            self._signals.messages([rows[0][0]])

    def take_reply(self, future_id: str) -> str | None:
        """Remove and return the reply body for ``future_id``, or None if it has not arrived."""
        self._ensure_listener()
        return super().take_reply(future_id)

    # -- wake-ups ---------------------------------------------------------------------------

    def _wait(self, wake: Callable[[float], bool], timeout: float) -> None:
        wake(self._until(timeout))

    def _watch_others(self) -> None:
        self._ensure_listener()

    def _until(self, timeout: float) -> float:
        wait = max(0.0, timeout)
        if not self._listening:
            wait = min(wait, _FALLBACK_POLL_SECONDS)
        return time.monotonic() + wait

    def _ensure_listener(self) -> None:
        if self._listener is not None or self._closed:
            return
        with self._listener_lock:
            if self._listener is None and not self._closed:
                self._listener = threading.Thread(
                    target=self._listen, name="flowplex-pg-listener", daemon=True
                )
                self._listener.start()
        # Until LISTEN runs, commits of other processes would go unnoticed: wait for it once.
        self._listener_ready.wait(_LISTENER_START_TIMEOUT)

    def _listen(self) -> None:
        """The listener thread: LISTEN, and turn notifications into wake-ups, until closed."""
        signals = self._signals
        while not self._closed:
            conn = None
            try:
                conn = connect_postgres(self._db, autocommit=True, connect_timeout=10)
                conn.execute(f"LISTEN {MESSAGES_CHANNEL}")
                conn.execute(f"LISTEN {REPLIES_CHANNEL}")
                self._listening = True
                self._listener_ready.set()
                # Whatever was committed while nobody listened: let every waiter re-check.
                signals.everything()
                self._pump(conn.pgconn)
            except (psycopg.Error, BackendError, OSError, ValueError):
                pass  # reconnect below; ValueError: close() shut the wake-up socket meanwhile
            finally:
                self._listening = False
                self._listener_ready.set()
                if conn is not None:
                    conn.close()
            if not self._closed:
                signals.everything()
                try:
                    select.select([self._wake_r], [], [], _LISTENER_RETRY_SECONDS)
                except (OSError, ValueError):
                    return

    def _pump(self, pgconn: pq.abc.PGconn) -> None:
        own = self._own_pids
        signals = self._signals
        wake = self._wake_r.fileno()
        while not self._closed:
            ready, _, _ = select.select([pgconn.socket, wake], [], [])
            if wake in ready:
                return
            pgconn.consume_input()
            points: list[str] = []
            futures: list[str] = []
            while (note := pgconn.notifies()) is not None:
                if note.relname == REPLIES_CHANNEL.encode():
                    futures.append(note.extra.decode())
                elif note.be_pid not in own:
                    # This process's own commits have woken its waiters already.
                    points.append(note.extra.decode())
            if points:
                signals.messages(points)
            if futures:
                signals.replies(futures)

    def close(self) -> None:
        """Close every connection, stop the listener and wake every waiter. Idempotent."""
        with self._pool_lock:
            if self._closed:
                return
            self._closed = True
            idle = [conn for pool in self._pools for conn in pool]
            for pool in self._pools:
                pool.clear()
        self._signals.close()
        self._listener_ready.set()
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")
        with self._listener_lock:
            listener = self._listener
        if listener is not None and listener is not threading.current_thread():
            listener.join(5.0)
        for conn in idle:
            self._discard(conn)
        self._close_wake()

    def _close_wake(self) -> None:
        self._wake_r.close()
        self._wake_w.close()

    def __repr__(self) -> str:
        return f"PostgresBackend({self._db.redacted!r})"


class _LostLease(Exception):
    """A transaction's ``_ACK_OR_FAIL`` found the lease lost; the transaction rolled back."""


class _Use(Call[psycopg.Connection[Any]]):
    """A pooled connection for one call. Driver errors become flowplex errors
    (:func:`flowplex.db.translate_error`).

    Without ``transaction`` the connection autocommits each statement. With it, the block is
    one explicit transaction in pipeline mode: BEGIN, the statements and COMMIT travel
    together, and the server is waited for only where a result is read inside the block, and
    once at the end. Any error rolls the transaction back.
    ``durable=False`` takes a connection that commits without waiting for the WAL flush (see
    ``_NOT_DURABLE``).
    """

    __slots__ = ("_backend", "_durable", "_pipeline", "_transaction")

    def __init__(self, backend: PostgresBackend, transaction: bool, durable: bool = True) -> None:
        self._backend = backend
        self._transaction = transaction
        self._durable = durable

    def _backend_of(self) -> PostgresBackend:
        return self._backend

    def _acquire(self) -> psycopg.Connection[Any]:
        return self._backend._acquire(self._durable)

    def _begin(self, conn: psycopg.Connection[Any]) -> None:
        if self._transaction:
            self._pipeline = conn.pipeline()
            self._pipeline.__enter__()
            conn.execute("BEGIN", prepare=False)

    def _abandon(self, conn: psycopg.Connection[Any]) -> None:
        self._backend._discard(conn)

    def __exit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        backend = self._backend
        conn = self._conn
        error: BaseException | None = exc
        try:
            if self._transaction:
                try:
                    if exc is None:
                        conn.execute("COMMIT", prepare=False)
                finally:
                    # Sends what is queued and waits for it; raises the first failure. On
                    # failure the transaction is still open: rolled back below, outside the
                    # pipeline.
                    self._pipeline.__exit__(None, None, None)
        except psycopg.Error as err:
            if error is None or isinstance(error, psycopg.Error):
                error = err
        finally:
            if error is not None and self._transaction:
                _rollback_quietly(conn)
            backend._release(conn, self._durable)
        if _lost_lease(exc) or _lost_lease(error):
            raise _LostLease from error
        if isinstance(error, psycopg.Error):
            raise backend._driver_error(error) from error


def _lost_lease(error: BaseException | None) -> bool:
    """Whether ``error`` comes of _ACK_OR_FAIL (the only division flowplex sends). It may
    surface inside the block (a pipeline reads results as they come) or at its end, and
    there also as the context of the pipeline's own "aborted" error."""
    seen = 0
    while error is not None and seen < 8:
        if isinstance(error, psycopg.errors.DivisionByZero):
            return True
        error, seen = error.__cause__ or error.__context__, seen + 1
    return False


def _rollback_quietly(conn: psycopg.Connection[Any]) -> None:
    """End a failed transaction (the connection goes back to the pool only if that works).

    Through ``rollback()``, not a ROLLBACK statement: psycopg then also resets its prepared
    statements in step with the server.
    """
    try:
        if not conn.closed:
            conn.rollback()
    except psycopg.Error:
        conn.close()


class _Put:
    """Queue envelopes and store replies inside a pipelined transaction; the results are read
    (:meth:`outcome`) after it commits."""

    def __init__(
        self,
        conn: psycopg.Connection[Any],
        envelopes: Sequence[Envelope],
        replies: Sequence[ReplyRecord],
        now: float,
        locked: psycopg.Cursor[Any] | None = None,
    ) -> None:
        """``now``: the replies' creation time; ``locked``: the caller's _LOCK_INSTANCES of (at
        least) the envelopes' instances."""
        self.envelopes = envelopes
        self.replies = replies
        self._locked = locked
        self._queued: psycopg.Cursor[Any] | None = None
        if len(envelopes) == 1:
            env = envelopes[0]
            if locked is None:
                self._locked = conn.execute(_LOCK_INSTANCE, (env.flow_id,))
            self._queued = conn.execute(_ENQUEUE_ONE, {"flow": env.flow_id, "body": env.body})
        elif envelopes:
            flows = [env.flow_id for env in envelopes]
            if locked is None:
                self._locked = conn.execute(_LOCK_INSTANCES, (sorted(set(flows)),))
            self._queued = conn.execute(_ENQUEUE, (flows, [env.body for env in envelopes]))
        if replies:
            # One row per future (the first reply wins), as ON CONFLICT cannot touch a row twice.
            first: dict[str, str] = {}
            for r in replies:
                first.setdefault(r.future_id, r.body)
            conn.execute(_PUT_REPLIES, (list(first), list(first.values()), [now] * len(first)))

    def outcome(self) -> tuple[list[str], list[str]]:
        """The unknown flow ids (in envelope order) and the dispatch points that got messages."""
        if self._locked is None or self._queued is None:
            return [], []
        known = {row[0] for row in self._locked.fetchall()}
        unknown = [env.flow_id for env in self.envelopes if env.flow_id not in known]
        return unknown, [row[0] for row in self._queued.fetchall()]
