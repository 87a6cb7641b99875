"""The node database: what a URL means, how it is opened, its schema and its migrations.

- :class:`DatabaseURL`: one meaning for ``memory://``, SQLite files and PostgreSQL URLs.
- :func:`create_engine` and :func:`transaction`: the SQLAlchemy engine every SQL store uses
  (flow store, op store, migrations) and its one transaction, which turns driver errors into
  :class:`~flowplex.errors.BackendError` / :class:`~flowplex.errors.DuplicateKeyError`
  (:func:`translate_error`, also used by the runtime's raw-driver backends).
- :func:`connect_sqlite`, :func:`connect_postgres`: every driver connection starts there.
- :data:`metadata` (:mod:`flowplex.db.schema`) declares the tables; :func:`ensure_schema`
  (:mod:`flowplex.db.migrate`) upgrades a database to the newest revision, which every SQL
  backend does when it opens.

Everything here is imported on first use, so ``import flowplex`` loads neither SQLAlchemy nor
a driver.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sqlalchemy import MetaData

    from ._connect import SQLITE_BUSY_TIMEOUT, connect_postgres, connect_sqlite, import_psycopg
    from ._engine import create_engine, transaction
    from ._errors import is_driver_error, is_retryable, translate_error
    from ._url import DatabaseURL, redact
    from .migrate import ensure_schema, keys_dir

    metadata: MetaData

__all__ = [
    "SQLITE_BUSY_TIMEOUT",
    "DatabaseURL",
    "connect_postgres",
    "connect_sqlite",
    "create_engine",
    "ensure_schema",
    "import_psycopg",
    "is_driver_error",
    "is_retryable",
    "keys_dir",
    "metadata",
    "redact",
    "transaction",
    "translate_error",
]

_HOMES = {
    "SQLITE_BUSY_TIMEOUT": "._connect",
    "DatabaseURL": "._url",
    "connect_postgres": "._connect",
    "connect_sqlite": "._connect",
    "create_engine": "._engine",
    "ensure_schema": ".migrate",
    "import_psycopg": "._connect",
    "is_driver_error": "._errors",
    "is_retryable": "._errors",
    "keys_dir": ".migrate",
    "metadata": ".schema",
    "redact": "._url",
    "transaction": "._engine",
    "translate_error": "._errors",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(home, __name__), name)
