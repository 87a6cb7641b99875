"""Opening a backend by its database URL."""

from __future__ import annotations

from .._clock import Clock
from ._backend import Backend

__all__ = ["open_backend"]


def open_backend(url: str, *, clock: Clock | None = None) -> Backend:
    """Open the backend a URL names, creating or migrating its schema as needed.

    ``memory://`` (in-process, volatile; ``sqlite://`` and ``sqlite:///:memory:`` mean the
    same), ``sqlite:///path/to/file.db`` (the embedded default) or
    ``postgresql://user@host:port/db`` (needs the ``postgres`` extra); see
    :class:`flowplex.db.DatabaseURL`. ``clock`` replaces the system clock for lease deadlines
    and timestamps (on PostgreSQL, leases otherwise follow the database server's clock).
    """
    from ..db import DatabaseURL, import_psycopg

    db = DatabaseURL.parse(url)
    if db.kind == "memory":
        from .memory import MemoryBackend

        return MemoryBackend(url, clock=clock)
    if db.kind == "sqlite":
        from .sqlite import SQLiteBackend

        return SQLiteBackend(db, clock=clock)
    import_psycopg()  # the install hint, if the postgres extra is missing
    from .postgres import PostgresBackend

    return PostgresBackend(db, clock=clock)
