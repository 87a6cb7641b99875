"""The half of the SQL backends that SQLite and PostgreSQL share.

The statements here are written once, with ``?`` placeholders; :class:`SQLBackend` turns them
into the driver's style (``%s`` for psycopg) when a subclass is defined. What differs between
the two databases (connections, claims, batched writes, wake-ups across processes) stays in
``sqlite.py`` and ``postgres.py``. Both open their connections with :mod:`flowplex.db`'s
helpers and turn driver errors into flowplex errors with its one translator.
"""

from __future__ import annotations

import json
from abc import abstractmethod
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import Any, ClassVar, Generic, NamedTuple, TypeVar

from .._clock import SYSTEM_CLOCK, Clock
from .._json import dumps
from ..db import DatabaseURL, ensure_schema, is_driver_error, translate_error
from ..db.migrate import HEAD, VERSION_QUERY
from ..errors import BackendError, DuplicateKeyError
from ..messages import new_id
from ._backend import (
    LOG_PRUNE_EVERY,
    Backend,
    Completion,
    DeadLetter,
    Delivery,
    EndpointRecord,
    Envelope,
    InstanceRecord,
    InstanceStats,
    LogEntry,
    ReplyRecord,
    UserRecord,
    cut,
)
from ._signals import Signals

__all__ = [
    "INSTANCE_COLUMNS",
    "Call",
    "ClaimedRow",
    "Outcome",
    "SQLBackend",
    "instance_from_row",
    "instance_params",
]

#: The ``instances`` columns in the order :func:`instance_from_row` reads them.
INSTANCE_COLUMNS = (
    "flow_id, user_id, endpoint, client_id, flow_class_name, config, state, state_version, "
    "dispatch_point, dispatch_point_override, parallel_dispatch, created_at"
)

_ENDPOINT_COLUMNS = (
    "user_id, endpoint, flow_class_name, singleton, parallel_dispatch, dispatch_point, served, "
    "created_at"
)

