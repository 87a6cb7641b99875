"""The serving runtime's tables: users, endpoints, instances, messages, replies, dead letters.

Revision ID: 0001
Revises:
Create Date: 2025-01-01 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# BIGINT identity on PostgreSQL, the rowid alias on SQLite.
_SERIAL = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    """Create the runtime tables."""
    op.create_table(
        "users",
        sa.Column("user_id", sa.String(), nullable=False),
        sa.Column("private_key", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("user_id", name=op.f("pk_users")),
    )
    op.create_table(
        "endpoints",
        sa.Column("user_id", sa.String(), nullable=False),
        sa.Column("endpoint", sa.String(), nullable=False),
        sa.Column("flow_class_name", sa.String(), nullable=False),
        sa.Column("singleton", sa.Boolean(), nullable=False),
        sa.Column("parallel_dispatch", sa.Boolean(), nullable=False),
        sa.Column("dispatch_point", sa.String(), nullable=False),
        sa.Column("served", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("user_id", "endpoint", name=op.f("pk_endpoints")),
    )
    op.create_table(
        "instances",
        sa.Column("flow_id", sa.String(), nullable=False),
        sa.Column("user_id", sa.String(), nullable=False),
        sa.Column("endpoint", sa.String(), nullable=False),
        sa.Column("client_id", sa.String(), nullable=False),
        sa.Column("flow_class_name", sa.String(), nullable=False),
        sa.Column("config", sa.Text(), nullable=False),
        sa.Column("state", sa.Text(), nullable=False),
        sa.Column("state_version", sa.Integer(), nullable=False),
        sa.Column("dispatch_point", sa.String(), nullable=False),
        sa.Column("dispatch_point_override", sa.String(), nullable=True),
        sa.Column("parallel_dispatch", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("flow_id", name=op.f("pk_instances")),
    )
    op.create_index(op.f("ix_instances_user_id_endpoint"), "instances", ["user_id", "endpoint"])
    op.create_table(
        "messages",
        sa.Column("seq", _SERIAL, sa.Identity(), nullable=False),
        sa.Column("flow_id", sa.String(), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("dispatch_point", sa.String(), nullable=False),
        sa.Column("user_id", sa.String(), nullable=False),
        sa.Column("parallel", sa.Boolean(), nullable=False),
        sa.Column("head", sa.Boolean(), nullable=False),
        sa.Column("deliveries", sa.Integer(), nullable=False),
        sa.Column("lease", sa.String(), nullable=True),
        sa.Column("lease_until", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_messages")),
        sqlite_autoincrement=True,
    )
    op.create_index(op.f("ix_messages_flow_id_seq"), "messages", ["flow_id", "seq"])
    op.create_index(
        op.f("ix_messages_dispatch_point_head_seq"),
        "messages",
        ["dispatch_point", "head", "seq"],
    )
    op.create_table(
        "replies",
        sa.Column("future_id", sa.String(), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("future_id", name=op.f("pk_replies")),
        sqlite_with_rowid=False,
    )
    op.create_table(
        "dead_letters",
        sa.Column("id", _SERIAL, sa.Identity(), nullable=False),
        sa.Column("flow_id", sa.String(), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("error", sa.Text(), nullable=False),
        sa.Column("deliveries", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_dead_letters")),
        sqlite_autoincrement=True,
    )


def downgrade() -> None:
    """Drop the runtime tables."""
    for table in ("dead_letters", "replies", "messages", "instances", "endpoints", "users"):
        op.drop_table(table)
