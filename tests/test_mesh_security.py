"""The mesh under attack: each test is an attack (or a failure mode) of a registry, and the
behaviour that stops it.

- SSRF and amplification: one host spelled many ways is one peer; deliveries to a peer are
  bounded in number and time, a peer failing again and again is dropped (and leaves the cache),
  and a peer that never answers does not starve the others.
- Listing poisoning: relayed copies cannot override what a node's home registry (or the node
  itself) said; timestamps from the future are clamped.
- Write limits: body size (413) and a per-client rate (429).
- Liveness: nodes offline for ``offline_remove_after`` are removed, also when loaded from a cache.
- The cache: written off the request path, flushed on shutdown, never half-written.
"""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import subprocess
import sys
import textwrap
import threading
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from flowplex._httpsign import SigningAuth
from flowplex.errors import ConfigurationError
from flowplex.mesh import JsonCache, MeshService, MeshState, NodeRecord
from flowplex.mesh._records import normalize_service_url, parse_timestamp
from flowplex.server import create_app
from mesh_helpers import OPERATOR, TRUSTED, AppClient, free_url, wait_until

REGISTRY = "http://localhost:3366"
FUTURE = "2099-01-01T00:00:00+00:00"
REAL = [{"url": "/real", "name": "real"}]
POISON = [{"url": "/poison", "name": "poison"}]


def iso_now(delta: float = 0.0) -> str:
    return (datetime.now(UTC) + timedelta(seconds=delta)).isoformat()


def urls_of(client: AppClient, node: str) -> list[str]:
    rows = client.get("/flows", params={"pp": 100}).json()["items"]
    return [r["url"] for r in rows if r["node"] == node]


def registry(**knobs: Any) -> AppClient:
    service = MeshService(REGISTRY, node=False, registry=True, **{**TRUSTED, **knobs})
    return AppClient(create_app(mesh=service), key=OPERATOR)


def idle(client: AppClient) -> bool:
    return bool(client.get("/").json()["idle"])


# -- servers the registry talks to -------------------------------------------------------------


class CountingServer:
    """A real HTTP server on a loopback port that answers every POST with 200 and counts them."""

    def __init__(self) -> None:
        paths: list[str] = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("content-length", "0")))
                paths.append(self.path)
                body = b'{"message": []}'
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.paths = paths
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> CountingServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