# Ties on created_at are broken by the key, the same way on both databases.
_QUERIES = {
    "add_user": "INSERT INTO users (user_id, created_at) VALUES (?, ?)",
    # One statement, run where no other process can add a user meanwhile (the backends'
    # _users_locked: SQLite's write lock, a PostgreSQL table lock).
    "add_user_below": (
        "INSERT INTO users (user_id, created_at) SELECT ?, ? "
        "WHERE (SELECT count(*) FROM users) < ? RETURNING 1"
    ),
    "list_users": "SELECT user_id, created_at FROM users ORDER BY created_at, user_id",
    # Insert, or serve again an unserved endpoint with the new settings (keeping created_at); a
    # served one is left alone and returns no row.
    "serve": f"""
INSERT INTO endpoints ({_ENDPOINT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, TRUE, ?)
ON CONFLICT (user_id, endpoint) DO UPDATE SET
    flow_class_name = excluded.flow_class_name, singleton = excluded.singleton,
    parallel_dispatch = excluded.parallel_dispatch, dispatch_point = excluded.dispatch_point,
    served = TRUE
WHERE NOT endpoints.served
RETURNING 1
""",
    "get_endpoint": f"SELECT {_ENDPOINT_COLUMNS} FROM endpoints WHERE user_id = ? AND endpoint = ?",
    "list_endpoints": (
        f"SELECT {_ENDPOINT_COLUMNS} FROM endpoints WHERE user_id = ? ORDER BY created_at, endpoint"
    ),
    "set_served": "UPDATE endpoints SET served = ? WHERE user_id = ? AND endpoint = ?",
    "get_instance": f"SELECT {INSTANCE_COLUMNS} FROM instances WHERE flow_id = ?",
    "list_instances": (
        f"SELECT {INSTANCE_COLUMNS} FROM instances WHERE user_id = ? ORDER BY created_at, flow_id"
    ),
    "list_endpoint_instances": (
        f"SELECT {INSTANCE_COLUMNS} FROM instances WHERE user_id = ? AND endpoint = ? "
        "ORDER BY created_at, flow_id"
    ),
    "delete_instance": "DELETE FROM instances WHERE flow_id = ?",
    "pending": "SELECT count(*) FROM messages",
    "pending_flow": "SELECT count(*) FROM messages WHERE flow_id = ?",
    "list_dead": (
        "SELECT flow_id, body, error, deliveries, created_at FROM dead_letters ORDER BY id"
    ),
    "list_dead_flow": (
        "SELECT flow_id, body, error, deliveries, created_at FROM dead_letters "
        "WHERE flow_id = ? ORDER BY id"
    ),
    # The message log: keyed by (instance, the message's queue seq); pruned now and then to
    # the newest entries (a walk of at most log_limit keys of one instance).
    "add_log": (
        "INSERT INTO message_log (flow_id, seq, body, outcome, reply, error, deliveries, "
        "duration, finished_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
    ),
    "prune_log": (
        "DELETE FROM message_log WHERE flow_id = ? AND seq <= ("
        "SELECT seq FROM message_log WHERE flow_id = ? ORDER BY seq DESC LIMIT 1 OFFSET ?)"
    ),
    "read_log": (
        "SELECT flow_id, body, outcome, reply, error, deliveries, duration, finished_at "
        "FROM message_log WHERE flow_id = ? ORDER BY seq DESC LIMIT ?"
    ),
    "forget_log": "DELETE FROM message_log WHERE flow_id = ?",
    "queue_stats": (
        "SELECT flow_id, count(*), sum(CASE WHEN lease_until > ? THEN 1 ELSE 0 END) "
        "FROM messages GROUP BY flow_id"
    ),
    "dead_stats": "SELECT flow_id, count(*) FROM dead_letters GROUP BY flow_id",
    "activity_stats": "SELECT flow_id, max(finished_at) FROM message_log GROUP BY flow_id",
    "error_stats": (
        "SELECT m.flow_id, m.error, m.finished_at FROM message_log AS m JOIN ("
        "SELECT flow_id, max(seq) AS seq FROM message_log WHERE outcome <> 'ok' "
        "GROUP BY flow_id) AS last ON m.flow_id = last.flow_id AND m.seq = last.seq"
    ),
    "has_reply": "SELECT 1 FROM replies WHERE future_id = ?",
    "peek_reply": "SELECT body FROM replies WHERE future_id = ?",
    "take_reply": "DELETE FROM replies WHERE future_id = ? RETURNING body",
    "save_state": (
        "UPDATE instances SET state = ?, state_version = state_version + 1 WHERE flow_id = ?"
    ),
    # A deleted instance's messages nobody holds (answered by the node at once).
    "take_queued": (
        "DELETE FROM messages WHERE flow_id = ? AND (lease IS NULL OR lease_until <= ?) "
        "RETURNING seq, body"
    ),
    "add_dead": (
        "INSERT INTO dead_letters (flow_id, body, error, deliveries, created_at) "
        "VALUES (?, ?, ?, ?, ?)"
    ),
}


Conn = TypeVar("Conn")

#: Instances whose log writes are counted before the counts start over (see ``_add_log``).
_LOG_COUNTS_KEPT = 10_000

#: A claimed message: seq, flow id, body, deliveries and its instance (None if deleted).
ClaimedRow = tuple[int, str, str, int, InstanceRecord | None]


class Outcome(NamedTuple):
    """What :meth:`~flowplex.runtime.Backend.complete` commits with a delivery."""

    state: dict[str, Any] | None
    envelopes: Sequence[Envelope]
    replies: Sequence[ReplyRecord]
    dead_letter: DeadLetter | None
    #: The entry for the instance's message log (written unless the backend's log_limit is 0).
    log: LogEntry | None
    #: The creation time of the dead letter, the replies and the log entry (the backend's clock).
    now: float


