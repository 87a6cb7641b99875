"""Mesh benchmarks: one ``/flows`` page over 10,000 flows (1,000 nodes x 10 flows).

"listing" measures the pure listing function on the registry's rows; "route" measures the whole
in-process ASGI request (routing, query parameters, rows, listing, JSON) through httpx's
ASGITransport, no sockets. "changed" pages follow a state change each time (rows rebuilt and
re-sorted: the worst case); "cached" pages follow none (memoized rows and sort order).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import httpx

from _common import Result, Targets, measure
from flowplex.mesh import MeshService, MeshState, NodeRecord, list_rows
from flowplex.server import create_app

REGISTRY = "http://127.0.0.1:3366"

#: name -> (metric, bound): a page over 10,000 flows within 50 ms.
TARGETS: Targets = {
    "mesh: 10k page, changed (listing)": ("p50_us", 50_000.0),
    "mesh: 10k page, changed (route)": ("p50_us", 50_000.0),
    "mesh: 10k page, cached (route)": ("p50_us", 50_000.0),
    "mesh: 10k query page, changed (route)": ("p50_us", 50_000.0),
}


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
    service = MeshService(REGISTRY, node=False, registry=True)
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
    return results
