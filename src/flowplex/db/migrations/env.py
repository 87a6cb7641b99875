"""Alembic environment for the node database.

:func:`flowplex.db.migrate.ensure_schema` hands over an open connection, already in a
transaction that holds the migration lock (``config.attributes["connection"]``). Without one
(a developer running ``alembic.command.revision(flowplex.db.migrate.alembic_config(url),
autogenerate=True)``), the URL in ``sqlalchemy.url`` is opened the same way.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection

from flowplex.db.migrate import locked_connection
from flowplex.db.schema import metadata


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        # SQLite cannot ALTER most things in place; batch mode copies the table instead.
        render_as_batch=connection.dialect.name == "sqlite",
        # The caller's transaction (and its lock) spans the whole upgrade on both databases.
        transactional_ddl=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def _main() -> None:
    connection = context.config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    url = context.config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("set sqlalchemy.url (or pass a connection) to run flowplex migrations")
    with locked_connection(url) as connection:
        _run(connection)


if context.is_offline_mode():
    raise RuntimeError("flowplex migrations run online only (they need the migration lock)")
_main()
