"""flowplex served the way the benchmarks use it: a node, the ReverseNumber flows, workers."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import flowplex
from flowplex import serving
from flowplex.workers import run_dispatch_worker_thread

ATOMIC = "flowplex.examples.ReverseNumberAtomicFlow"
BLOCKING = "flowplex.examples.ReverseNumberBlockingSequentialFlow"
ENDPOINT = "reverse_number_atomic"
COMPOSITE = "reverse_number_blocking"


def worker_process(db: str, home: Path) -> subprocess.Popen[bytes]:
    """A ``flowplex worker`` process on the node (its output discarded)."""
    return subprocess.Popen(
        [sys.executable, "-m", "flowplex", "worker", "--db", db, "--home", str(home)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def stop(procs: Sequence[subprocess.Popen[bytes]]) -> None:
    """Stop worker processes (SIGTERM: they finish the message in hand and exit)."""
    for proc in procs:
        proc.terminate()
    for proc in procs:
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextmanager
def served_node(
    db: str, home: Path, *, worker_threads: int = 1, worker_procs: int = 0
) -> Iterator[flowplex.Client]:
    """A node on ``db`` (files in ``home``) serving the ReverseNumber flows, with dispatch
    workers: threads of this process and ``flowplex worker`` processes sharing the database.
    """
    cl = flowplex.start_node(path=home, db=db)
    serving.serve_flow(cl, ATOMIC, ENDPOINT)
    serving.serve_flow(cl, BLOCKING, COMPOSITE)
    procs = [worker_process(db, home) for _ in range(worker_procs)]
    for _ in range(worker_threads):
        run_dispatch_worker_thread(cl)
    try:
        yield cl
    finally:
        stop(procs)
        serving.delete_all_flow_endpoints(cl)
        cl.node.close()


def round_trip(proxy: Any, timeout: float | None = None) -> Callable[[], Any]:
    """One request and its reply, as the seeds do it: ``get_reply_future(...).get_data()``
    (with ``timeout`` when given: users are told every wait should have one)."""

    def op() -> Any:
        message = proxy.package_input_message({"number": 1234})
        if timeout is None:
            return proxy.get_reply_future(message).get_data()
        return proxy.get_reply_future(message).get_data(timeout=timeout)

    return op


def sender(proxies: Sequence[Any]) -> Callable[[int], Callable[[], Any]]:
    """``send(i)`` for :func:`_common.pipelined`: request ``i`` goes to the proxies in turn."""

    def send(i: int) -> Callable[[], Any]:
        proxy = proxies[i % len(proxies)]
        return proxy.get_reply_future(proxy.package_input_message({"number": i})).get_data

    return send


def mount(cl: flowplex.Client, count: int, endpoint: str = ENDPOINT) -> list[Any]:
    """``count`` new instances of ``endpoint``: their proxies."""
    return [serving.get_flow_instance(cl, endpoint) for _ in range(count)]
