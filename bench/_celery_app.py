"""The Celery app of the "celery+redis" peer (see ``_peers.py``), imported by its worker.

The broker and the result backend are the Redis at FLOWPLEX_BENCH_REDIS_URL; tasks go to the
queue FLOWPLEX_BENCH_CELERY_QUEUE (one per run, so runs never share a queue).
"""

from __future__ import annotations

import os
from typing import Any

from celery import Celery

_REDIS = os.environ.get("FLOWPLEX_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")

app = Celery("flowplex_bench", broker=_REDIS, backend=_REDIS)
app.conf.update(
    task_default_queue=os.environ.get("FLOWPLEX_BENCH_CELERY_QUEUE", "flowplex-bench"),
    # Results are read once, at once: they need not outlive the run.
    result_expires=600,
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)


@app.task
def reverse(data: dict[str, Any]) -> dict[str, Any]:
    """The ReverseNumber flow's work."""
    return {"output_number": int(str(data["number"])[::-1])}
