"""``aiflows.workers``: dispatch workers with aiflows' arguments and default dispatch point.

``api_infos`` fill the config values ``"api_infos": "???"`` of the flows a worker runs, at run
time and never stored (flowplex's worker ``secrets``, keyed ``"api_infos"``).
``flow_modules_base_path`` is put on the import path, where flow classes are looked up.
"""

from __future__ import annotations

import sys
from typing import Any

from ... import workers as _workers
from ...runtime import Client, DispatchWorker
from .utils.serving import DEFAULT_DISPATCH_POINT

__all__ = [
    "run_dispatch_worker_thread",
    "run_dispatch_worker_threads",
    "run_get_instance_worker_thread",
]

run_get_instance_worker_thread = _workers.run_get_instance_worker_thread


def run_dispatch_worker_thread(
    cl: Client,
    dispatch_point: str = DEFAULT_DISPATCH_POINT,
    flow_modules_base_path: str = "",
    api_infos: Any = None,
) -> DispatchWorker:
    """Start a worker thread running ``cl``'s messages at ``dispatch_point``; return it."""
    if not isinstance(flow_modules_base_path, str):
        raise TypeError(
            f"flow_modules_base_path must be a directory path, got {flow_modules_base_path!r}."
        )
    if flow_modules_base_path and flow_modules_base_path not in sys.path:
        sys.path.append(flow_modules_base_path)
    secrets = None if api_infos is None else {"api_infos": api_infos}
    return _workers.run_dispatch_worker_thread(cl, dispatch_point, secrets)


def run_dispatch_worker_threads(
    cl: Client,
    num_workers: int,
    dispatch_point: str = DEFAULT_DISPATCH_POINT,
    flow_modules_base_path: str = "",
    api_infos: Any = None,
) -> list[DispatchWorker]:
    """Start ``num_workers`` worker threads (see :func:`run_dispatch_worker_thread`)."""
    if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 1:
        raise ValueError(f"num_workers must be a positive integer, got {num_workers!r}.")
    return [
        run_dispatch_worker_thread(cl, dispatch_point, flow_modules_base_path, api_infos)
        for _ in range(num_workers)
    ]
