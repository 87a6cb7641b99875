"""Bring a node database to the current schema with Alembic, safely from several processes.

:func:`ensure_schema` is called by every SQL backend when it opens. A database already at
:data:`HEAD` costs one query through the plain driver: Alembic is imported only when there is
something to migrate. Otherwise the upgrade runs in one transaction that first
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

from ..errors import BackendError, ConfigurationError
from ._connect import connect_postgres, connect_sqlite
from ._engine import create_engine, transaction
from ._errors import translate_error
from ._url import DatabaseURL

if TYPE_CHECKING:
    from alembic.config import Config
    from sqlalchemy.engine import Connection

__all__ = [
    "HEAD",
    "MIGRATIONS_DIR",
    "VERSION_QUERY",
    "alembic_config",
    "current_revision",
    "ensure_schema",
    "keys_dir",
    "locked_connection",
]

#: The newest revision in ``migrations/versions``; a test checks it against Alembic's own head.
HEAD = "0007_network"

#: Where the Alembic environment and revision scripts are.
MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"

#: Reads the revision a database is at (fails if it was never migrated).
VERSION_QUERY = "SELECT version_num FROM alembic_version"

_PG_LOCK_NAME = "flowplex.migrate"


def ensure_schema(url: str | DatabaseURL) -> None:
    """Create or upgrade the tables of the database at ``url`` (a SQLite file or PostgreSQL).

    Returns at once when the database is already at :data:`HEAD`. Raises
    :class:`~flowplex.errors.BackendError` if the database cannot be reached or migrated, and
    :class:`~flowplex.errors.ConfigurationError` for a volatile URL (nothing to migrate: the
    SQL stores create their tables in memory themselves).
    """
    db = _durable(url)
    if current_revision(db) == HEAD:
        return
    from alembic import command

    try:
        with locked_connection(db) as connection:
            config = alembic_config(db)
            config.attributes["connection"] = connection
            config.attributes["keys_dir"] = keys_dir(db)
            command.upgrade(config, "head")
    except BackendError:
        raise
    except Exception as exc:
        raise BackendError(f"cannot migrate the database at {db}: {exc}") from exc


def keys_dir(url: str | DatabaseURL) -> Path:
    """Where the users' key files of the node on ``url`` live: ``keys`` beside a SQLite file,
    or in the home (``FLOWPLEX_HOME``) of a PostgreSQL node."""
    db = DatabaseURL.parse(url)
    if db.path is not None:
        return db.path.parent / "keys"
    from ..config import Settings

    return Settings.from_env().home / "keys"


def alembic_config(url: str | DatabaseURL) -> Config:
    """An Alembic configuration for the flowplex migrations, built in code (no ini file)."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    # ConfigParser interpolation would choke on a %-escaped URL (``%3D`` in options=...).
    config.set_main_option(
        "sqlalchemy.url", DatabaseURL.parse(url).sqlalchemy_url.replace("%", "%%")
    )
    return config


@contextmanager
def locked_connection(url: str | DatabaseURL) -> Iterator[Connection]:
    """A SQLAlchemy connection inside a transaction that holds the migration lock.

    The transaction commits when the block ends without an error. Another process asking for
    the lock waits (SQLite: for the busy timeout) until this one is done. On SQLite the lock
    is the write lock that ``BEGIN IMMEDIATE`` takes: a second process blocks on it, then sees
    the finished schema.
    """
    engine = create_engine(_durable(url), pooled=False, foreign_keys=False)
    try:
        with transaction(engine) as connection:
            if connection.dialect.name == "postgresql":
                # Scoped to the current schema: tests (and tenants) migrate side by side.
                connection.exec_driver_sql(
                    "SELECT pg_advisory_xact_lock(hashtext(%(name)s || current_schema()))",
                    {"name": _PG_LOCK_NAME},
                )
            yield connection
    finally:
        engine.dispose()


def current_revision(url: str | DatabaseURL) -> str | None:
    """The revision the database is at, through the plain driver (None if never migrated)."""
    db = _durable(url)
    if db.kind == "sqlite":
        import sqlite3

        assert db.path is not None
        if not db.path.exists():
            return None
        conn = connect_sqlite(db.path)
        try:
            row = conn.execute(VERSION_QUERY).fetchone()
        except sqlite3.Error:
            return None
        finally:
            conn.close()
        return None if row is None else str(row[0])
    import psycopg

    try:
        with connect_postgres(db, autocommit=True) as pg:
            try:
                found = pg.execute(VERSION_QUERY).fetchone()
            except psycopg.errors.UndefinedTable:
                return None
    except psycopg.Error as exc:
        raise translate_error(exc, f"the database at {db}") from exc
    return None if found is None else str(found[0])


def _durable(url: str | DatabaseURL) -> DatabaseURL:
    db = DatabaseURL.parse(url)
    if db.volatile:
        raise ConfigurationError(
            f"{db} is a volatile database: there is no schema to migrate (name a SQLite file "
            f"or a PostgreSQL database)."
        )
    return db
