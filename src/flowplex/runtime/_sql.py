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
from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import Any, ClassVar

from .._clock import SYSTEM_CLOCK, Clock
from .._json import dumps
from ..errors import DuplicateKeyError
from ._backend import Backend, DeadLetter, Delivery, EndpointRecord, InstanceRecord, UserRecord
from ._signals import Signals

__all__ = [
    "INSTANCE_COLUMNS",
    "SQLBackend",
    "completion",
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
    "add_user": "INSERT INTO users (user_id, private_key, created_at) VALUES (?, ?, ?)",
    "list_users": "SELECT user_id, private_key, created_at FROM users ORDER BY created_at, user_id",
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
    "has_reply": "SELECT 1 FROM replies WHERE future_id = ?",
    "peek_reply": "SELECT body FROM replies WHERE future_id = ?",
    "take_reply": "DELETE FROM replies WHERE future_id = ? RETURNING body",
    # Completion: the message goes only while the lease is still the caller's.
    "ack": "DELETE FROM messages WHERE seq = ? AND lease = ? RETURNING parallel, dispatch_point",
    "save_state": (
        "UPDATE instances SET state = ?, state_version = state_version + 1 WHERE flow_id = ?"
    ),
    "add_dead": (
        "INSERT INTO dead_letters (flow_id, body, error, deliveries, created_at) "
        "VALUES (?, ?, ?, ?, ?)"
    ),
}


class SQLBackend(Backend):
    """A :class:`Backend` on a SQL database: the reads and simple writes, once for both.

    Subclasses set :attr:`placeholder`, create ``self._signals``, and give connections through
    :meth:`_read`, :meth:`_write` and :meth:`_write_one` (context managers that commit or roll
    back and turn driver errors into :class:`~flowplex.BackendError`).
    """

    #: The driver's parameter marker.
    placeholder: ClassVar[str] = "?"
    #: The shared statements in the driver's style (set for each subclass).
    sql: ClassVar[dict[str, str]] = _QUERIES
    _signals: Signals
    clock: Clock = SYSTEM_CLOCK

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

    def add_user(self, user: UserRecord) -> None:
        """Store a new user; ``DuplicateKeyError`` if the id exists already."""
        try:
            with self._write() as conn:
                params = (user.user_id, user.private_key, user.created_at)
                conn.execute(self.sql["add_user"], params)
        except DuplicateKeyError:
            raise DuplicateKeyError(f"user {user.user_id} exists already") from None

    def list_users(self) -> list[UserRecord]:
        """Every user, oldest first."""
        with self._read() as conn:
            rows = conn.execute(self.sql["list_users"]).fetchall()
        return [UserRecord(r[0], bytes(r[1]), r[2]) for r in rows]

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

    def take_reply(self, future_id: str) -> str | None:
        """Remove and return the reply body for ``future_id``, or None if it has not arrived."""
        with self._write_one() as conn:
            row = conn.execute(self.sql["take_reply"], (future_id,)).fetchone()
        return None if row is None else str(row[0])

    def _has_reply(self, future_id: str) -> bool:
        with self._read() as conn:
            return conn.execute(self.sql["has_reply"], (future_id,)).fetchone() is not None

    def wake(self) -> None:
        """Make this process's current waits return now."""
        self._signals.everything()


def completion(
    conn: Any,
    sql: dict[str, str],
    delivery: Delivery,
    state: dict[str, Any] | None,
    dead_letter: DeadLetter | None,
    now: float,
) -> Any:
    """Acknowledge ``delivery`` and store its state and dead letter, inside the caller's
    transaction; the acknowledged row ``(parallel, dispatch_point)``, or None if the lease was
    lost (then the caller rolls back, or has changed nothing)."""
    acked = conn.execute(sql["ack"], (delivery.seq, delivery.lease)).fetchone()
    if acked is None:
        return None
    if state is not None:
        conn.execute(sql["save_state"], (dumps(state), delivery.flow_id))
    if dead_letter is not None:
        d = dead_letter
        conn.execute(sql["add_dead"], (d.flow_id, d.body, d.error, d.deliveries, now))
    return acked


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
