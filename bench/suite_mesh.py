"""Mesh benchmarks: ``/flows`` pages over 10,000 flows, and registrations on a cached registry.

"listing" measures the pure listing function on the registry's rows; "route" measures the whole
in-process ASGI request (routing, query parameters, rows, listing, JSON) through httpx's
ASGITransport, no sockets. "changed" pages follow a state change each time (rows rebuilt and
re-sorted: the worst case); "cached" pages follow none (memoized rows and sort order).

"register" posts a 500-flow node to a registry with a cache file, its lifespan running, that
already lists 100 or 10,000 flows: the cost must not grow with the flows listed. "GET / during
registrations" measures the status route while another task registers that node again and again
(how long a registration holds the event loop).
"""

from __future__ import annotations

import asyncio
import json
import shutil
import tempfile
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import httpx

from _common import Result, Targets, measure
from flowplex._httpsign import SigningAuth
from flowplex.identity import generate_key_pair
from flowplex.mesh import MeshService, MeshState, NodeRecord, list_rows
from flowplex.server import create_app

REGISTRY = "http://127.0.0.1:3366"
#: The key the bench registry and its clients sign with.
KEY = generate_key_pair()

#: name -> (metric, bound): a page over 10,000 flows within 50 ms; registering a 500-flow node
#: within 50 ms at 10,000 listed; GET / at 100 per second or more while registrations run.
TARGETS: Targets = {
    "mesh: 10k page, changed (listing)": ("p50_us", 50_000.0),
    "mesh: 10k page, changed (route)": ("p50_us", 50_000.0),
    "mesh: 10k page, cached (route)": ("p50_us", 50_000.0),
    "mesh: 10k query page, changed (route)": ("p50_us", 50_000.0),
    "mesh: register 500 flows at 10k listed": ("p50_us", 50_000.0),
    "mesh: GET / during registrations": ("per_sec", 100.0),
}

#: Registry knobs for the registration scenarios: no rate limit on the benchmark's own client.
REGISTRY_KNOBS: dict[str, Any] = {"write_rate": 1e9, "write_burst": 1e9}


def populate(state: MeshState, nodes: int = 1_000, flows: int = 10) -> None:
    """Register ``nodes`` nodes of ``flows`` flows each (10,000 rows by default)."""
    for n in range(nodes):
        node = NodeRecord.from_json(
            {
                "url": f"http://node{n}.example:8000",
                "organization": f"org{n % 17}",
                "flows": [
                    {
                        "url": f"/flow{f}",
                        "name": f"flow {(n * 7919 + f) % 10_000:05d}",
                        "description": f"flow {f} of node {n}",
                        "author": f"author{n % 31}@example.org",
                        "tags": [f"t{f % 5}", f"g{n % 3}"],
                    }
                    for f in range(flows)
                ],
            }
        )
        state.register(node)


def listing_op(state: MeshState) -> Callable[[], Any]:
    """An op listing page 3 of ``state``'s rows, rebuilt each time."""

    def op() -> Any:
        # A state change forces the rows to be rebuilt, as after a registration.
        state.version += 1
        return list_rows(state.rows(), None, "name, node, url", 3, 10)

    return op


def route_op(params: dict[str, Any], changed: bool) -> tuple[Callable[[], Any], Callable[[], None]]:
    """An op GETting ``/flows?params`` in-process from a 10,000-flow registry, and its cleanup."""
    service = MeshService(REGISTRY, node=False, registry=True, key=KEY)
    populate(service.state)
    app = create_app(mesh=service)
    loop = asyncio.new_event_loop()
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://bench")

    def op() -> Any:
        if changed:
            service.state.version += 1
        resp = loop.run_until_complete(client.get("/flows", params=params))
        assert resp.status_code == 200 and len(resp.json()["items"]) == 10
        return resp

    def close() -> None:
        loop.run_until_complete(client.aclose())
        loop.close()

    return op, close


