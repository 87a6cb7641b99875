"""What the SQLite and PostgreSQL backends share: row decoding."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from ..runtime._backend import InstanceRecord

__all__ = ["INSTANCE_COLUMNS", "instance_from_row"]

#: The ``instances`` columns in the order :func:`instance_from_row` reads them.
INSTANCE_COLUMNS = (
    "flow_id, user_id, endpoint, client_id, flow_class_name, config, state, state_version, "
    "dispatch_point, dispatch_point_override, parallel_dispatch, created_at"
)

def instance_from_row(row: Sequence[Any], at: int = 0) -> InstanceRecord:
    """The record in ``row[at:at + 12]`` (``INSTANCE_COLUMNS``), with freshly parsed JSON."""
    return InstanceRecord(
        flow_id=row[at],
        user_id=row[at + 1],
        endpoint=row[at + 2],
        client_id=row[at + 3],
        flow_class_name=row[at + 4],
        config=json.loads(row[at + 5]),
        state=json.loads(row[at + 6]),
        state_version=row[at + 7],
        dispatch_point=row[at + 8],
        dispatch_point_override=row[at + 9],
        parallel_dispatch=bool(row[at + 10]),
        created_at=row[at + 11],
    )