class SQLBackend(Backend):
    """A :class:`Backend` on a SQL database: the reads and simple writes, once for both.

    Subclasses set :attr:`placeholder`, create ``self._signals``, and give connections through
    :meth:`_read`, :meth:`_write` and :meth:`_write_one` (context managers that commit or roll
    back and turn driver errors into :class:`~flowplex.BackendError`).
    """

    #: Keys stored by enqueue_once in this object (when to prune the expired ones).
    _received = 0

    #: The driver's parameter marker.
    placeholder: ClassVar[str] = "?"
    #: The shared statements in the driver's style (set for each subclass).
    sql: ClassVar[dict[str, str]] = _QUERIES
    _signals: Signals
    clock: Clock = SYSTEM_CLOCK
    #: The database, and how messages name it (set by subclasses).
    _db: DatabaseURL
    _where: str
    _closed: bool
    #: Log entries written per instance since its last prune, in this process (set by
    #: subclasses: see :meth:`_add_log`).
    _log_writes: dict[str, int]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.sql = {name: q.replace("?", cls.placeholder) for name, q in _QUERIES.items()}

    @abstractmethod
    def _read(self) -> AbstractContextManager[Any]:
        """A connection for reading."""

    @abstractmethod
    def _write(self) -> AbstractContextManager[Any]:
        """A connection for one writing transaction."""

    @abstractmethod
    def _write_one(self) -> AbstractContextManager[Any]:
        """A connection for a single statement that only moves a lease or takes a reply (its
        own transaction; it need not wait for the disk, see the backends)."""

    @abstractmethod
    def _claim(
        self, dispatch_point: str, user_id: str | None, lease_seconds: float, limit: int, lease: str
    ) -> list[ClaimedRow]:
        """Lease up to ``limit`` (at least 1) messages under ``lease``, oldest first."""

    @abstractmethod
    def _complete(self, delivery: Delivery, outcome: Outcome) -> tuple[bool, list[str]]:
        """:meth:`complete`, with its arguments in ``outcome``."""

    @abstractmethod
    def _complete_many(
        self, items: Sequence[tuple[Delivery, Outcome]]
    ) -> list[tuple[bool, list[str]]]:
        """:meth:`complete_many` of two or more, in one transaction."""

    def claim(
        self, dispatch_point: str, user_id: str | None, lease_seconds: float, limit: int
    ) -> list[Delivery]:
        """Lease up to ``limit`` claimable messages of ``dispatch_point``, oldest first."""
        if limit <= 0:
            return []
        self._signals.remember(dispatch_point)
        lease = new_id()
        return [
            Delivery(seq, flow_id, body, deliveries, lease, instance)
            for seq, flow_id, body, deliveries, instance in self._claim(
                dispatch_point, user_id, lease_seconds, limit, lease
            )
        ]

    def complete(
        self,
        delivery: Delivery,
        *,
        state: dict[str, Any] | None,
        envelopes: Sequence[Envelope] = (),
        replies: Sequence[ReplyRecord] = (),
        dead_letter: DeadLetter | None = None,
        log: LogEntry | None = None,
    ) -> tuple[bool, list[str]]:
        """Acknowledge ``delivery`` atomically with its effects; ``(False, [])`` if the lease
        was lost (then nothing changes)."""
        now = self.clock.time()
        outcome = Outcome(state, envelopes, replies, dead_letter, log, now)
        return self._complete(delivery, outcome)

    def complete_many(self, completions: Sequence[Completion]) -> list[tuple[bool, list[str]]]:
        """Complete each of ``completions`` as :meth:`complete` would, all in one transaction
        (one commit, one disk flush); a lost lease fails that one alone."""
        if len(completions) < 2:
            return super().complete_many(completions)
        now = self.clock.time()
        return self._complete_many(
            [
                (c.delivery, Outcome(c.state, c.envelopes, c.replies, c.dead_letter, c.log, now))
                for c in completions
            ]
        )

    def _migrate_unless_current(self, conn: Any, db: DatabaseURL) -> None:
        """Bring the database to the newest schema, unless ``conn`` finds it there already
        (one query: opening a current database needs no Alembic)."""
        try:
            row = conn.execute(VERSION_QUERY).fetchone()
        except Exception as exc:
            if not is_driver_error(exc):
                raise
            row = None  # never migrated (no version table); ensure_schema reports the rest
        if row is None or row[0] != HEAD:
            ensure_schema(db)

    def _record(self, conn: Any, delivery: Delivery, outcome: Outcome) -> None:
        """Store the state, dead letter and log entry of ``delivery``, just acknowledged
        inside the caller's transaction (by the backend's own statement: the message goes
        only while the lease is still the caller's); no result is read."""
        if outcome.state is not None:
            conn.execute(self.sql["save_state"], (dumps(outcome.state), delivery.flow_id))
        if (d := outcome.dead_letter) is not None:
            params = (d.flow_id, d.body, d.error, d.deliveries, outcome.now)
            conn.execute(self.sql["add_dead"], params)
        if outcome.log is not None and self.log_limit > 0:
            self._add_log(conn, delivery.seq, outcome.log, outcome.now)

    def _add_log(self, conn: Any, seq: int, entry: LogEntry, now: float) -> None:
        """Add ``entry`` (for the message queued as ``seq``) to its instance's log, pruning the
        log to :attr:`log_limit` entries on every :data:`LOG_PRUNE_EVERY`-th write: most
        completions pay for the insert alone."""
        e, limit = entry, self.log_limit
        params = (e.flow_id, seq, cut(e.body), e.outcome, cut(e.reply), cut(e.error), e.deliveries)
        conn.execute(self.sql["add_log"], (*params, e.duration, now))
        # Counted per process without a lock: a lost count only moves a prune by one entry.
        writes = self._log_writes
        count = writes.get(e.flow_id, 0) + 1
        if count >= LOG_PRUNE_EVERY:
            conn.execute(self.sql["prune_log"], (e.flow_id, e.flow_id, limit))
            count = 0
        elif len(writes) >= _LOG_COUNTS_KEPT:
            writes.clear()  # bounded memory; the forgotten logs are pruned a little later
        writes[e.flow_id] = count

    def add_user(self, user: UserRecord) -> None:
        """Store a new user; ``DuplicateKeyError`` if the id exists already."""
        try:
            with self._write() as conn:
                params = (user.user_id, user.created_at)
                conn.execute(self.sql["add_user"], params)
        except DuplicateKeyError:
            raise DuplicateKeyError(f"user {user.user_id} exists already") from None

    def add_user_below(self, user: UserRecord, count: int) -> bool:
        """Store ``user`` only if there are fewer than ``count`` users (atomically)."""
        params = (user.user_id, user.created_at, count)
        with self._users_locked() as conn:
            return conn.execute(self.sql["add_user_below"], params).fetchone() is not None

    def _users_locked(self) -> AbstractContextManager[Any]:
        """A write transaction no other process adds a user in until it ends."""
        return self._write()

    def list_users(self) -> list[UserRecord]:
        """Every user, oldest first."""
        with self._read() as conn:
            rows = conn.execute(self.sql["list_users"]).fetchall()
        return [UserRecord(r[0], r[1]) for r in rows]

    def serve_endpoint(self, endpoint: EndpointRecord) -> bool:
        """Serve ``endpoint``: False (and no change) if it is already served, else True."""
        e = endpoint
        params = (
            e.user_id,
            e.endpoint,
            e.flow_class_name,
            e.singleton,
            e.parallel_dispatch,
            e.dispatch_point,
            e.created_at,
        )
        with self._write() as conn:
            return bool(conn.execute(self.sql["serve"], params).fetchall())

    def get_endpoint(self, user_id: str, endpoint: str) -> EndpointRecord | None:
        """The endpoint record, served or not, or None."""
        with self._read() as conn:
            row = conn.execute(self.sql["get_endpoint"], (user_id, endpoint)).fetchone()
        return None if row is None else _endpoint(row)

    def list_endpoints(self, user_id: str) -> list[EndpointRecord]:
        """The user's endpoints, in creation order."""
        with self._read() as conn:
            rows = conn.execute(self.sql["list_endpoints"], (user_id,)).fetchall()
        return [_endpoint(row) for row in rows]

    def set_served(self, user_id: str, endpoint: str, served: bool) -> bool:
        """Mark an endpoint served or not; False if it does not exist."""
        with self._write() as conn:
            cursor = conn.execute(self.sql["set_served"], (served, user_id, endpoint))
            return bool(cursor.rowcount > 0)

    def get_instance(self, flow_id: str) -> InstanceRecord | None:
        """The instance, or None."""
        with self._read() as conn:
            row = conn.execute(self.sql["get_instance"], (flow_id,)).fetchone()
        return None if row is None else instance_from_row(row)

    def list_instances(self, user_id: str, endpoint: str | None = None) -> list[InstanceRecord]:
        """Instances served by ``user_id`` (on ``endpoint`` if given), in mount order."""
        with self._read() as conn:
            if endpoint is None:
                rows = conn.execute(self.sql["list_instances"], (user_id,)).fetchall()
            else:
                query = self.sql["list_endpoint_instances"]
                rows = conn.execute(query, (user_id, endpoint)).fetchall()
        return [instance_from_row(row) for row in rows]

    def delete_instance(self, flow_id: str) -> bool:
        """Delete an instance; False if there was none. Its queued messages stay claimable."""
        with self._write() as conn:
            conn.execute(self.sql["forget_log"], (flow_id,))
            return bool(conn.execute(self.sql["delete_instance"], (flow_id,)).rowcount > 0)

    def pending_count(self, flow_id: str | None = None) -> int:
        """Messages queued or leased (for one instance, or in all)."""
        with self._read() as conn:
            if flow_id is None:
                row = conn.execute(self.sql["pending"]).fetchone()
            else:
                row = conn.execute(self.sql["pending_flow"], (flow_id,)).fetchone()
        return int(row[0])

    def list_dead_letters(self, flow_id: str | None = None) -> list[DeadLetter]:
        """Dead letters (of one instance, or all), oldest first."""
        with self._read() as conn:
            if flow_id is None:
                rows = conn.execute(self.sql["list_dead"]).fetchall()
            else:
                rows = conn.execute(self.sql["list_dead_flow"], (flow_id,)).fetchall()
        return [DeadLetter(r[0], r[1], r[2], r[3], r[4]) for r in rows]

    def peek_reply(self, future_id: str) -> str | None:
        """The reply body for ``future_id`` without removing it, or None."""
        with self._read() as conn:
            row = conn.execute(self.sql["peek_reply"], (future_id,)).fetchone()
        return None if row is None else str(row[0])

    def instance_stats(self, flow_ids: Sequence[str] | None = None) -> dict[str, InstanceStats]:
        """Queue depth, in-flight messages, dead letters and last error, by flow id."""
        with self._read() as conn:
            queues = conn.execute(self.sql["queue_stats"], (self.clock.time(),)).fetchall()
            dead = conn.execute(self.sql["dead_stats"]).fetchall()
            activity = conn.execute(self.sql["activity_stats"]).fetchall()
            errors = conn.execute(self.sql["error_stats"]).fetchall()
        found: dict[str, dict[str, Any]] = {}
        for flow_id, queued, in_flight in queues:
            found.setdefault(flow_id, {}).update(queued=int(queued), in_flight=int(in_flight or 0))
        for flow_id, count in dead:
            found.setdefault(flow_id, {})["dead_letters"] = int(count)
        for flow_id, at in activity:
            found.setdefault(flow_id, {})["last_activity"] = at
        for flow_id, error, at in errors:
            found.setdefault(flow_id, {}).update(last_error=error, last_error_at=at)
        wanted = found.keys() if flow_ids is None else flow_ids
        return {f: InstanceStats(f, **found.get(f, {})) for f in wanted}

    def message_log(self, flow_id: str, limit: int | None = None) -> list[LogEntry]:
        """The instance's logged messages, newest first (at most ``limit``)."""
        count = self.log_limit if limit is None else limit
        with self._read() as conn:
            rows = conn.execute(self.sql["read_log"], (flow_id, max(0, count))).fetchall()
        return [LogEntry(*row) for row in rows]

    def take_reply(self, future_id: str) -> str | None:
        """Remove and return the reply body for ``future_id``, or None if it has not arrived."""
        with self._write_one() as conn:
            row = conn.execute(self.sql["take_reply"], (future_id,)).fetchone()
        return None if row is None else str(row[0])

    def take_queued(self, flow_id: str) -> list[str]:
        """Remove the messages queued for ``flow_id`` that no worker holds; their bodies."""
        with self._write() as conn:
            rows = conn.execute(self.sql["take_queued"], (flow_id, self.clock.time())).fetchall()
        return [str(body) for _, body in sorted(rows)]

    def _has_reply(self, future_id: str) -> bool:
        with self._read() as conn:
            return conn.execute(self.sql["has_reply"], (future_id,)).fetchone() is not None

    @abstractmethod
    def _watch_others(self) -> None:
        """Start noticing other processes' commits (from the first wait on)."""

    @abstractmethod
    def _wait(self, wake: Callable[[float], bool], timeout: float) -> None:
        """Call ``wake(until)`` (a wait on :attr:`_signals` up to the monotonic ``until``; True
        once woken) until it wakes or ``timeout`` seconds pass, noticing other processes'
        commits meanwhile."""

    def wait_for_messages(self, dispatch_point: str, timeout: float) -> None:
        """Block until messages may be claimable at ``dispatch_point``, or ``timeout`` passes."""
        self._watch_others()
        signals = self._signals
        token = signals.message_token(dispatch_point)
        self._wait(lambda until: signals.wait_messages(dispatch_point, token, until), timeout)

    def wait_for_reply(self, future_id: str, timeout: float) -> None:
        """Block until the reply for ``future_id`` may have arrived, or ``timeout`` passes."""
        self._watch_others()
        signals = self._signals
        token = signals.everything_token()
        # The reply may have been committed before this process was watching.
        if signals.closed or self._has_reply(future_id):
            return
        self._wait(lambda until: signals.wait_reply(future_id, token, until), timeout)

    def _driver_error(self, exc: Exception) -> BackendError:
        """The flowplex error for the driver error ``exc`` (:func:`flowplex.db.translate_error`),
        or a plain "closed" if this backend was closed under the call."""
        if self._closed:
            return self._closed_error(f" ({exc})")
        return translate_error(exc, self._where)

    def _closed_error(self, detail: str = "") -> BackendError:
        return BackendError(f"this backend on {self._db} is closed{detail}")

    def wake(self) -> None:
        """Make this process's current waits return now."""
        self._signals.everything()


