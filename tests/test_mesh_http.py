"""The mesh routes in-process (httpx's ASGITransport, the app's lifespan around it), the app
factory, run_service's argument checks, loaders and the node-database integration."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import APIRouter, FastAPI
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

import flowplex
from flowplex import serving
from flowplex._httpsign import SigningAuth
from flowplex.errors import ClassPathError, ConfigurationError, FlowplexError
from flowplex.mesh import MeshService, NodeEndpoints, resolve_loader, run_service
from flowplex.server import create_app
from mesh_helpers import (
    OPERATOR,
    AppClient,
    TaggedFlow,
    free_url,
    get,
    html_rows,
    loader1,
    services,
    start,
    wait_idle,
    wait_until,
)

REGISTRY = "http://localhost:3366"
NODE = "http://localhost:3367"


@pytest.fixture
def registry() -> Iterator[AppClient]:
    service = MeshService(
        REGISTRY, "registry1", node=False, registry=True, operators=[OPERATOR.user_id]
    )
    with AppClient(create_app(mesh=service), key=OPERATOR) as client:
        yield client


@pytest.fixture
def node() -> Iterator[AppClient]:
    service = MeshService(NODE, "node1", loader=loader1)
    with AppClient(create_app(mesh=service)) as client:
        yield client


def register(client: AppClient, body: Any) -> httpx.Response:
    return client.post("/register", json=body)


# -- 4xx with a JSON detail, never 500 -------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "content", "status", "detail"),
    [
        ("/register", b"not json", 422, "JSON decode error"),
        ("/register", b"[1, 2]", 422, "valid dictionary"),
        ("/register", b'{"flows": []}', 422, "Field required"),
        ("/register", b'{"url": "nope"}', 422, "must be an http(s) URL"),
        ("/register", b'{"url": "http://n:1", "flows": 3}', 422, "valid list"),
        (
            "/register",
            b'{"url": "http://n:1", "flows": [{"tags": [1], "name": "x"}]}',
            422,
            "tags must be a list of strings",
        ),
        (
            "/register",
            b'{"url": "http://n:1", "flows": [{"author": "x"}]}',
            422,
            "needs a url or a name",
        ),
        ("/heartbeat", b'{"url": "http://n:1"}', 404, "unknown node http://n:1"),
        ("/connect", b'{"url": "http://p:1", "nodes": [{"url": 5}]}', 422, "node url"),
        ("/connect", b'{"url": "http://127.0.0.1:3366"}', 422, "cannot connect to itself"),
        ("/update/node", b'{"url": "http://stranger:1", "nodes": {}}', 403, "unknown sender"),
        ("/update/node", b'{"url": "http://p:1", "visited": "x"}', 422, "valid list"),
    ],
)
def test_client_mistakes_get_4xx_with_a_json_detail(
    registry: AppClient, path: str, content: bytes, status: int, detail: str
) -> None:
    resp = registry.post(path, content=content, headers={"content-type": "application/json"})
    assert resp.status_code == status, resp.text
    assert detail in str(resp.json()["detail"])


def test_registry_routes_are_404_on_a_node(node: AppClient) -> None:
    for path in ["/register", "/connect", "/update/node", "/heartbeat"]:
        resp = node.post(path, json={"url": "http://x:1"})
        assert resp.status_code == 404
        assert resp.json()["detail"] == f"{NODE} is not a registry: {path} is served by registries"
    assert node.get("/_cache").status_code == 404


def test_bad_listing_parameters_are_422(registry: AppClient) -> None:
    for params in [{"p": -1}, {"pp": 0}, {"pp": "ten"}, {"format": "xml"}]:
        resp = registry.get("/flows", params=params)
        assert resp.status_code == 422 and resp.json()["detail"]


# -- the seed's shapes -----------------------------------------------------------------------------


def test_status_shape(registry: AppClient) -> None:
    status = registry.get("/").json()
    assert set(status) == {
        "url",
        "organization",
        "node",
        "registry",
        "provider",
        "connection",
        "started_at",
        "idle",
        "now",
        "message",
    }
    assert status["url"] == REGISTRY and status["organization"] == "registry1"
    assert status["idle"] is True and status["message"] == []


def test_node_lists_its_own_flows_without_timestamps(node: AppClient) -> None:
    page = node.get("/flows").json()
    assert page["items"] == [
        {
            "registry": NODE,
            "node": NODE,
            "organization": "node1",
            "created": None,
            "modified": None,
            "heartbeat": None,
            "url": "/mytest",
            "name": "mytest",
            "author": "missing author",
            "description": "missing description",
            "tags": [],
            "status": "online",
        }
    ]
    assert node.get("/map").json()["nodes"][NODE]["flows"]["/mytest"]["name"] == "mytest"


def test_simulated_registry_connects_with_the_feed(registry: AppClient) -> None:
    register(registry, {"url": "http://localhost:3380", "flows": [{"url": "/t", "name": "T"}]})
    offer = {
        "url": "http://localhost:3381",
        "feed": True,
        "nodes": [{"url": "http://fantasy.com", "flows": []}],
    }
    reply = registry.post("/connect", json=offer).json()
    assert reply["message"] == ["registry http://localhost:3381 connected (first visit)"]
    providers = reply["providers"]
    assert providers["url"] == REGISTRY and providers["feed"] is True
    assert list(providers["nodes"]) == ["http://localhost:3380"]
    again = registry.post("/connect", json={**offer, "feed": False}).json()
    assert again["message"][0].startswith(
        "registry http://localhost:3381 connected (seen previously"
    )
    assert "providers" not in again
    cache = registry.get("/_cache").json()
    assert cache["providers"]["http://localhost:3381"]["nodes"]["http://fantasy.com"]["flows"] == {}
    update = {
        "url": "http://localhost:3381",
        "id": "u1",
        "nodes": {
            "http://fantasy.com": {
                "url": "http://fantasy.com",
                "flows": [{"name": "dream"}],
                "modified": "2030-01-01T00:00:00+00:00",
            }
        },
    }
    reply = registry.post("/update/node", json=update).json()
    assert reply["message"] == ["updated node http://fantasy.com (from http://localhost:3381)"]
    assert registry.post("/update/node", json=update).json()["message"] == [
        "update u1 already applied (ignored)"
    ]
    assert [r["url"] for r in registry.get("/flows").json()["items"]] == ["/dream", "/t"]


def test_html_listing_is_a_styled_escaped_table(registry: AppClient) -> None:
    register(
        registry,
        {
            "url": "http://n:1",
            "organization": "<b>acme</b>",
            "flows": [{"url": "/x", "name": "<script>alert(1)</script>", "tags": ["a&b"]}],
        },
    )
    resp = registry.get("/flows", params={"format": "html"})
    assert resp.headers["content-type"].startswith("text/html")
    page = resp.text
    assert "<style>" in page and "<table>" in page
    assert "<script>alert" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "&lt;b&gt;acme&lt;/b&gt;" in page and "a&amp;b" in page
    header = page.split("<thead>", 1)[1].split("</thead>", 1)[0]
    assert header.count("<th>") == 12
    (row,) = html_rows(page)
    assert row[1:3] == ["http://n:1", "&lt;b&gt;acme&lt;/b&gt;"]
    assert row[9:] == ["missing description", "a&amp;b", "online"]
    # Accept: text/html picks HTML too, unless format=json says otherwise.
    assert registry.get("/flows", headers={"Accept": "text/html"}).text.startswith("<!doctype")
    json_page = registry.get("/flows", params={"format": "json"}, headers={"Accept": "text/html"})
    assert json_page.json()["total"] == 1


def test_html_timestamps_are_compact_and_text_columns_wrap(registry: AppClient) -> None:
    # Full ISO timestamps (32 characters each, three of them) pushed the flow's own columns off
    # a 1280-px screen; the cell shows seconds, the tooltip the stored value.
    register(registry, {"url": "http://n:1", "flows": [{"name": "x", "description": "d"}]})
    created = registry.get("/flows").json()["items"][0]["created"]
    page = registry.get("/flows", params={"format": "html"}).text
    (row,) = html_rows(page)
    assert row[3:6] == [created[:19].replace("T", " ")] * 3
    assert f'title="{created}"' in page
    # Only description and tags wrap (with a minimum width); the other cells stay on one line.
    assert '<td class="wrap">d</td>' in page
    assert "td.wrap {" in page and "white-space: nowrap" in page


def test_html_paging_links_keep_the_query(registry: AppClient) -> None:
    flows = [{"url": f"/f{i}", "name": f"flow {i:02d}"} for i in range(25)]
    register(registry, {"url": "http://n:1", "flows": flows})
    page = registry.get("/flows", params={"format": "html", "q": "'flow' in name", "p": 1}).text
    assert "showing 11&ndash;20 of 25 (filtered) / 25 (total)" in page
    assert "p=0" in page and "p=2" in page and "q=%27flow%27+in+name" in page


def test_query_sort_and_counts_over_http(registry: AppClient) -> None:
    register(
        registry,
        {
            "url": "http://n1:1",
            "organization": "node1",
            "flows": [{"name": "a", "tags": ["x"]}, {"name": "b", "tags": ["y"]}],
        },
    )
    register(registry, {"url": "http://n2:1", "organization": "node2", "flows": [{"name": "c"}]})
    page = registry.get("/flows", params={"q": "organization=='node2'"}).json()
    assert page["filtered"] == 1 and page["total"] == 3
    page = registry.get("/flows", params={"q": "a==1"}).json()
    assert page["q"] == "QueryError: unexpected '1' at column 4, fulltext: a==1"
    page = registry.get("/flows", params={"by": "tags:desc,name:asc"}).json()
    assert [r["name"] for r in page["items"]] == ["b", "a", "c"]
    page = registry.get("/flows", params={"q": '@tag("x")|@tag("y")', "pp": 1, "p": 1}).json()
    assert page["filtered"] == 2 and [r["name"] for r in page["items"]] == ["b"]
    counts = registry.get("/counts").json()
    assert counts == {
        "total": 3,
        "node": {"http://n1:1": 2, "http://n2:1": 1},
        "organization": {"node1": 2, "node2": 1},
        "tags": {"x": 1, "y": 1},
    }


# -- the app factory -------------------------------------------------------------------------------


def test_create_app_composes_mesh_routers_mounts_and_lifespans() -> None:
    events: list[str] = []

    @asynccontextmanager
    async def extra(app: FastAPI) -> AsyncIterator[None]:
        events.append("start")
        yield
        events.append("stop")

    router = APIRouter()

    @router.get("/boom")
    async def boom() -> None:
        raise FlowplexError("this request cannot be honoured")

    sub = Starlette(routes=[Route("/ping", lambda request: PlainTextResponse("pong"))])
    service = MeshService(REGISTRY, node=False, registry=True)
    app = create_app(mesh=service, routers=[router], mounts={"/extra": sub}, lifespans=[extra])
    with AppClient(app) as client:
        assert events == ["start"]
        assert client.get("/extra/ping").text == "pong"
        resp = client.get("/boom")
        assert resp.status_code == 400
        assert resp.json() == {"detail": "this request cannot be honoured"}
        assert client.get("/").json()["registry"] is True
    assert events == ["start", "stop"]
    with pytest.raises(ConfigurationError, match="mount prefix"):
        create_app(mounts={"/": sub})


def test_run_service_serves_mounted_apps_beside_the_mesh() -> None:
    url = free_url()
    sub = Starlette(routes=[Route("/ping", lambda request: PlainTextResponse("pong"))])
    with services() as procs:
        procs.append(start(url=url, node=False, registry=True, mounts={"/extra": sub}))
        assert httpx.get(f"{url}/extra/ping").text == "pong"
        assert get(url)["registry"] is True


# -- run_service and loaders -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"url": "http://localhost"}, "needs a port"),
        ({"url": "localhost:3366"}, "http\\(s\\) URL with a host"),
        ({"url": REGISTRY, "node": False}, "needs a role"),
        ({"url": REGISTRY, "node": False, "registry": True, "loader": loader1}, "nodes only"),
        ({"url": REGISTRY, "cache": "x.json"}, "cache is for registries"),
        ({"url": REGISTRY, "reload": True}, "reload=True is not supported"),
        ({"url": REGISTRY, "connect": [REGISTRY]}, "cannot connect to itself"),
        ({"url": REGISTRY, "connect": ["nowhere"]}, "connect url"),
        ({"url": REGISTRY, "connect": 3366}, "connect url must be a URL like"),
        ({"url": REGISTRY, "node": False, "registry": True, "cache": 5}, "cache must be a path"),
        ({"url": REGISTRY, "loader": "no_such_module:f"}, "cannot import"),
        ({"url": REGISTRY, "loader": "mesh_helpers:nothing"}, "no function 'nothing'"),
        ({"url": REGISTRY, "loader": 42}, "callable or a 'module:function'"),
        ({"url": REGISTRY, "loader": lambda: [{"tags": 3}]}, "needs a url or a name"),
        (
            {"url": REGISTRY, "heartbeat_interval": 0},
            "heartbeat_interval must be a positive number",
        ),
        (
            {"url": REGISTRY, "registry": True, "offline_remove_after": 0},
            "offline_remove_after must be a positive number",
        ),
        ({"url": REGISTRY, "registry": True, "max_peers": 2.5}, "max_peers must be a whole"),
        ({"url": REGISTRY, "registry": True, "write_burst": 0.5}, "write_burst must be at least"),
    ],
)
def test_run_service_rejects_bad_arguments_before_serving(
    kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigurationError, match=message):
        run_service(**kwargs)


def test_run_service_on_a_taken_port_raises_a_flowplex_error() -> None:
    # uvicorn itself calls sys.exit when it cannot bind; run_service must not leak that.
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        url = f"http://127.0.0.1:{port}"
        # The error names the service by its canonical URL (loopback spelled localhost).
        match = f"the service at http://localhost:{port} did not start"
        with pytest.raises(ConfigurationError, match=match):
            run_service(url, node=False, registry=True, log_level="critical")


def test_connect_none_means_no_registries() -> None:
    assert MeshService(REGISTRY, connect=None).targets == []
    assert MeshService(REGISTRY, connect="http://127.0.0.1:1/").targets == ["http://localhost:1"]


def test_bad_cache_file_is_a_clear_error(tmp_path: Path) -> None:
    cache = tmp_path / "reg.json"
    cache.write_text('{"nodes": 5}')
    with pytest.raises(ConfigurationError, match=r"invalid.*reset=True"):
        MeshService(REGISTRY, node=False, registry=True, cache=str(cache))
    # reset=True starts empty and does not even read it.
    MeshService(REGISTRY, node=False, registry=True, cache=str(cache), reset=True)


def test_shutdown_closes_the_client_even_when_the_last_cache_write_fails(tmp_path: Path) -> None:
    cache = tmp_path / "state" / "reg.json"
    service = MeshService(REGISTRY, node=False, registry=True, cache=str(cache))
    client = AppClient(create_app(mesh=service))
    client.__enter__()
    (tmp_path / "state").write_text("a file where the cache's directory should be")
    service.state.version += 1  # a change the shutdown wants to write
    with pytest.raises(OSError):
        client.__exit__(None, None, None)
    assert service._client is not None and service._client.is_closed


def test_loader_as_module_function_string() -> None:
    assert resolve_loader("mesh_helpers:loader1") is loader1
    with pytest.raises(ClassPathError):
        resolve_loader("mesh_helpers:TaggedFlowX")


def test_node_endpoints_loader_reads_served_endpoints(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path}/node.db"
    cl = flowplex.start_node(path=tmp_path, db=db)
    loader = NodeEndpoints(db)
    try:
        assert loader() == []
        serving.serve_flow(cl, "mesh_helpers.TaggedFlow", "tagged")
        serving.serve_flow(cl, "flowplex.examples.ReverseNumberAtomicFlow", "reverse_number")
        # A class importable when served but not where the mesh runs is named by its endpoint.
        (tmp_path / "ghostflows.py").write_text(
            "from mesh_helpers import TaggedFlow\n\nclass Ghost(TaggedFlow):\n    pass\n"
        )
        sys.path.insert(0, str(tmp_path))
        try:
            serving.serve_flow(cl, "ghostflows.Ghost", "ghost")
        finally:
            sys.path.remove(str(tmp_path))
            sys.modules.pop("ghostflows", None)
        flows = {f["url"]: f for f in loader()}
        assert flows["/endpoints/tagged"] == {
            "url": "/endpoints/tagged",
            "name": "Tagged",
            "description": TaggedFlow.default_config["description"],
            "author": "ada@example.org",
            "tags": ["nlp", "beta"],
        }
        assert flows["/endpoints/reverse_number"]["name"] == "ReverseNumber"
        assert flows["/endpoints/reverse_number"]["description"].startswith(
            "A flow that takes in a number"
        )
        assert flows["/endpoints/ghost"] == {
            "url": "/endpoints/ghost",
            "name": "ghost",
            "description": None,
            "author": None,
            "tags": None,
        }
        serving.unserve_flow(cl, "ghost")
        assert sorted(f["url"] for f in loader()) == [
            "/endpoints/reverse_number",
            "/endpoints/tagged",
        ]
    finally:
        loader.close()
        cl.node.close()


def test_served_endpoints_appear_at_the_registries_and_unserving_removes_them(
    tmp_path: Path,
) -> None:
    db = f"sqlite:///{tmp_path}/node.db"
    cl = flowplex.start_node(path=tmp_path, db=db)
    registry1, registry2, node = free_url(), free_url(), free_url()
    try:
        serving.serve_flow(cl, "mesh_helpers.TaggedFlow", "tagged")
        with services() as procs:
            procs.append(start(url=registry1, node=False, registry=True))
            procs.append(start(url=registry2, node=False, registry=True, connect=[registry1]))
            procs.append(
                start(
                    url=node, organization="acme", connect=[registry1], db=db, refresh_interval=0.05
                )
            )
            wait_idle(node, registry1, registry2)

            def listed(registry: str) -> list[tuple[str, str, list[str]]]:
                rows = get(registry, "/flows")["items"]
                return [(r["url"], r["author"], r["tags"]) for r in rows]

            for registry in (registry1, registry2):
                wait_until(lambda r=registry: listed(r), what="the served flow listed")
                assert listed(registry) == [
                    ("/endpoints/tagged", "ada@example.org", ["beta", "nlp"])
                ]
            serving.serve_flow(cl, "flowplex.examples.ReverseNumberAtomicFlow", "reverse")
            for registry in (registry1, registry2):
                wait_until(lambda r=registry: len(listed(r)) == 2, what="a second flow")
            serving.unserve_flow(cl, "tagged")
            for registry in (registry1, registry2):
                wait_until(
                    lambda r=registry: [u for u, _, _ in listed(r)] == ["/endpoints/reverse"],
                    what="the unserved flow removed",
                )
    finally:
        cl.node.close()


def test_flowplex_registry_command(tmp_path: Path) -> None:
    url = free_url()
    cache = tmp_path / "reg.json"
    cmd = [sys.executable, "-m", "flowplex", "registry", "--url", url, "--cache", str(cache)]
    proc = subprocess.Popen([*cmd, "-o", "acme"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        status = wait_until(lambda: get(url), what="flowplex registry up")
        assert (status["registry"], status["node"], status["organization"]) == (True, False, "acme")
        signed = SigningAuth(OPERATOR)
        httpx.post(
            f"{url}/register", json={"url": "http://n:1", "flows": [{"name": "x"}]}, auth=signed
        )
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=20)
    assert list(json.loads(cache.read_text())["nodes"]) == ["http://n:1"]
    bad = subprocess.run(
        [sys.executable, "-m", "flowplex", "registry", "--url", "localhost:3366"],
        check=False,
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 1
    assert "error: url 'localhost:3366' must be an http(s) URL" in bad.stderr


def test_import_flowplex_mesh_loads_no_web_library() -> None:
    code = (
        "import sys, flowplex.mesh\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "{'fastapi', 'starlette', 'uvicorn', 'httpx', 'typer'}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_flowplex_up_lists_the_flows_served_on_the_embedded_default(tmp_path: Path) -> None:
    env = {**os.environ, "FLOWPLEX_HOME": str(tmp_path / "home")}
    env.pop("FLOWPLEX_DB", None)
    serve = [sys.executable, "-m", "flowplex", "serve", "mesh_helpers.TaggedFlow", "tagged"]
    tests_dir = str(Path(__file__).parent)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [tests_dir, env.get("PYTHONPATH")]))
    subprocess.run(serve, env=env, check=True, capture_output=True)
    url = free_url()
    proc = subprocess.Popen(
        [sys.executable, "-m", "flowplex", "up", "--url", url],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        rows = wait_until(lambda: get(url, "/flows")["items"], what="flowplex up listing")
        assert [(r["node"], r["url"], r["name"]) for r in rows] == [
            (url, "/endpoints/tagged", "Tagged")
        ]
        assert get(url)["node"] is True and get(url)["registry"] is True
        assert "<table>" in httpx.get(f"{url}/flows?format=html").text
        # Its dispatch worker answers a message sent by a process that runs none itself.
        send = [sys.executable, "-m", "flowplex", "send", "tagged", "{}", "--no-worker"]
        sent = subprocess.run(
            send, check=False, env=env, capture_output=True, text=True, timeout=60
        )
        assert sent.returncode == 0, sent.stderr
        assert json.loads(sent.stdout) == {"ok": True}
        # The op store answers under /opstore.
        from flowplex.artifacts import OpStoreClient, Version

        with OpStoreClient(f"{url}/opstore", key=OPERATOR) as store:
            version = Version()
            store.register_valid_link(None, "model", version)
            assert store.get_all_versions_of_op("model") == [version]
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
    assert b"dashboard: " + url.encode() + b"/\n" in err
    assert (tmp_path / "home" / "registry.json").is_file()
