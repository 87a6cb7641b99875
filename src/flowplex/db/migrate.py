"""Bring a node database to the current schema with Alembic, safely from several processes.

:func:`ensure_schema` is called by every SQL backend when it opens. A database already at
:data:`HEAD` costs one query through the plain driver: Alembic and SQLAlchemy are imported only
when there is something to migrate. Otherwise the upgrade runs in one transaction that first
takes a lock (``BEGIN IMMEDIATE`` on SQLite, a transaction-scoped advisory lock on PostgreSQL),
so processes starting together on a fresh database wait for each other instead of failing: the
second one finds the tables made and has nothing left to do.

The scripts live inside the package (``flowplex/db/migrations``), so this works from an
installed wheel as well as from a checkout.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit

from ..errors import BackendError, ConfigurationError

if TYPE_CHECKING:
    from alembic.config import Config
    from sqlalchemy.engine import Connection, Engine

__all__ = [
    "HEAD",
    "MIGRATIONS_DIR",
    "VERSION_QUERY",
    "alembic_config",
    "ensure_schema",
    "locked_connection",
    "redact_url",
    "sqlite_path",
]

#: The newest revision in ``migrations/versions``; a test checks it against Alembic's own head.
HEAD = "0004_dashboard"

#: Where the Alembic environment and revision scripts are.
MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"

#: Reads the revision a database is at (fails if it was never migrated).
VERSION_QUERY = "SELECT version_num FROM alembic_version"

_SQLITE_BUSY_TIMEOUT = 30.0
_PG_LOCK_NAME = "flowplex.migrate"


def ensure_schema(url: str) -> None:
    """Create or upgrade the tables of the database at ``url`` (``sqlite:///`` or PostgreSQL).

    Returns at once when the database is already at :data:`HEAD`. Raises
    :class:`~flowplex.errors.BackendError` if the database cannot be reached or migrated.
    """
    if _current_revision(url) == HEAD:
        return
    from alembic import command

    try:
        with locked_connection(url) as connection:
            config = alembic_config(url)
            config.attributes["connection"] = connection
            command.upgrade(config, "head")
    except BackendError:
        raise
    except Exception as exc:
        raise BackendError(f"cannot migrate the database at {redact_url(url)}: {exc}") from exc


def alembic_config(url: str) -> Config:
    """An Alembic configuration for the flowplex migrations, built in code (no ini file)."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    # ConfigParser interpolation would choke on a %-escaped URL (``%3D`` in options=...).
    config.set_main_option("sqlalchemy.url", _sqlalchemy_url(url).replace("%", "%%"))
    return config


@contextmanager
def locked_connection(url: str) -> Iterator[Connection]:
    """A SQLAlchemy connection inside a transaction that holds the migration lock.

    The transaction commits when the block ends without an error. Another process asking for
    the lock waits (SQLite: up to 30 s) until this one is done.
    """
    engine = _engine(url)
    try:
        with engine.begin() as connection:
            if connection.dialect.name == "postgresql":
                # Scoped to the current schema: tests (and tenants) migrate side by side.
                connection.exec_driver_sql(
                    "SELECT pg_advisory_xact_lock(hashtext(%(name)s || current_schema()))",
                    {"name": _PG_LOCK_NAME},
                )
            yield connection
    finally:
        engine.dispose()


def sqlite_path(url: str) -> Path:
    """The file a ``sqlite:///relative/path.db`` or ``sqlite:////absolute/path.db`` URL names.

    ``~`` is expanded. In-memory SQLite is refused: every connection would get its own empty
    database (use ``memory://`` instead).
    """
    scheme, sep, rest = url.partition("://")
    if scheme.lower() != "sqlite" or not sep or not rest.startswith("/"):
        raise ConfigurationError(
            f"invalid SQLite URL {url!r}: expected sqlite:///relative/path.db or "
            f"sqlite:////absolute/path.db"
        )
    raw = unquote(rest[1:].split("?", 1)[0])
    if raw in {"", ":memory:"}:
        raise ConfigurationError(
            f"invalid SQLite URL {url!r}: name a database file (use memory:// for a volatile "
            f"in-process backend)"
        )
    return Path(raw).expanduser()


def redact_url(url: str) -> str:
    """``url`` with its password (if any) replaced by ``***``, fit for error messages."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return url.split("://", 1)[0] + "://***"
    if not password:
        return url
    user = parts.username or ""
    host = parts.netloc.rpartition("@")[2]
    return parts._replace(netloc=f"{user}:***@{host}").geturl()


def _current_revision(url: str) -> str | None:
    """The revision the database is at, through the plain driver (None if never migrated)."""
    if _is_sqlite(url):
        import sqlite3

        path = sqlite_path(url)
        if not path.exists():
            return None
        try:
            conn = sqlite3.connect(path, timeout=_SQLITE_BUSY_TIMEOUT)
        except sqlite3.Error as exc:
            raise BackendError(f"cannot open the SQLite database {path}: {exc}") from exc
        try:
            row = conn.execute(VERSION_QUERY).fetchone()
        except sqlite3.Error:
            return None
        finally:
            conn.close()
        return None if row is None else str(row[0])
    import psycopg

    try:
        with psycopg.connect(_driver_url(url), autocommit=True) as pg:
            try:
                found = pg.execute(VERSION_QUERY).fetchone()
            except psycopg.errors.UndefinedTable:
                return None
    except psycopg.Error as exc:
        raise BackendError(f"cannot reach PostgreSQL at {redact_url(url)}: {exc}") from exc
    return None if found is None else str(found[0])


def _engine(url: str) -> Engine:
    from sqlalchemy import create_engine, event

    if not _is_sqlite(url):
        return create_engine(_sqlalchemy_url(url), poolclass=_null_pool())
    path = sqlite_path(url)
    path.parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(
        _sqlalchemy_url(url),
        poolclass=_null_pool(),
        connect_args={"timeout": _SQLITE_BUSY_TIMEOUT},
    )

    # The pysqlite recipe for real transactions: the driver stays out of the way and every
    # transaction starts with BEGIN IMMEDIATE, which takes the write lock up front. That lock
    # is the migration lock: a second process blocks on it, then sees the finished schema.
    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: object, _record: object) -> None:
        dbapi_connection.isolation_level = None  # type: ignore[attr-defined]

    @event.listens_for(engine, "begin")
    def _begin(connection: Connection) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def _null_pool() -> type:
    from sqlalchemy.pool import NullPool

    return NullPool


def _is_sqlite(url: str) -> bool:
    return url.split("://", 1)[0].lower() == "sqlite"


def _driver_url(url: str) -> str:
    """The URL as libpq takes it (``postgresql://``)."""
    scheme, _, rest = url.partition("://")
    if scheme.lower() in {"postgres", "postgresql+psycopg"}:
        return f"postgresql://{rest}"
    return url


def _sqlalchemy_url(url: str) -> str:
    if _is_sqlite(url):
        return f"sqlite:///{sqlite_path(url).resolve()}"
    return "postgresql+psycopg://" + _driver_url(url).partition("://")[2]
