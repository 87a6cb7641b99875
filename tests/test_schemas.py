"""schemathesis over every OpenAPI schema flowplex publishes (the mesh service, the op store, the
node server app), in process: no request may get a 5xx, and every documented answer (422s
included) must match the schema. Bounded: ``EXAMPLES`` per route, no deadline.

The apps run insecure here so that generated bodies reach the routes' own checks (signed
requests are covered by test_signing.py and test_security.py); everything else is as served.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error, response_schema_conformance

from flowplex._asgi import compose_app
from flowplex.artifacts import MemorySaver, OpStore
from flowplex.mesh import MeshService, mesh_router
from flowplex.server import NodeServer

EXAMPLES = 200
CHECKS = [not_a_server_error, response_schema_conformance]
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)


@pytest.fixture
def mesh_schema() -> schemathesis.BaseSchema:
    service = MeshService("http://127.0.0.1:3366", "fuzz", node=True, registry=True, insecure=True)
    app = compose_app(routers=[mesh_router(service)], signing=service.signing())
    return schemathesis.openapi.from_asgi("/openapi.json", app)


@pytest.fixture
def opstore_schema() -> Iterator[schemathesis.BaseSchema]:
    store = OpStore(MemorySaver(), insecure=True, max_request_bytes=1 << 16)
    yield schemathesis.openapi.from_asgi("/openapi.json", store.app)
    store.close()


@pytest.fixture
def node_schema(tmp_path: Path) -> Iterator[schemathesis.BaseSchema]:
    db = f"sqlite:///{tmp_path}/node.db"
    with NodeServer("http://127.0.0.1:3367", db, tmp_path, workers=0, insecure=True) as server:
        yield schemathesis.openapi.from_asgi("/openapi.json", server.app)


def fuzz(schema: schemathesis.BaseSchema) -> int:
    """Run every operation of ``schema`` through its strategy; the number of operations."""
    count = 0
    for result in schema.get_all_operations():
        operation = result.ok()

        @FUZZ
        @given(case=operation.as_strategy())
        def run(case: schemathesis.Case) -> None:
            case.call_and_validate(checks=CHECKS)

        try:
            run()
        except Exception as exc:
            raise AssertionError(f"{operation.label}: {exc}") from exc
        count += 1
    return count


def test_mesh_service(mesh_schema: schemathesis.BaseSchema) -> None:
    assert fuzz(mesh_schema) == 10


def test_op_store(opstore_schema: schemathesis.BaseSchema) -> None:
    assert fuzz(opstore_schema) == 10


def test_node_server_app(node_schema: schemathesis.BaseSchema) -> None:
    assert fuzz(node_schema) == 18  # 10 + the node API (each call needs a signer: 401)