def big_node(flows: int = 500) -> bytes:
    """The ``/register`` body of a node with ``flows`` flows, encoded once."""
    node = {
        "url": "http://big.example:9000",
        "organization": "big",
        "flows": [
            {
                "url": f"/big{f}",
                "name": f"big flow {f:04d}",
                "description": f"flow {f} of the big node",
                "author": "big@example.org",
                "tags": ["big", f"t{f % 7}"],
            }
            for f in range(flows)
        ],
    }
    return json.dumps(node).encode()


class CachedRegistry:
    """A registry with a cache file and ``listed`` flows (nodes of 10), its lifespan running on a
    private loop, and an in-process client."""

    def __init__(self, listed: int) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="flowplex-bench-mesh-"))
        service = MeshService(
            REGISTRY,
            node=False,
            registry=True,
            cache=str(self.tmp / "registry.json"),
            key=KEY,
            **REGISTRY_KNOBS,
        )
        populate(service.state, nodes=listed // 10)
        self.service = service
        self.app = create_app(mesh=service)
        self.loop = asyncio.new_event_loop()
        # Registrations are signed, as a node signs them: the check is part of the cost.
        self.client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=self.app),
            base_url="http://bench",
            auth=SigningAuth(KEY),
        )
        self.lifespan: AbstractAsyncContextManager[Any] = self.app.router.lifespan_context(self.app)
        self.loop.run_until_complete(self.lifespan.__aenter__())
        self.body = big_node()

    async def register(self) -> None:
        resp = await self.client.post(
            "/register", content=self.body, headers={"content-type": "application/json"}
        )
        assert resp.status_code == 200, resp.text

    def close(self) -> None:
        try:
            self.loop.run_until_complete(self.client.aclose())
            self.loop.run_until_complete(self.lifespan.__aexit__(None, None, None))
        finally:
            self.loop.close()
            shutil.rmtree(self.tmp, ignore_errors=True)


def registration_results(quick: bool, only: str) -> list[Result]:
    """Registering a 500-flow node at 100 and 10,000 flows listed; ``GET /`` meanwhile."""
    n = 20 if quick else 100
    results = []
    for listed, name in [
        (100, "mesh: register 500 flows at 100 listed"),
        (10_000, "mesh: register 500 flows at 10k listed"),
    ]:
        if only and only not in name:
            continue
        registry = CachedRegistry(listed)
        try:
            op = lambda r=registry: r.loop.run_until_complete(r.register())  # noqa: E731
            results.append(measure(name, op, n, 3))
        finally:
            registry.close()
    name = "mesh: GET / during registrations"
    if not only or only in name:
        registry = CachedRegistry(10_000)
        running = True

        async def churn() -> None:
            while running:
                await registry.register()
                await asyncio.sleep(0)

        task = registry.loop.create_task(churn())

        def status() -> Any:
            resp = registry.loop.run_until_complete(registry.client.get("/"))
            assert resp.status_code == 200
            return resp

        try:
            results.append(measure(name, status, 10 * n, 10))
        finally:
            running = False
            registry.loop.run_until_complete(task)
            registry.close()
    return results


def run(quick: bool, only: str) -> list[Result]:
    """Run the scenarios whose name contains ``only`` (all when empty)."""
    n = 30 if quick else 200
    warmup = 3 if quick else 20
    results = []
    name = "mesh: 10k page, changed (listing)"
    if not only or only in name:
        state = MeshState(REGISTRY, node=False, registry=True)
        populate(state)
        assert len(state.rows()) == 10_000
        results.append(measure(name, listing_op(state), n, warmup))
    query = {"q": "organization == 'org3' or tag('t1')", "by": "author, name:desc"}
    for name, params, changed in [
        ("mesh: 10k page, changed (route)", {"p": 3}, True),
        ("mesh: 10k page, cached (route)", {"p": 3}, False),
        ("mesh: 10k query page, changed (route)", query, True),
    ]:
        if only and only not in name:
            continue
        op, close = route_op(params, changed)
        try:
            results.append(measure(name, op, n, warmup))
        finally:
            close()
    results.extend(registration_results(quick, only))
    return results
