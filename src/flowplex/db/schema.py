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

On PostgreSQL, migration 0006_perf gives ``messages`` and ``instances`` free space on each page
(fillfactor 50), so the lease and state updates of every message stay on their page, and the
busy tables (those two, ``replies``, ``message_log``) are vacuumed after a fixed number of dead
rows: storage settings, which the metadata does not describe.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Identity,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    UniqueConstraint,
)

__all__ = [
    "dead_letters",
    "endpoints",
    "engine_flows",
    "instances",
    "message_log",
    "messages",
    "metadata",
    "opstore_links",
    "opstore_ops",
    "opstore_pipelines",
    "opstore_versions",
    "received",
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

# Keys of the messages and replies other nodes delivered over HTTP (migration 0007_network):
# a sender retries until it hears back, so the same delivery may arrive twice; its key goes in
# with what it queued, in one transaction, and a second arrival finds it and queues nothing.
received = Table(
    "received",
    metadata,
    Column("key", String, primary_key=True),
    Column("received_at", Float, nullable=False),
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

# The last messages each instance processed, for the dashboard (migration 0004_dashboard):
# written with the completion, pruned to the backend's log_limit per instance. Keyed by the
# instance and the message's queue seq (unique, and growing in queue order); reads and prunes
# walk the newest keys of one instance. A rowid table on SQLite, not WITHOUT ROWID: its rows
# (a message and its reply, near a kilobyte together) are slower to insert into the key's own
# b-tree than into a rowid table plus the key's index (an entry cost a SQLite complete() about
# 64 µs against 36 µs).
message_log = Table(
    "message_log",
    metadata,
    Column("flow_id", String, nullable=False),
    Column("seq", BigInteger, nullable=False),
    Column("body", Text, nullable=False),
    Column("outcome", String, nullable=False),
    Column("reply", Text, nullable=True),
    Column("error", Text, nullable=True),
    Column("deliveries", Integer, nullable=False),
    Column("duration", Float, nullable=False),
    Column("finished_at", Float, nullable=False),
    PrimaryKeyConstraint("flow_id", "seq"),
)


# -- task-graph engine runs (flowplex.engine; migration 0002) --------------------------------------
# One row per flow run. cfg, data and graph are the flow dict's parts, as JSON. A runner claims
# a row by setting claimed_by (a token per claim) and lease_until (epoch seconds; 0 when not
# claimed), so "claimable" is the single test lease_until <= now, and a runner that died loses
# its claim when the lease runs out.

engine_flows = Table(
    "engine_flows",
    metadata,
    Column("key", String(255), primary_key=True),
    Column("label", String, nullable=True),
    Column("status", String(31), nullable=False),
    Column("parent_key", String(255), nullable=True),
    Column("depth", Integer, nullable=False),
    Column("cfg", JSON, nullable=False),
    Column("data", JSON, nullable=False),
    Column("graph", JSON, nullable=False),
    Column("num_tickable_tasks", Integer, nullable=False),
    Column("claimed_by", String, nullable=True),
    Column("lease_until", Float, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("modified_at", Float, nullable=False),
    # The claim: unfinished flows whose lease has run out.
    Index(None, "status", "lease_until"),
    Index(None, "parent_key"),
    Index(None, "created_at"),
)


# -- op store (flowplex.artifacts; migration 0003) -------------------------------------------------
# Ops by name; versions numbered per op (the unique numbers catch two registrations that raced
# to the same number); a validated link says "this downstream op works with that upstream
# version"; a pipeline remembers its last op. Times are naive UTC.

opstore_ops = Table(
    "opstore_ops",
    metadata,
    Column("id", _Serial, Identity(), primary_key=True),
    Column("op_name", String, nullable=False, unique=True),
)

opstore_versions = Table(
    "opstore_versions",
    metadata,
    Column("id", _Serial, Identity(), primary_key=True),
    Column("op_id", _Serial, ForeignKey("opstore_ops.id"), nullable=False),
    Column("major_hash", String(40), nullable=False),
    Column("minor_hash", String(40), nullable=False),
    Column("patch_hash", String(40), nullable=False),
    Column("major_num", Integer, nullable=False),
    Column("minor_num", Integer, nullable=False),
    Column("patch_num", Integer, nullable=False),
    Column("created_at", DateTime, nullable=False),
    UniqueConstraint("op_id", "major_hash", "minor_hash", "patch_hash"),
    UniqueConstraint("op_id", "major_num", "minor_num", "patch_num"),
)

opstore_links = Table(
    "opstore_links",
    metadata,
    Column("id", _Serial, Identity(), primary_key=True),
    Column("downstream_op_id", _Serial, ForeignKey("opstore_ops.id"), nullable=False),
    Column("upstream_op_id", _Serial, ForeignKey("opstore_ops.id"), nullable=False),
    Column("upstream_version_id", _Serial, ForeignKey("opstore_versions.id"), nullable=False),
    UniqueConstraint("downstream_op_id", "upstream_version_id"),
    Index(None, "downstream_op_id", "upstream_op_id"),
)

opstore_pipelines = Table(
    "opstore_pipelines",
    metadata,
    Column("id", _Serial, Identity(), primary_key=True),
    Column("pipeline_name", String, nullable=False, unique=True),
    Column("last_op_id", _Serial, ForeignKey("opstore_ops.id"), nullable=False),
)
