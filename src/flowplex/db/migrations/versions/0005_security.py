"""Users' private keys leave the shared tables: each goes to a key file (mode 0600).

Revision ID: 0005_security
Revises: 0004_dashboard
Create Date: 2026-12-03 00:00:00

The key files go to ``keys/<user id>.pem`` in the node's folder: beside a SQLite database
file, or the home (``FLOWPLEX_HOME``) of a PostgreSQL node. :func:`flowplex.db.ensure_schema`
says where (``keys_dir``); a key file already there with the same key is kept.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import sqlalchemy as sa
from alembic import context, op

revision: str = "0005_security"
down_revision: str | None = "0004_dashboard"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _keys_dir() -> Path:
    where = context.config.attributes.get("keys_dir")
    if where is not None:
        return Path(where)
    from flowplex.config import Settings

    return Settings.from_env().home / "keys"


def upgrade() -> None:
    """Write every user's private key to its key file, then drop the column."""
    from flowplex.errors import KeyFileError
    from flowplex.identity import KeyPair, load_key_pair, save_key_pair

    keys = _keys_dir()
    rows = op.get_bind().execute(sa.text("SELECT user_id, private_key FROM users")).fetchall()
    for user_id, private in rows:
        pair = KeyPair.from_private_key(bytes(private))
        if pair.user_id != user_id:
            continue  # a row whose key is not its user's: nothing worth keeping
        path = keys / f"{user_id}.pem"
        try:
            save_key_pair(path, pair)
        except KeyFileError:
            if load_key_pair(path) != pair:
                raise
    with op.batch_alter_table("users") as batch:
        batch.drop_column("private_key")


def downgrade() -> None:
    """Bring the column back, filled from the key files found (null for the others)."""
    from flowplex.errors import KeyFileError
    from flowplex.identity import load_key_pair

    with op.batch_alter_table("users") as batch:
        batch.add_column(sa.Column("private_key", sa.LargeBinary(), nullable=True))
    keys = _keys_dir()
    bind = op.get_bind()
    for (user_id,) in bind.execute(sa.text("SELECT user_id FROM users")).fetchall():
        try:
            pair = load_key_pair(keys / f"{user_id}.pem")
        except KeyFileError:
            continue
        bind.execute(
            sa.text("UPDATE users SET private_key = :k WHERE user_id = :u"),
            {"k": pair.private_key, "u": user_id},
        )
