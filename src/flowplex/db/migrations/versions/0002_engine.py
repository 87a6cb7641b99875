"""Task-graph engine runs (flowplex.engine): the ``engine_flows`` table.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-03 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Create the ``engine_flows`` table and its indexes."""
    op.create_table(
        "engine_flows",
        sa.Column("key", sa.String(length=255), nullable=False),
        sa.Column("label", sa.String(), nullable=True),
        sa.Column("status", sa.String(length=31), nullable=False),
        sa.Column("parent_key", sa.String(length=255), nullable=True),
        sa.Column("depth", sa.Integer(), nullable=False),
        sa.Column("cfg", sa.JSON(), nullable=False),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.Column("graph", sa.JSON(), nullable=False),
        sa.Column("num_tickable_tasks", sa.Integer(), nullable=False),
        sa.Column("claimed_by", sa.String(), nullable=True),
        sa.Column("lease_until", sa.Float(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("modified_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_engine_flows")),
    )
    op.create_index(
        op.f("ix_engine_flows_status_lease_until"), "engine_flows", ["status", "lease_until"]
    )
    op.create_index(op.f("ix_engine_flows_parent_key"), "engine_flows", ["parent_key"])
    op.create_index(op.f("ix_engine_flows_created_at"), "engine_flows", ["created_at"])


def downgrade() -> None:
    """Drop the ``engine_flows`` table (its indexes go with it)."""
    op.drop_table("engine_flows")
