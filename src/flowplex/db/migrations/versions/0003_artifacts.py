"""Op store (flowplex.artifacts): ops, numbered versions, validated links, pipelines.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-03 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# BIGINT identity on PostgreSQL, the rowid alias on SQLite.
_SERIAL = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    """Create the op store tables."""
    op.create_table(
        "opstore_ops",
        sa.Column("id", _SERIAL, sa.Identity(), nullable=False),
        sa.Column("op_name", sa.String(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_opstore_ops")),
        sa.UniqueConstraint("op_name", name=op.f("uq_opstore_ops_op_name")),
    )
    op.create_table(
        "opstore_versions",
        sa.Column("id", _SERIAL, sa.Identity(), nullable=False),
        sa.Column("op_id", _SERIAL, nullable=False),
        sa.Column("major_hash", sa.String(length=40), nullable=False),
        sa.Column("minor_hash", sa.String(length=40), nullable=False),
        sa.Column("patch_hash", sa.String(length=40), nullable=False),
        sa.Column("major_num", sa.Integer(), nullable=False),
        sa.Column("minor_num", sa.Integer(), nullable=False),
        sa.Column("patch_num", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["op_id"], ["opstore_ops.id"], name=op.f("fk_opstore_versions_op_id_opstore_ops")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_opstore_versions")),
        sa.UniqueConstraint(
            "op_id",
            "major_hash",
            "minor_hash",
            "patch_hash",
            name=op.f("uq_opstore_versions_op_id_major_hash_minor_hash_patch_hash"),
        ),
        sa.UniqueConstraint(
            "op_id",
            "major_num",
            "minor_num",
            "patch_num",
            name=op.f("uq_opstore_versions_op_id_major_num_minor_num_patch_num"),
        ),
    )
    op.create_table(
        "opstore_links",
        sa.Column("id", _SERIAL, sa.Identity(), nullable=False),
        sa.Column("downstream_op_id", _SERIAL, nullable=False),
        sa.Column("upstream_op_id", _SERIAL, nullable=False),
        sa.Column("upstream_version_id", _SERIAL, nullable=False),
        sa.ForeignKeyConstraint(
            ["downstream_op_id"],
            ["opstore_ops.id"],
            name=op.f("fk_opstore_links_downstream_op_id_opstore_ops"),
        ),
        sa.ForeignKeyConstraint(
            ["upstream_op_id"],
            ["opstore_ops.id"],
            name=op.f("fk_opstore_links_upstream_op_id_opstore_ops"),
        ),
        sa.ForeignKeyConstraint(
            ["upstream_version_id"],
            ["opstore_versions.id"],
            name=op.f("fk_opstore_links_upstream_version_id_opstore_versions"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_opstore_links")),
        sa.UniqueConstraint(
            "downstream_op_id",
            "upstream_version_id",
            name=op.f("uq_opstore_links_downstream_op_id_upstream_version_id"),
        ),
    )
    op.create_index(
        op.f("ix_opstore_links_downstream_op_id_upstream_op_id"),
        "opstore_links",
        ["downstream_op_id", "upstream_op_id"],
    )
    op.create_table(
        "opstore_pipelines",
        sa.Column("id", _SERIAL, sa.Identity(), nullable=False),
        sa.Column("pipeline_name", sa.String(), nullable=False),
        sa.Column("last_op_id", _SERIAL, nullable=False),
        sa.ForeignKeyConstraint(
            ["last_op_id"],
            ["opstore_ops.id"],
            name=op.f("fk_opstore_pipelines_last_op_id_opstore_ops"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_opstore_pipelines")),
        sa.UniqueConstraint("pipeline_name", name=op.f("uq_opstore_pipelines_pipeline_name")),
    )


def downgrade() -> None:
    """Drop the op store tables."""
    op.drop_index(op.f("ix_opstore_links_downstream_op_id_upstream_op_id"), "opstore_links")
    for table in ("opstore_pipelines", "opstore_links", "opstore_versions", "opstore_ops"):
        op.drop_table(table)
