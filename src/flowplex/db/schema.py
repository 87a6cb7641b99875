"""flowplex's one SQLAlchemy :class:`~sqlalchemy.MetaData` and the serving runtime's tables.

Every subsystem that keeps rows in the node database declares its tables on :data:`metadata`
and ships an Alembic migration for them (``flowplex/db/migrations/versions``); a test compares
the migrated database with this metadata so the two cannot drift apart.

The runtime tables mirror the records of :mod:`flowplex.runtime._backend`. ``messages`` copies
``dispatch_point``, ``user_id`` and ``parallel`` from its instance when it is queued, so a
message whose instance was deleted can still be claimed (and answered with an error), and the
claim query never joins. ``head`` marks the messages a claim may take: every message of a
parallel instance, and only the oldest one of any other instance. Keeping that flag on the row
lets a claim walk one index range instead of testing "is this the oldest of its instance" for
every queued message.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Float,
    Identity,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
)

__all__ = [
    "dead_letters",
    "endpoints",
    "instances",
    "messages",
    "metadata",
    "replies",
    "users",
]

#: The node database's metadata; every flowplex table lives here.
metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

# An auto-numbered key: BIGINT identity on PostgreSQL, the rowid alias on SQLite (only an
# ``INTEGER PRIMARY KEY`` column is one).
_Serial = BigInteger().with_variant(Integer(), "sqlite")

users = Table(
    "users",
    metadata,
    Column("user_id", String, primary_key=True),
    Column("private_key", LargeBinary, nullable=False),
    Column("created_at", Float, nullable=False),
)

endpoints = Table(
    "endpoints",
    metadata,
    Column("user_id", String, nullable=False),
    Column("endpoint", String, nullable=False),
    Column("flow_class_name", String, nullable=False),
    Column("singleton", Boolean, nullable=False),
    Column("parallel_dispatch", Boolean, nullable=False),
    Column("dispatch_point", String, nullable=False),
    Column("served", Boolean, nullable=False),
    Column("created_at", Float, nullable=False),
    PrimaryKeyConstraint("user_id", "endpoint"),
)

instances = Table(
    "instances",
    metadata,
    Column("flow_id", String, primary_key=True),
    Column("user_id", String, nullable=False),
    Column("endpoint", String, nullable=False),
    Column("client_id", String, nullable=False),
    Column("flow_class_name", String, nullable=False),
    Column("config", Text, nullable=False),
    Column("state", Text, nullable=False),
    Column("state_version", Integer, nullable=False),
    Column("dispatch_point", String, nullable=False),
    Column("dispatch_point_override", String, nullable=True),
    Column("parallel_dispatch", Boolean, nullable=False),
    Column("created_at", Float, nullable=False),
    Index(None, "user_id", "endpoint"),
)

messages = Table(
    "messages",
    metadata,
    Column("seq", _Serial, Identity(), primary_key=True),
    Column("flow_id", String, nullable=False),
    Column("body", Text, nullable=False),
    Column("dispatch_point", String, nullable=False),
    Column("user_id", String, nullable=False),
    Column("parallel", Boolean, nullable=False),
    Column("head", Boolean, nullable=False),
    Column("deliveries", Integer, nullable=False),
    Column("lease", String, nullable=True),
    # 0 when not leased, so "claimable" is the single test lease_until <= now.
    Column("lease_until", Float, nullable=False),
    # Per-instance order, the next head after a completion, pending counts.
    Index(None, "flow_id", "seq"),
    # The claim: the heads of one dispatch point, oldest first.
    Index(None, "dispatch_point", "head", "seq"),
    sqlite_autoincrement=True,
)

replies = Table(
    "replies",
    metadata,
    Column("future_id", String, primary_key=True),
    Column("body", Text, nullable=False),
    Column("created_at", Float, nullable=False),
    # Keyed by the future id alone: one b-tree to write instead of a table and its index.
    sqlite_with_rowid=False,
)

dead_letters = Table(
    "dead_letters",
    metadata,
    Column("id", _Serial, Identity(), primary_key=True),
    Column("flow_id", String, nullable=False),
    Column("body", Text, nullable=False),
    Column("error", Text, nullable=False),
    Column("deliveries", Integer, nullable=False),
    Column("created_at", Float, nullable=False),
    sqlite_autoincrement=True,
)
