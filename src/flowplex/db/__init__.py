"""The node database: one SQLAlchemy ``MetaData`` for every table, and its Alembic migrations.

- :mod:`flowplex.db.schema` declares the tables on :data:`metadata`.
- :mod:`flowplex.db.migrate` upgrades a database to the newest revision
  (:func:`ensure_schema`), which every SQL backend does when it opens.

The SQL backends run their hot path on the plain drivers (``sqlite3``, ``psycopg``), not through
SQLAlchemy; so that opening one stays cheap, this package imports SQLAlchemy only when
:data:`metadata` is asked for or a migration has to run.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sqlalchemy import MetaData

    from .migrate import ensure_schema

    metadata: MetaData

__all__ = ["ensure_schema", "metadata"]


def __getattr__(name: str) -> Any:
    if name == "metadata":
        from .schema import metadata

        return metadata
    if name == "ensure_schema":
        from .migrate import ensure_schema

        return ensure_schema
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
