"""Opening driver connections: every SQLite and PostgreSQL connection flowplex makes starts here.

The runtime's SQL backends keep pools of these raw connections for their hot path (a
SQLAlchemy pool checkout would cost tens of microseconds on a round trip of about a hundred
and fifty); the SQLAlchemy engines of :mod:`._engine` use the same functions as their
``creator``. So the SQLite settings are written once:

- ``isolation_level=None``: the driver never opens transactions by itself; callers say
  ``BEGIN IMMEDIATE`` (take the write lock first, so a write never fails half-way on a lock)
  or ``BEGIN``.
- WAL journal (readers never block the writer), ``synchronous=NORMAL`` (a commit costs no
  fsync; the last commits may be lost in a power cut, never the file), a busy timeout of
  :data:`SQLITE_BUSY_TIMEOUT` seconds, foreign keys enforced.

Failures to connect raise :class:`~flowplex.errors.BackendError` through the one translator.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from ..errors import BackendError, ConfigurationError
from ._errors import translate_error
from ._url import DatabaseURL

if TYPE_CHECKING:
    import sqlite3

    import psycopg

__all__ = ["SQLITE_BUSY_TIMEOUT", "connect_postgres", "connect_sqlite", "import_psycopg"]

#: How long a SQLite statement waits for another connection's lock before failing (seconds).
SQLITE_BUSY_TIMEOUT = 30.0

MEMORY = ":memory:"
#: How flowplex's PostgreSQL connections name themselves (``pg_stat_activity``).
APPLICATION_NAME = "flowplex"


def connect_sqlite(
    path: Path | str, *, cached_statements: int = 128, foreign_keys: bool = True
) -> sqlite3.Connection:
    """A connection to the SQLite file ``path`` (or ``":memory:"``) with flowplex's settings.

    Missing parent directories are created. Usable from any thread (callers serialize their
    own use). ``foreign_keys=False`` is for migrations, which may copy tables that others
    reference.
    """
    import sqlite3

    where = "the in-memory SQLite database" if path == MEMORY else f"the SQLite database {path}"
    if path != MEMORY:
        try:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise BackendError(f"cannot create the directory of {path}: {exc}") from exc
    try:
        conn = sqlite3.connect(
            path,
            timeout=SQLITE_BUSY_TIMEOUT,
            isolation_level=None,
            check_same_thread=False,
            cached_statements=cached_statements,
        )
    except sqlite3.Error as exc:
        raise translate_error(exc, where) from exc
    try:
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute(f"PRAGMA foreign_keys = {'ON' if foreign_keys else 'OFF'}")
        if path != MEMORY and conn.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
            _switch_to_wal(conn)
    except sqlite3.Error as exc:
        conn.close()
        raise translate_error(exc, where) from exc
    return conn


def _switch_to_wal(conn: sqlite3.Connection) -> None:
    """Put a new database file in WAL mode (a setting kept in the file: once is enough).

    Switching needs the file to itself and fails at once, without the busy handler, while
    another process holds a lock on it (processes opening a fresh file together, one of them
    migrating it), so retry for as long as the busy timeout.
    """
    import sqlite3

    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT
    while True:
        try:
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
        else:
            if mode.lower() == "wal":
                return
            if time.monotonic() > deadline:
                raise sqlite3.OperationalError(f"cannot switch to WAL mode (still {mode})")
        time.sleep(0.01)


def import_psycopg() -> Any:
    """The psycopg module; :class:`ConfigurationError` with the install hint if it is missing."""
    try:
        import psycopg
    except ImportError as exc:  # pragma: no cover - depends on the installed extras
        raise ConfigurationError(
            f"PostgreSQL support needs the postgres extra: pip install 'flowplex[postgres]' ({exc})"
        ) from exc
    return psycopg


def postgres_defaults(url: DatabaseURL) -> dict[str, str]:
    """Connection parameters flowplex sets unless the URL sets them itself: the
    ``application_name``."""
    named = parse_qs(urlsplit(url.conninfo).query)
    return {} if "application_name" in named else {"application_name": APPLICATION_NAME}


def connect_postgres(url: DatabaseURL, **options: Any) -> psycopg.Connection[Any]:
    """A psycopg connection to the PostgreSQL database ``url`` names.

    ``options`` go to :func:`psycopg.connect` (``autocommit``, ``prepare_threshold``, ...);
    ``application_name`` defaults to ``flowplex`` (unless the URL names one). A failure names the
    URL without its password.
    """
    import_psycopg()
    import psycopg

    for key, value in postgres_defaults(url).items():
        options.setdefault(key, value)
    try:
        return psycopg.connect(url.conninfo, **options)
    except psycopg.Error as exc:
        raise translate_error(exc, f"the database at {url}") from exc