class Call(Generic[Conn]):
    """A pooled connection for one call of a SQL backend, as a context manager.

    Entering takes a connection (:meth:`_acquire`) and begins what the call needs
    (:meth:`_begin`); if beginning fails, :meth:`_abandon` gives everything back and a driver
    error becomes a flowplex error. Subclasses end the call in ``__exit__``.
    """

    __slots__ = ("_conn",)

    def _acquire(self) -> Conn:
        raise NotImplementedError

    def _begin(self, conn: Conn) -> None:
        """Begin the call's transaction, if it has one."""

    def _abandon(self, conn: Conn) -> None:
        raise NotImplementedError

    def _backend_of(self) -> SQLBackend:
        raise NotImplementedError

    def __enter__(self) -> Conn:
        conn = self._conn = self._acquire()
        try:
            self._begin(conn)
        except BaseException as exc:
            self._abandon(conn)
            if isinstance(exc, Exception) and is_driver_error(exc):
                raise self._backend_of()._driver_error(exc) from exc
            raise
        return conn


def instance_from_row(row: Sequence[Any], at: int = 0) -> InstanceRecord:
    """The record in ``row[at:at + 12]`` (``INSTANCE_COLUMNS``), with freshly parsed JSON."""
    return InstanceRecord(
        flow_id=row[at],
        user_id=row[at + 1],
        endpoint=row[at + 2],
        client_id=row[at + 3],
        flow_class_name=row[at + 4],
        config=json.loads(row[at + 5]),
        state=json.loads(row[at + 6]),
        state_version=row[at + 7],
        dispatch_point=row[at + 8],
        dispatch_point_override=row[at + 9],
        parallel_dispatch=bool(row[at + 10]),
        created_at=row[at + 11],
    )


def instance_params(r: InstanceRecord) -> tuple[Any, ...]:
    """The values of ``INSTANCE_COLUMNS`` for ``r``, config and state as JSON text."""
    return (
        r.flow_id,
        r.user_id,
        r.endpoint,
        r.client_id,
        r.flow_class_name,
        dumps(r.config),
        dumps(r.state),
        r.state_version,
        r.dispatch_point,
        r.dispatch_point_override,
        r.parallel_dispatch,
        r.created_at,
    )


def _endpoint(row: Sequence[Any]) -> EndpointRecord:
    # SQLite hands booleans back as 0/1.
    return EndpointRecord(
        user_id=row[0],
        endpoint=row[1],
        flow_class_name=row[2],
        singleton=bool(row[3]),
        parallel_dispatch=bool(row[4]),
        dispatch_point=row[5],
        served=bool(row[6]),
        created_at=row[7],
    )
