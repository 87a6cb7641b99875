"""The op store (flowplex.artifacts): 1 MB artifacts saved and loaded, version registrations.

The HTTP scenarios go through ``OpStoreClient`` to a real uvicorn server on 127.0.0.1; the
"in-process" one calls the store directly. Each runs on a SQLite file and (when
FLOWPLEX_BENCH_POSTGRES_URL or FLOWPLEX_TEST_POSTGRES_URL is set) on PostgreSQL, in a
scratch schema. One operation moves one 1 MB artifact, so for the "MB/s" scenarios
``per_sec`` is megabytes per second:

- "stream put/get": the native streaming routes (``PUT``/``GET /v1/op_bytes``);
- "b64 save/load": the seed's JSON routes (``save_op_bytes``/``get_op_bytes_for_version``);
- "registrations/s": ``register_valid_link`` of a new version (numbered, linked) each time.
"""

from __future__ import annotations

import io
import os
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from _common import Result, Targets, databases, measure, scratch

#: scenario -> (metric, bound): lower bounds on per_sec (MB/s or registrations/s).
TARGETS: Targets = {
    "artifacts sqlite: stream put MB/s": ("per_sec", 100.0),
    "artifacts sqlite: stream get MB/s": ("per_sec", 100.0),
    "artifacts sqlite: b64 save MB/s": ("per_sec", 40.0),
    "artifacts sqlite: b64 load MB/s": ("per_sec", 60.0),
    "artifacts sqlite: registrations/s": ("per_sec", 300.0),
    "artifacts sqlite: in-process reg/s": ("per_sec", 2_000.0),
    "artifacts postgres: stream put MB/s": ("per_sec", 100.0),
    "artifacts postgres: stream get MB/s": ("per_sec", 100.0),
    "artifacts postgres: b64 save MB/s": ("per_sec", 40.0),
    "artifacts postgres: b64 load MB/s": ("per_sec", 60.0),
    "artifacts postgres: registrations/s": ("per_sec", 200.0),
    "artifacts postgres: in-process reg/s": ("per_sec", 300.0),
}

_MB = 1024 * 1024


@contextmanager
def _served(store: Any) -> Iterator[Any]:
    """An ``OpStoreClient`` of ``store`` served by uvicorn in a thread."""
    import uvicorn

    from flowplex.artifacts import OpStoreClient
    from flowplex.identity import generate_key_pair

    config = uvicorn.Config(store.app, host="127.0.0.1", port=0, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    # Writes are signed, as every client's are (the cost of signing is part of what is measured).
    client = OpStoreClient(f"http://127.0.0.1:{port}", key=generate_key_pair())
    try:
        yield client
    finally:
        client.close()
        server.should_exit = True
        thread.join(timeout=30)


def _registrations(client: Any, op: str) -> Callable[[], None]:
    from flowplex.artifacts import Version

    counter = iter(range(1, 1 << 62))

    def register() -> None:
        client.register_valid_link("bench_down", op, Version(patch=f"{next(counter):040x}"))

    return register


def _http_scenarios(client: Any) -> dict[str, tuple[Callable[[], Any], bool]]:
    """name suffix -> (operation, whether it moves 1 MB)."""
    from flowplex.artifacts import Version

    blob = os.urandom(_MB)
    version = Version()
    client.register_valid_link(None, "bench_blob", version)
    client.save_op_bytes("bench_blob", version, blob)

    def stream_get() -> None:
        client.download_op_bytes("bench_blob", version, io.BytesIO())

    return {
        "stream put MB/s": (lambda: client.upload_op_bytes("bench_blob", version, [blob]), True),
        "stream get MB/s": (stream_get, True),
        "b64 save MB/s": (lambda: client.save_op_bytes("bench_blob", version, blob), True),
        "b64 load MB/s": (lambda: client.get_op_bytes_for_version("bench_blob", version), True),
        "registrations/s": (_registrations(client, "bench_http"), False),
    }


def run(quick: bool, only: str) -> list[Result]:
    """Run the scenarios whose name contains ``only`` (all when empty)."""
    from flowplex.artifacts import FileSaver, OpStore

    n_bytes = 30 if quick else 300
    n_register = 300 if quick else 3_000
    results: list[Result] = []
    tmp = Path(tempfile.mkdtemp(prefix="flowplex-bench-artifacts-"))

    def wanted(name: str) -> bool:
        return not only or only in name

    try:
        for label, db in databases(tmp, "bench-artifacts"):
            prefix = f"artifacts {label}: "
            if not any(wanted(name) for name in TARGETS if name.startswith(prefix)):
                continue
            print(f"... {prefix.rstrip(': ')}", file=sys.stderr)
            with scratch(db) as url:
                store = OpStore(FileSaver(tmp / label), url)
                try:
                    name = f"{prefix}in-process reg/s"
                    if wanted(name):
                        op = _registrations(store.client(), "bench_local")
                        results.append(measure(name, op, n_register, warmup=n_register // 10))
                    with _served(store) as client:
                        for suffix, (op, moves_mb) in _http_scenarios(client).items():
                            name = prefix + suffix
                            if wanted(name):
                                n = n_bytes if moves_mb else n_register
                                results.append(measure(name, op, n, warmup=max(n // 10, 3)))
                finally:
                    store.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return results
