"""Storage settings for the tables every message churns through (PostgreSQL only).

A queued message is inserted, updated two or three times (made the head, leased) and deleted
within moments; each reply is inserted and deleted; each completion updates its instance's
row and adds to the message log, which is pruned. PostgreSQL keeps the old row versions until
a vacuum, and with full pages an update cannot stay on its page (a HOT update), so it adds
index entries too: a long backlog then walks ever more dead entries. Free space on each page
(``fillfactor``) keeps the lease and state updates on their page, and vacuuming after a fixed
number of dead rows (not a fraction of the table) keeps the dead entries few. SQLite rewrites
its pages in place and needs none of this.

Revision ID: 0006_perf
Revises: 0005_security
Create Date: 2026-12-03 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0006_perf"
down_revision: str | None = "0005_security"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_VACUUM_OFTEN = (
    "autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 1000, "
    "autovacuum_analyze_scale_factor = 0, autovacuum_analyze_threshold = 5000, "
    "autovacuum_vacuum_cost_delay = 0"
)
_RESET = (
    "autovacuum_vacuum_scale_factor, autovacuum_vacuum_threshold, "
    "autovacuum_analyze_scale_factor, autovacuum_analyze_threshold, "
    "autovacuum_vacuum_cost_delay"
)
#: Table -> fillfactor (None: left at the default, 100).
_TABLES = {"messages": 50, "instances": 50, "replies": None, "message_log": None}


def upgrade() -> None:
    """Set fillfactor and autovacuum thresholds on the busy tables."""
    if op.get_bind().dialect.name != "postgresql":
        return
    for table, fillfactor in _TABLES.items():
        settings = (
            _VACUUM_OFTEN if fillfactor is None else f"fillfactor = {fillfactor}, {_VACUUM_OFTEN}"
        )
        op.execute(f"ALTER TABLE {table} SET ({settings})")


def downgrade() -> None:
    """Back to the server's defaults."""
    if op.get_bind().dialect.name != "postgresql":
        return
    for table, fillfactor in _TABLES.items():
        settings = _RESET if fillfactor is None else f"fillfactor, {_RESET}"
        op.execute(f"ALTER TABLE {table} RESET ({settings})")
