"""Messages received from other nodes over HTTP, by key, so a retried delivery is taken once.

Revision ID: 0007_network
Revises: 0006_perf
Create Date: 2026-12-03 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007_network"
down_revision: str | None = "0006_perf"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Create the table of received message keys."""
    op.create_table(
        "received",
        sa.Column("key", sa.String(), nullable=False),
        sa.Column("received_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_received")),
        sqlite_with_rowid=False,
    )


def downgrade() -> None:
    """Drop the table of received message keys."""
    op.drop_table("received")
