"""The one SQLAlchemy engine factory and the one ``transaction()`` (flow store, op store,
migrations).

:func:`create_engine` opens its SQLite connections through :mod:`._connect`, so they are set
up as the runtime's backends set them up. On SQLite it applies the pysqlite recipe for real
transactions: the driver stays out of the way and each transaction starts with an explicit
``BEGIN``; :func:`transaction` makes it ``BEGIN IMMEDIATE`` for writers, which take the write lock
first (a read-then-write never fails half-way because another process started writing), while
readers and ORM sessions begin deferred and never block a writer. A volatile database
(``memory://``) is one in-memory SQLite connection (``StaticPool``) whose transactions take turns on
a lock (see :func:`_shared_memory`). JSON is strict on every database: PostgreSQL refuses NaN and
infinities, so SQLite must too (a run that stored on one database and not on the other would crash a
runner only on PostgreSQL).
"""

from __future__ import annotations

import functools
import json
import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import BackendError
from ._connect import MEMORY, connect_sqlite, import_psycopg, postgres_defaults
from ._errors import is_driver_error, translate_error
from ._url import DatabaseURL

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection, Engine

__all__ = ["create_engine", "transaction"]

_WRITE = "flowplex_write"
_STRICT_JSON = functools.partial(json.dumps, allow_nan=False)


@dataclass(frozen=True, slots=True)
class _EngineInfo:
    where: str
    lock: threading.RLock | None


_ENGINES: weakref.WeakKeyDictionary[Engine, _EngineInfo] = weakref.WeakKeyDictionary()


def create_engine(
    url: str | DatabaseURL,
    *,
    name: str = "the database",
    pooled: bool = True,
    foreign_keys: bool = True,
) -> Engine:
    """A SQLAlchemy engine on the database ``url`` names (see :class:`DatabaseURL`).

    ``name`` says what the database is to its user in error messages (``"the flow store"``: "the
    flow store at sqlite:///runs.db failed: ..."). ``pooled=False`` opens a connection per use and
    closes it after (migrations, one-shot commands). ``foreign_keys=False`` leaves SQLite's foreign
    keys unenforced (migrations). Raises :class:`~flowplex.errors.ConfigurationError` for a URL it
    does not accept; the database is first reached when a connection is needed.
    """
    import sqlalchemy
    from sqlalchemy.pool import NullPool, StaticPool

    db = DatabaseURL.parse(url)
    options: dict[str, Any] = {"json_serializer": _STRICT_JSON}
    if not pooled:
        options["poolclass"] = NullPool
    lock = None
    if db.kind == "memory":
        options["poolclass"] = StaticPool
        engine = sqlalchemy.create_engine(db.sqlalchemy_url, creator=_shared_memory, **options)
        lock = threading.RLock()
    elif db.kind == "sqlite":
        path = db.path
        assert path is not None
        engine = sqlalchemy.create_engine(
            db.sqlalchemy_url,
            creator=lambda: connect_sqlite(path, foreign_keys=foreign_keys),
            **options,
        )
        sqlalchemy.event.listen(engine, "begin", _sqlite_begin)
    else:
        import_psycopg()
        # SQLAlchemy connects itself here: its psycopg dialect hands the connection the JSON
        # adapters that apply json_serializer, which a creator function would leave out.
        options["connect_args"] = postgres_defaults(db)
        engine = sqlalchemy.create_engine(db.sqlalchemy_url, **options)
    _ENGINES[engine] = _EngineInfo(f"{name} at {db}", lock)
    return engine


def _shared_memory() -> Any:
    """The one connection of a volatile database. Everybody using it (the store's transactions,
    ORM sessions) shares it, so the driver manages its transactions as the stdlib does by
    default (a ``BEGIN`` before the first write, none for reads): explicit ``BEGIN``s from two
    users would collide, and there is no other process to take a lock against."""
    conn = connect_sqlite(MEMORY)
    conn.isolation_level = "DEFERRED"
    return conn


def _sqlite_begin(connection: Connection) -> None:
    # The driver opens no transaction (isolation_level=None): SQLAlchemy's begin does it here.
    write = connection.get_execution_options().get(_WRITE, False)
    connection.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")


@contextmanager
def transaction(
    engine: Engine, *, write: bool = True, error: type[BackendError] = BackendError
) -> Iterator[Connection]:
    """A connection in one transaction on ``engine``, committed when the block ends without an
    error and rolled back otherwise.

    ``write`` takes SQLite's write lock up front (``BEGIN IMMEDIATE``); readers pass False.
    Driver errors become flowplex errors on the way out: a unique violation a
    :class:`~flowplex.errors.DuplicateKeyError`, anything else an ``error`` (a
    :class:`~flowplex.errors.BackendError` unless a subclass is asked for). Other exceptions
    pass through unchanged.
    """
    info = _ENGINES.get(engine)
    lock = info.lock if info is not None else None
    if lock is not None:
        lock.acquire()
    try:
        with engine.connect() as conn:
            if write:
                conn.execution_options(**{_WRITE: True})
            with conn.begin():
                yield conn
    except Exception as exc:
        if not is_driver_error(exc):
            raise
        where = info.where if info is not None else f"the database at {engine.url!r}"
        raise translate_error(exc, where, error) from exc
    finally:
        if lock is not None:
            lock.release()