class SilentServer:
    """Accepts connections, reads the requests and never answers; counts the connections open
    at once (and the most ever)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(256)
        self.port = self.sock.getsockname()[1]
        self.open = 0
        self.most = 0
        self.accepted = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        conns: list[socket.socket] = []
        while not self._stop.is_set():
            ready, _, _ = select.select([self.sock, *conns], [], [], 0.05)
            for s in ready:
                if s is self.sock:
                    conn, _ = self.sock.accept()
                    conns.append(conn)
                    self.accepted += 1
                elif not s.recv(65536):  # the client gave up (its timeout)
                    conns.remove(s)
                    s.close()
            self.open = len(conns)
            self.most = max(self.most, self.open)
        for conn in conns:
            conn.close()

    def __enter__(self) -> SilentServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()


@pytest.fixture
def counting() -> Iterator[CountingServer]:
    with CountingServer() as server:
        yield server


# -- SSRF: one host, one peer -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spelling", "canonical"),
    [
        ("http://127.1:3366", "http://localhost:3366"),
        ("http://0x7f000001:3366", "http://localhost:3366"),
        ("http://2130706433:3366", "http://localhost:3366"),
        ("http://0177.0.0.1:3366", "http://localhost:3366"),
        ("http://LocalHost.:3366/", "http://localhost:3366"),
        ("http://[::ffff:127.0.0.1]:3366", "http://localhost:3366"),
        ("HTTP://Example.ORG:80/", "http://example.org"),
        ("https://example.org:443", "https://example.org"),
        ("http://10.1:8080", "http://10.0.0.1:8080"),
        ("http://[0:0:0:0:0:0:0:1]:1", "http://[::1]:1"),
        (httpx.URL("http://localhost:3370"), "http://localhost:3370"),
    ],
)
def test_every_spelling_of_a_host_is_one_url(spelling: Any, canonical: str) -> None:
    assert normalize_service_url(spelling) == canonical


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://user:pw@example.org", "must not carry credentials"),
        ("http://256.1.1.1:1", "invalid host"),
        ("http://a b:1", "invalid host"),
        (b"http://example.org", "must be a URL"),
        (object(), "must be a URL"),
    ],
)
def test_urls_that_are_no_service_urls_are_refused(url: Any, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        normalize_service_url(url)


def test_one_host_spelled_many_ways_is_one_peer_and_gets_one_request_per_update(
    counting: CountingServer,
) -> None:
    port = counting.port
    spellings = [
        f"http://127.0.0.1:{port}",
        f"http://127.1:{port}",
        f"http://0x7f000001:{port}",
        f"http://2130706433:{port}",
        f"http://localhost:{port}/",
        f"http://LOCALHOST:{port}",
    ]
    with registry() as r:
        for url in spellings:
            assert r.post("/connect", json={"url": url, "feed": True}).status_code == 200
        assert r.get("/_stats").json()["peers"] == [f"http://localhost:{port}"]
        for i in range(10):
            body = {"url": f"http://node{i}.example:1", "flows": REAL}
            assert r.post("/register", json=body).status_code == 200
        wait_until(lambda: idle(r), what="updates delivered")
    assert counting.paths == ["/update/node"] * 10


# -- amplification: bounded per peer, failing peers dropped -------------------------------------


def test_requests_to_one_peer_are_bounded_by_its_concurrency_limit() -> None:
    with SilentServer() as silent, registry(request_timeout=30, peer_concurrency=2) as r:
        r.post("/connect", json={"url": f"http://localhost:{silent.port}", "feed": True})
        for i in range(6):
            r.post("/register", json={"url": f"http://node{i}.example:1", "flows": REAL})
        wait_until(lambda: r.get("/").json() and silent.open == 2, what="two requests open")
        for _ in range(20):  # give the other four every chance to start
            r.get("/")
        assert (silent.accepted, silent.most) == (2, 2)


def test_a_peer_that_never_answers_does_not_starve_the_others(counting: CountingServer) -> None:
    # 60 peers that never answer hold 120 requests open for 30 s; a pool shared by all peers
    # (100 connections) would make the healthy peer's third update wait for one of them.
    with registry(request_timeout=30) as r:
        silent_servers = [SilentServer().__enter__() for _ in range(60)]
        try:
            for s in silent_servers:
                r.post("/connect", json={"url": f"http://localhost:{s.port}", "feed": True})
            r.post("/connect", json={"url": f"http://localhost:{counting.port}", "feed": True})
            for i in range(3):
                r.post("/register", json={"url": f"http://node{i}.example:1", "flows": REAL})
            wait_until(lambda: r.get("/") and len(counting.paths) == 3, what="healthy updates")
        finally:
            for s in silent_servers:
                s.__exit__()


def test_a_peer_failing_again_and_again_is_dropped_and_leaves_the_cache(tmp_path: Path) -> None:
    cache = tmp_path / "reg.json"
    knobs = {"request_timeout": 0.2, "peer_failures": 2, "retry_initial": 0.01, "retry_max": 0.05}
    with SilentServer() as silent, registry(cache=str(cache), cache_interval=0.05, **knobs) as r:
        dead = f"http://localhost:{silent.port}"
        offer = {"url": dead, "feed": True, "nodes": [{"url": "http://relayed:1", "flows": REAL}]}
        r.post("/connect", json=offer)
        wait_until(lambda: r.get("/") and cache.exists(), what="cache written")
        assert dead in json.loads(cache.read_text())["peers"]
        r.post("/register", json={"url": "http://node.example:1", "flows": REAL})
        wait_until(lambda: dead not in r.get("/_stats").json()["peers"], what="peer dropped")
        assert r.get("/_stats").json()["peers_dropped"] == 1
        assert urls_of(r, "http://relayed:1") == []  # what it relayed went with it

        def cached() -> dict[str, Any]:
            r.get("/")
            return json.loads(cache.read_text())  # type: ignore[no-any-return]

        wait_until(lambda: dead not in cached()["peers"], what="peer out of the cache")
        assert dead not in cached()["providers"]
        # An update from it now is from a stranger.
        update = {"url": dead, "nodes": [{"url": "http://relayed:1", "flows": POISON}]}
        assert r.post("/update/node", json=update).status_code == 403


def test_new_peers_beyond_max_peers_are_refused() -> None:
    with registry(max_peers=2) as r:
        for port in (1, 2):
            assert r.post("/connect", json={"url": f"http://p:{port}", "feed": False}).is_success
        resp = r.post("/connect", json={"url": "http://p:3", "feed": False})
        assert resp.status_code == 503 and "2 peers already" in resp.json()["detail"]
        # A peer already known may always connect again.
        assert r.post("/connect", json={"url": "http://p:1", "feed": False}).is_success


# -- listing poisoning --------------------------------------------------------------------------


def connect(r: AppClient, url: str, nodes: list[dict[str, Any]] | None = None) -> None:
    # feed False: the registry forwards nothing to these simulated peers.
    resp = r.post("/connect", json={"url": url, "feed": False, "nodes": nodes or []})
    assert resp.status_code == 200, resp.text


def update(r: AppClient, sender: str, node: dict[str, Any]) -> list[str]:
    resp = r.post("/update/node", json={"url": sender, "nodes": [node]})
    assert resp.status_code == 200, resp.text
    return resp.json()["message"]  # type: ignore[no-any-return]


def poisoned(node: str, home: str) -> dict[str, Any]:
    return {
        "url": node,
        "registry": home,
        "flows": POISON,
        "created": FUTURE,
        "modified": FUTURE,
        "heartbeat": FUTURE,
    }


def test_a_peer_cannot_replace_a_node_registered_here() -> None:
    node = "http://node.example:1"
    with registry() as r:
        r.post("/register", json={"url": node, "flows": REAL})
        connect(r, "http://attacker:1")
        messages = update(r, "http://attacker:1", poisoned(node, "http://elsewhere:1"))
        assert messages[-1].endswith("changed nothing")
        assert urls_of(r, node) == ["/real"]
        assert r.get("/map").json()["nodes"][node]["heartbeat"] != FUTURE
        r.post("/register", json={"url": node, "flows": REAL})  # registering again: still real
        assert urls_of(r, node) == ["/real"]


def test_a_relayed_copy_never_overrides_what_the_home_registry_said() -> None:
    node, home = "http://node.example:1", "http://home:1"
    with registry() as r:
        real = {"url": node, "registry": home, "flows": REAL, "modified": iso_now()}
        real["heartbeat"] = real["modified"]
        connect(r, home, [real])  # first hand: the home registry itself
        connect(r, "http://attacker:1")
        messages = update(r, "http://attacker:1", poisoned(node, home))  # claims the same home
        assert messages[-1].endswith("changed nothing")
        assert urls_of(r, node) == ["/real"]
        # The home's own word goes on counting.
        newer = {**real, "flows": [{"url": "/v2", "name": "v2"}], "modified": iso_now()}
        update(r, home, newer)
        assert urls_of(r, node) == ["/v2"]


def test_timestamps_from_the_future_are_clamped_and_do_not_keep_a_node_online() -> None:
    node = "http://ghost.example:1"
    knobs = {"heartbeat_interval": 0.05, "offline_after": 0.15, "clock_skew": 0.1}
    with registry(offline_remove_after=None, **knobs) as r:
        connect(r, "http://attacker:1")
        update(r, "http://attacker:1", poisoned(node, "http://attacker:1"))
        row = r.get("/flows").json()["items"][0]
        assert row["node"] == node and row["status"] == "online"
        for field in ("created", "modified", "heartbeat"):
            stamp = parse_timestamp(row[field])
            assert stamp is not None and stamp < parse_timestamp(iso_now(1.0))  # type: ignore[operator]
        wait_until(
            lambda: r.get("/flows").json()["items"][0]["status"] == "offline",
            what="the ghost offline",
        )


def test_the_node_registering_again_wins_over_relayed_state() -> None:
    node, home = "http://node.example:1", "http://far:1"
    with registry() as r:
        relayed = {"url": node, "registry": home, "flows": REAL, "modified": iso_now()}
        connect(r, "http://peer:1", [relayed])
        connect(r, "http://attacker:1")
        update(r, "http://attacker:1", poisoned(node, home))
        assert urls_of(r, node) == ["/poison"]  # two relays, unsigned: the later one wins ...
        r.post("/register", json={"url": node, "flows": REAL})
        assert urls_of(r, node) == ["/real"]  # ... until the node itself speaks
        update(r, "http://attacker:1", {**poisoned(node, home), "modified": iso_now(1)})
        assert urls_of(r, node) == ["/real"]
        mapped = r.get("/map").json()
        assert node in mapped["nodes"]
        assert all(node not in p["nodes"] for p in mapped["providers"].values())


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


def test_a_re_registration_relayed_from_the_home_beats_a_clamped_future_copy() -> None:
    # At a registry two hops from the node's home: the home's copies come through a peer.
    clock = Clock()
    r = MeshState("http://r:1", node=False, registry=True, clock_skew=5, clock=clock)
    home = MeshState("http://home:1", node=False, registry=True, clock=clock)
    r.accept_connect("http://relay:1", None, False, [])
    r.accept_connect("http://attacker:1", None, False, [])
    home.register(NodeRecord.from_json({"url": "http://node:1", "flows": REAL}))
    r.apply_update("http://relay:1", "u1", [], [home.nodes["http://node:1"]])
    bad = NodeRecord.from_json(poisoned("http://node:1", "http://home:1"))
    r.apply_update("http://attacker:1", "u2", [], [bad])
    assert [row["url"] for row in r.rows()] == ["/poison"]  # unsigned relays: newest wins ...
    held = r.providers["http://attacker:1"].nodes["http://node:1"]
    assert parse_timestamp(held.modified) == parse_timestamp(held.heartbeat) == clock.now + 5
    clock.now += 6  # ... but it was clamped: past the skew, the node registering again is newer
    home.register(NodeRecord.from_json({"url": "http://node:1", "flows": REAL}))
    r.apply_update("http://relay:1", "u3", [], [home.nodes["http://node:1"]])
    assert [row["url"] for row in r.rows()] == ["/real"]


def test_a_live_node_is_not_moved_to_another_home_by_a_peer() -> None:
    clock = Clock()
    r = MeshState("http://r:1", node=False, registry=True, offline_after=30, clock=clock)
    for peer in ("http://a:1", "http://b:1"):
        r.accept_connect(peer, None, False, [])

    def copy(home: str, flows: list[dict[str, Any]]) -> NodeRecord:
        stamp = r.now()
        node = {"url": "http://n:1", "registry": home, "flows": flows}
        return NodeRecord.from_json({**node, "modified": stamp, "heartbeat": stamp})

    r.apply_update("http://a:1", "u1", [], [copy("http://a:1", REAL)])
    clock.now += 1
    r.apply_update("http://b:1", "u2", [], [copy("http://b:1", POISON)])
    assert [row["url"] for row in r.rows()] == ["/real"]
    clock.now += 31  # its home fell silent: another home may take it over now
    r.apply_update("http://b:1", "u3", [], [copy("http://b:1", POISON)])
    assert [row["url"] for row in r.rows()] == ["/poison"]


# -- write limits ---------------------------------------------------------------------------------


def test_bodies_over_the_limit_are_refused_with_413() -> None:
    with registry(max_register_bytes=1_000, max_peer_bytes=2_000) as r:
        big = {"url": "http://n:1", "flows": [{"name": "x" * 100} for _ in range(20)]}
        resp = r.post("/register", json=big)
        assert resp.status_code == 413
        assert resp.json() == {"detail": "request body larger than 1000 bytes"}

        async def chunks() -> AsyncIterator[bytes]:  # no content-length: counted as it comes
            yield json.dumps(big).encode()[:900]
            yield json.dumps(big).encode()[900:]

        assert r.post("/register", content=chunks()).status_code == 413
        offer = {"url": "http://p:1", "nodes": [{"url": f"http://n{i}:1"} for i in range(100)]}
        assert r.post("/connect", json=offer).status_code == 413
        assert r.post("/register", json={"url": "http://n:1", "flows": REAL}).is_success
        assert r.get("/flows").json()["total"] == 1


def test_a_client_writing_too_fast_gets_429_and_others_do_not() -> None:
    with registry(write_rate=0.001, write_burst=3) as r:
        for i in range(3):
            assert r.post("/register", json={"url": f"http://n{i}:1"}).status_code == 200
        resp = r.post("/heartbeat", json={"url": "http://n0:1"})
        assert resp.status_code == 429 and resp.headers["retry-after"].isdigit()
        assert "too many writes from 127.0.0.1" in resp.json()["detail"]
        assert r.get("/flows").status_code == 200  # reads are not limited
        other = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=r.app, client=("10.0.0.2", 1234)),
            base_url="http://testserver",
            auth=SigningAuth(OPERATOR),
        )
        try:
            resp = r.loop.run_until_complete(other.post("/register", json={"url": "http://m:1"}))
            assert resp.status_code == 200
        finally:
            r.loop.run_until_complete(other.aclose())


# -- nodes offline for too long are removed ------------------------------------------------------


def test_nodes_offline_longer_than_offline_remove_after_are_removed() -> None:
    knobs = {"heartbeat_interval": 0.05, "offline_after": 0.15, "offline_remove_after": 0.3}
    with registry(**knobs) as r:
        r.post("/register", json={"url": "http://gone:1", "flows": REAL})
        connect(
            r, "http://peer:1", [{"url": "http://far:1", "flows": REAL, "heartbeat": iso_now()}]
        )
        assert r.get("/flows").json()["total"] == 2
        wait_until(lambda: r.get("/flows").json()["total"] == 0, what="both removed")
        assert r.get("/_stats").json()["nodes_removed"] == 2
        # A copy silent for that long already is not taken in at all.
        connect(r, "http://peer:1", [{"url": "http://old:1", "heartbeat": iso_now(-60)}])
        assert r.get("/flows").json()["total"] == 0


def test_stale_nodes_of_an_earlier_run_are_removed_when_the_cache_loads(tmp_path: Path) -> None:
    cache = tmp_path / "reg.json"
    old, recent = iso_now(-2 * 86_400), iso_now(-60)
    nodes = {
        url: {"url": url, "flows": REAL, "created": ts, "modified": ts, "heartbeat": ts}
        for url, ts in (("http://old:1", old), ("http://recent:1", recent))
    }
    cache.write_text(json.dumps({"url": REGISTRY, "nodes": nodes, "providers": {}}))
    service = MeshService(REGISTRY, node=False, registry=True, cache=str(cache))
    assert sorted(service.state.nodes) == ["http://recent:1"]  # default: removed after a day
    kept = MeshService(
        REGISTRY, node=False, registry=True, cache=str(cache), offline_remove_after=None
    )
    assert sorted(kept.state.nodes) == ["http://old:1", "http://recent:1"]


@pytest.mark.parametrize(("remove_after", "listed"), [("3600", 1), ("0", 2)])
def test_flowplex_registry_takes_offline_remove_after(
    tmp_path: Path, remove_after: str, listed: int
) -> None:
    """The CLI option reaches the registry: a node silent for two hours leaves a registry
    started with ``--offline-remove-after 3600`` and stays with ``0`` (keep)."""
    cache = tmp_path / "reg.json"
    nodes = {
        url: {"url": url, "flows": REAL, "created": ts, "modified": ts, "heartbeat": ts}
        for url, ts in (("http://old:1", iso_now(-7200)), ("http://recent:1", iso_now(-30)))
    }
    cache.write_text(json.dumps({"url": REGISTRY, "nodes": nodes, "providers": {}}))
    url = free_url()
    command = [sys.executable, "-m", "flowplex", "registry", "--url", url, "--cache", str(cache)]
    command += ["--home", str(tmp_path / "home"), "--offline-remove-after", remove_after]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        flows = wait_until(
            lambda: httpx.get(f"{url}/flows").json(), what="flowplex registry answering"
        )
        assert flows["total"] == listed
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=20)


def test_offline_remove_after_is_checked() -> None:
    with pytest.raises(ConfigurationError, match="must not be shorter than offline_after"):
        MeshService(REGISTRY, registry=True, offline_after=60, offline_remove_after=30)
    with pytest.raises(ConfigurationError, match="offline_remove_after must be a positive"):
        MeshService(REGISTRY, registry=True, offline_remove_after=-1)


# -- the cache ------------------------------------------------------------------------------------


def test_the_cache_is_written_after_the_request_and_flushed_on_shutdown(tmp_path: Path) -> None:
    cache = tmp_path / "reg.json"
    service = MeshService(REGISTRY, node=False, registry=True, cache=str(cache), cache_interval=60)
    with AppClient(create_app(mesh=service), key=OPERATOR) as r:
        assert r.post("/register", json={"url": "http://n:1", "flows": REAL}).status_code == 200
        assert not cache.exists()  # the request did not wait for the disk
    assert list(json.loads(cache.read_text())["nodes"]) == ["http://n:1"]


def test_the_background_writer_keeps_the_cache_current(tmp_path: Path) -> None:
    cache = tmp_path / "reg.json"
    with registry(cache=str(cache), cache_interval=0.05) as r:
        for i in range(3):
            r.post("/register", json={"url": f"http://n{i}:1", "flows": REAL})

        def cached_nodes() -> list[str]:
            r.get("/")
            return sorted(json.loads(cache.read_text())["nodes"]) if cache.exists() else []

        wait_until(lambda: len(cached_nodes()) == 3, what="three nodes cached")
        assert json.loads(cache.read_text()) == r.get("/_cache").json()


WRITER = textwrap.dedent(
    """
    import sys
    from flowplex.mesh import MeshState, NodeRecord
    from flowplex.mesh._cache import FrameEncoder, JsonCache

    state = MeshState("http://localhost:3366", node=False, registry=True)
    cache, encoder = JsonCache(sys.argv[1]), FrameEncoder()
    for n in range(200):
        flows = [{"url": f"/f{f}", "name": "x" * 200} for f in range(20)]
        state.register(NodeRecord.from_json({"url": f"http://n{n}:1", "flows": flows}))
    i = 0
    while True:
        i += 1
        state.register(NodeRecord.from_json({"url": "http://counter:1", "organization": str(i)}))
        cache.write_text(encoder.encode(state.frame()))
        print(i, flush=True)
    """
)


def test_a_writer_killed_mid_write_never_leaves_a_cache_that_fails_to_load(
    tmp_path: Path,
) -> None:
    cache = tmp_path / "reg.json"
    for kill in range(5):
        proc = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(cache)], stdout=subprocess.PIPE, text=True
        )
        assert proc.stdout is not None
        for _ in range(kill + 2):  # a few complete writes, then kill it in the middle of one
            proc.stdout.readline()
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        proc.stdout.close()
        data = JsonCache(cache).load()
        assert data is not None and len(data["nodes"]) == 201
        state = MeshState(REGISTRY, node=False, registry=True)
        state.restore(data)
        JsonCache(cache).remove_leftovers()
        assert [p.name for p in tmp_path.iterdir()] == ["reg.json"]


def test_the_encoder_writes_what_the_snapshot_says() -> None:
    from flowplex.mesh._cache import FrameEncoder

    state = MeshState(REGISTRY, "org", node=False, registry=True)
    state.accept_connect(
        "http://p:1", "peer org", True, [NodeRecord.from_json({"url": "http://a:1"})]
    )
    encoder = FrameEncoder()
    for i in range(3):  # the memo: unchanged records reuse their text, changed ones do not
        state.register(NodeRecord.from_json({"url": f"http://n{i}:1", "flows": REAL}))
        state.heartbeat("http://n0:1")
        assert json.loads(encoder.encode(state.frame())) == state.snapshot()


def test_a_running_service_accepts_url_objects(tmp_path: Path) -> None:
    service = MeshService(
        httpx.URL("http://127.0.0.1:3366"), connect=[httpx.URL("http://LOCALHOST:3370/")]
    )
    assert service.state.url == "http://localhost:3366"
    assert service.targets == ["http://localhost:3370"]
    assert MeshService(REGISTRY, connect=httpx.URL("http://r:1")).targets == ["http://r:1"]
