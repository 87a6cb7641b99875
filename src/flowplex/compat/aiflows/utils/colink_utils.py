"""``aiflows.utils.colink_utils``: users on a fresh node, and the served-flow trees.

``start_colink_server()`` gave a new CoLink server and user; here it is a new user on a fresh
flowplex node, and the handle it returns is what every compat function takes as ``cl``.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from .... import serving as _serving
from ....runtime import Client, open_node

__all__ = [
    "print_flow_instances",
    "print_served_flows",
    "start_colink_server",
    "start_colink_server_with_users",
]

print_served_flows = _serving.print_served_flows
print_flow_instances = _serving.print_flow_instances


def start_colink_server(*, db: str | None = None, path: str | Path | None = None) -> Client:
    """A new user on a node, and its handle (see :func:`start_colink_server_with_users`)."""
    return start_colink_server_with_users(1, db=db, path=path)[0]


def start_colink_server_with_users(
    num_users: int = 1, *, db: str | None = None, path: str | Path | None = None
) -> list[Client]:
    """``num_users`` new users on one node, and their handles.

    The node is ``db`` (a database URL) with its files in ``path``; by default it is
    ``FLOWPLEX_DB`` when that is set, else a fresh SQLite database in a new temporary
    directory: like the server aiflows started, a node of its own.
    """
    if isinstance(num_users, bool) or not isinstance(num_users, int) or num_users < 1:
        raise ValueError(f"num_users must be a positive integer, got {num_users!r}.")
    if db is None and path is None:
        path = tempfile.mkdtemp(prefix="flowplex-")
    node = open_node(db, path)
    return [node.add_user() for _ in range(num_users)]
