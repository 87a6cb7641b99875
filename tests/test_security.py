"""Each attack of the trust-boundary issue, replayed: it must fail now.

- Registry SSRF and amplification: ``/connect`` from anyone adds no peer.
- Listing poisoning: ``/update/node`` from a non-peer, or from a peer's URL with another key,
  and ``/register``/``/heartbeat`` of a node's URL with another key change nothing.
- Artifact tampering: other bytes for a saved version (409), a version from the future (422),
  unsigned writes (401), a large body (413) and a streamed upload cut off early (413).
- Users on a node: no private key in the tables, a handle needs the key, the runtime sets a
  message's ``user_id``, a future is answered only by its request's target instance.
- The old unsigned protocol stays behind one switch (``insecure=True``), with a warning.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import stat
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import inspect

import flowplex
from flowplex import serving
from flowplex._httpsign import SigningAuth
from flowplex.artifacts import ArtifactExistsError, FileSaver, MemorySaver, OpStore, Version
from flowplex.db import create_engine
from flowplex.errors import PermissionDeniedError
from flowplex.identity import (
    KeyPair,
    content_digest,
    generate_key_pair,
    load_key_pair,
    sign_request,
)
from flowplex.mesh import MeshService, NodeRecord
from flowplex.runtime import Client, UserRecord
from flowplex.server import create_app
from flowplex.workers import run_dispatch_worker_thread
from mesh_helpers import AppClient

REGISTRY = "http://localhost:3366"
PEER = "http://localhost:3377"
NODE = "http://real-node:1"
FAR_FUTURE = "2999-01-01T00:00:00+00:00"
REAL = {"url": NODE, "flows": [{"url": "/real", "name": "real"}]}
ATTACKER = generate_key_pair()
NODE_KEY = generate_key_pair()
PEER_KEY = generate_key_pair()
OPERATOR = generate_key_pair()


def registry(key: KeyPair | None, **knobs: Any) -> AppClient:
    service = MeshService(REGISTRY, node=False, registry=True, **knobs)
    return AppClient(create_app(mesh=service), key=key)


def as_(r: AppClient, key: KeyPair | None, path: str, body: Any) -> httpx.Response:
    """POST ``body`` to the registry ``r`` signed by ``key`` (None: unsigned)."""
    auth = SigningAuth(key) if key is not None else None
    return r.loop.run_until_complete(r.client.post(path, json=body, auth=auth))  # type: ignore[arg-type]


def flow_urls(r: AppClient) -> list[str]:
    return sorted(row["url"] for row in r.get("/flows", params={"pp": 100}).json()["items"])


# -- registry SSRF and amplification -------------------------------------------------------------


def test_connect_from_anyone_adds_no_peer() -> None:
    with registry(None) as r:
        offer = {"url": "http://0x7f000001:9", "nodes": {}}
        assert as_(r, None, "/connect", offer).status_code == 401
        refused = as_(r, ATTACKER, "/connect", offer)
        assert refused.status_code == 403
        assert "not a configured peer" in refused.json()["detail"]
        assert r.get("/_stats").json()["peers"] == []
        assert r.get("/_cache").json()["peers"] == {}


def test_configured_peers_and_operators_may_connect() -> None:
    with registry(None, peers=[PEER], operators=[OPERATOR.user_id]) as r:
        assert as_(r, PEER_KEY, "/connect", {"url": PEER, "feed": False}).status_code == 200
        # The peer's key is pinned: another key cannot speak for that URL afterwards.
        again = as_(r, ATTACKER, "/connect", {"url": PEER, "feed": False})
        assert again.status_code == 403
        # An operator may connect any registry, naming its key.
        other = {"url": "http://other:1", "feed": False, "key": ATTACKER.user_id}
        assert as_(r, OPERATOR, "/connect", other).status_code == 200
        assert r.get("/_cache").json()["keys"] == {
            PEER: PEER_KEY.user_id,
            "http://other:1": ATTACKER.user_id,
        }


# -- listing poisoning ---------------------------------------------------------------------------


def _poison(sender: str) -> dict[str, Any]:
    node = {
        "url": NODE,
        "registry": "http://elsewhere:1",
        "modified": FAR_FUTURE,
        "heartbeat": FAR_FUTURE,
        "flows": [{"url": "/poison", "name": "poison"}],
    }
    return {"url": sender, "id": "u1", "nodes": {NODE: node}}


def test_update_node_from_a_stranger_or_a_forged_peer_changes_nothing() -> None:
    with registry(None, peers=[PEER]) as r:
        assert as_(r, NODE_KEY, "/register", REAL).status_code == 200
        assert as_(r, PEER_KEY, "/connect", {"url": PEER, "feed": False}).status_code == 200
        stranger = as_(r, ATTACKER, "/update/node", _poison("http://stranger:1"))
        assert stranger.status_code == 403
        forged = as_(r, ATTACKER, "/update/node", _poison(PEER))  # the peer's URL, not its key
        assert forged.status_code == 403
        assert "not signed by that registry's key" in forged.json()["detail"]
        assert as_(r, None, "/update/node", _poison(PEER)).status_code == 401
        assert flow_urls(r) == ["/real"]


def test_a_node_url_belongs_to_the_key_that_registered_it_first() -> None:
    with registry(None) as r:
        assert as_(r, NODE_KEY, "/register", REAL).status_code == 200
        hijack = {"url": NODE, "flows": [{"url": "/poison", "name": "poison"}]}
        refused = as_(r, ATTACKER, "/register", hijack)
        assert refused.status_code == 403 and "another key" in refused.json()["detail"]
        assert as_(r, ATTACKER, "/heartbeat", {"url": NODE}).status_code == 403
        assert flow_urls(r) == ["/real"]
        # The real node registers again with its key: still its own.
        assert as_(r, NODE_KEY, "/register", REAL).status_code == 200


def test_trust_lets_only_listed_keys_register() -> None:
    with registry(None, trust=[NODE_KEY.user_id]) as r:
        assert as_(r, ATTACKER, "/register", {"url": "http://a:1"}).status_code == 403
        assert as_(r, NODE_KEY, "/register", REAL).status_code == 200


def test_unsigned_writes_get_401_and_a_replay_is_refused() -> None:
    with registry(None) as r:
        for path in ("/register", "/heartbeat", "/connect", "/update/node"):
            resp = as_(r, None, path, {"url": NODE})
            assert resp.status_code == 401, path
        body = b'{"url": "http://n:1"}'
        headers = {
            "content-type": "application/json",
            **sign_request(NODE_KEY, "POST", "/register", body),
        }
        first = r.post("/register", content=body, headers=headers)
        assert first.status_code == 200
        replay = r.post("/register", content=body, headers=headers)
        assert replay.status_code == 401 and "replayed" in replay.json()["detail"]


def test_insecure_registry_accepts_the_old_protocol_and_warns(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="flowplex.security"):
        r = registry(None, insecure=True)
    assert "UNSIGNED" in caplog.text
    with r:
        assert as_(r, None, "/register", REAL).status_code == 200
        assert flow_urls(r) == ["/real"]


# -- artifact tampering --------------------------------------------------------------------------


@pytest.fixture
def store(tmp_path: Path) -> Iterator[OpStore]:
    s = OpStore(
        FileSaver(tmp_path / "ops"),
        f"sqlite:///{tmp_path}/ops.db",
        max_request_bytes=64 * 1024,
        max_artifact_bytes=1 << 20,
    )
    yield s
    s.close()


def test_version_bytes_are_written_once(store: OpStore) -> None:
    v = Version()
    store.register_valid_link(None, "op", v)
    store.save_op_bytes("op", v, b"original")
    store.save_op_bytes("op", v, b"original")  # the same bytes again: nothing changes
    with pytest.raises(ArtifactExistsError, match="written once"):
        store.save_op_bytes("op", v, b"tampered")
    with pytest.raises(ArtifactExistsError):
        store.client().upload_op_bytes("op", v, [b"tam", b"pered"])
    assert store.get_op_bytes_for_version("op", v) == b"original"
    memory = OpStore(MemorySaver())
    memory.register_valid_link(None, "op", v)
    memory.save_op_bytes("op", v, b"original")
    with pytest.raises(ArtifactExistsError):
        memory.save_op_bytes("op", v, b"tampered")
    memory.close()


async def _lazy_gigabyte(sent: list[int]) -> AsyncIterator[bytes]:
    chunk = b"x" * (64 * 1024)
    for _ in range(16 * 1024):  # 1 GiB, made only as fast as it is read
        sent[0] += len(chunk)
        yield chunk


def test_artifact_tampering_over_http(store: OpStore) -> None:
    async def run() -> None:
        transport = httpx.ASGITransport(app=store.app)
        async with (
            httpx.AsyncClient(transport=transport, base_url="http://t") as plain,
            httpx.AsyncClient(
                transport=transport, base_url="http://t", auth=SigningAuth(ATTACKER)
            ) as signed,
        ):
            v = Version()
            link = {"upstream_op_name": "op", "upstream_op_version": str(v)}
            assert (await plain.post("/v1/register_valid_link", json=link)).status_code == 401
            assert (await signed.post("/v1/register_valid_link", json=link)).status_code == 200
            save = {"op_name": "op", "version": str(v), "bytes": base64.b64encode(b"a").decode()}
            assert (await plain.post("/v1/save_op_bytes", json=save)).status_code == 401
            assert (await signed.post("/v1/save_op_bytes", json=save)).status_code == 200
            assert (await signed.post("/v1/save_op_bytes", json=save)).status_code == 200
            other = {**save, "bytes": base64.b64encode(b"b").decode()}
            conflict = await signed.post("/v1/save_op_bytes", json=other)
            assert conflict.status_code == 409
            assert conflict.headers["X-Flowplex-Error"] == "ArtifactExistsError"
            # A version dated 9999 would be "latest" for good: refused.
            future = Version(creation_time=Version.parse(str(v)).creation_time.replace(year=9999))
            dated = await signed.post(
                "/v1/register_valid_link", json={**link, "upstream_op_version": str(future)}
            )
            assert dated.status_code == 422 and "in the future" in dated.json()["detail"]
            # A body over max_request_bytes: 413 before it is parsed.
            big = {**save, "bytes": "A" * (128 * 1024)}
            assert (await signed.post("/v1/save_op_bytes", json=big)).status_code == 413
            # A 1 GiB streamed PUT (signed with a made-up digest) is cut off at the limit.
            store.register_valid_link(None, "blob", v)
            sent = [0]
            target = f"/v1/op_bytes?op_name=blob&version={v}"
            request = plain.build_request("PUT", target, content=_lazy_gigabyte(sent))
            request.headers.update(
                sign_request(
                    ATTACKER, "PUT", request.url.raw_path.decode(), digest=content_digest(b"0" * 32)
                )
            )
            cut = await plain.send(request)
            assert cut.status_code == 413
            assert sent[0] < 4 * (1 << 20), f"{sent[0]} bytes read before the cut"
            unsigned = await plain.put(target, content=_lazy_gigabyte(sent := [0]))
            assert unsigned.status_code == 401 and sent[0] < 4 * (1 << 20)
            # A signed body that is not the one signed is not kept.
            request = plain.build_request("PUT", target, content=b"real")
            request.headers.update(
                sign_request(ATTACKER, "PUT", request.url.raw_path.decode(), b"fake")
            )
            assert (await plain.send(request)).status_code == 401
            assert not store.saver.exists(f"/models/blob/{store.registered_version('blob', v)}")

    asyncio.run(run())


def test_an_insecure_op_store_takes_unsigned_writes(tmp_path: Path) -> None:
    store = OpStore(MemorySaver(), insecure=True)
    try:

        async def run() -> int:
            transport = httpx.ASGITransport(app=store.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as plain:
                link = {"upstream_op_name": "op", "upstream_op_version": str(Version())}
                return (await plain.post("/v1/register_valid_link", json=link)).status_code

        assert asyncio.run(run()) == 200
    finally:
        store.close()


# -- users on a node -----------------------------------------------------------------------------


@pytest.fixture
def users(tmp_path: Path) -> Iterator[list[Client]]:
    cls = flowplex.start_node_with_users(2, path=tmp_path, db=f"sqlite:///{tmp_path}/n.db")
    for cl in cls:
        run_dispatch_worker_thread(cl)
    yield cls
    cls[0].node.close()


def test_private_keys_live_in_key_files_not_in_the_tables(
    users: list[Client], tmp_path: Path
) -> None:
    node = users[0].node
    engine = create_engine(f"sqlite:///{tmp_path}/n.db")
    try:
        columns = {c["name"] for c in inspect(engine).get_columns("users")}
    finally:
        engine.dispose()
    assert columns == {"user_id", "created_at"}
    for cl in users:
        path = tmp_path / "keys" / f"{cl.user_id}.pem"
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert load_key_pair(path) == cl.key
    assert [u.user_id for u in node.backend.list_users()] == [cl.user_id for cl in users]


def test_a_handle_needs_the_users_key(users: list[Client], tmp_path: Path) -> None:
    node = users[0].node
    stranger = generate_key_pair()

    node.backend.add_user(UserRecord(stranger.user_id, 0.0))  # a user whose key is elsewhere
    with pytest.raises(PermissionDeniedError, match="needs that user's key"):
        Client(node, stranger.user_id)
    assert stranger.user_id not in [cl.user_id for cl in node.users()]
    assert Client(node, stranger).user_id == stranger.user_id  # with the key, it works
    assert Client(node, users[1].user_id).key == users[1].key  # the key file's owner


def test_the_runtime_sets_the_senders_user_id(users: list[Client]) -> None:
    u0, u1 = users
    serving.serve_flow(u0, "flowplex.examples.ReverseNumberAtomicFlow", "rev")
    proxy = serving.get_flow_instance(u1, "rev", user_id=u0.user_id)
    message = proxy.package_input_message({"number": 12}).replace(user_id=u0.user_id)
    future = proxy.get_reply_future(message)
    assert future.get_data(timeout=10) == {"output_number": 21}
    log = u0.node.backend.message_log(proxy.get_instance_id())
    assert [json.loads(entry.body)["user_id"] for entry in log] == [u1.user_id]


def test_a_future_is_answered_only_by_its_requests_target(users: list[Client]) -> None:
    u0, u1 = users
    serving.serve_flow(u0, "flowplex.examples.ReverseNumberAtomicFlow", "rev")
    target = serving.get_flow_instance(u0, "rev", user_id=u0.user_id)
    mine = serving.get_flow_instance(u1, "rev", user_id=u0.user_id)
    future = target.get_reply_future(target.package_input_message({"number": 1234}))
    future_id = future.future_id
    assert future_id.endswith("@" + target.get_instance_id())
    forged = target.package_input_message({"output_number": 666}).replace(
        reply_data={"mode": "future", "future_id": future_id},
        src_flow_id=target.get_instance_id(),
    )
    with pytest.raises(PermissionDeniedError, match="does not serve instance"):
        u1.send_reply(forged)
    # A reply claiming another instance (u1's own) is dropped by the runtime.
    u1.node.deliver(replies=[forged.replace(src_flow_id=mine.get_instance_id())])
    assert future.get_data(timeout=10) == {"output_number": 4321}


@pytest.fixture(params=["sqlite", "postgres"])
def old_db(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/old/node.db"
    url: str = request.getfixturevalue("pg_url")
    return url


def test_the_migration_moves_private_keys_out_of_the_table(old_db: str, tmp_path: Path) -> None:
    from alembic import command
    from sqlalchemy import text

    from flowplex.db import ensure_schema, keys_dir
    from flowplex.db.migrate import alembic_config, locked_connection

    (tmp_path / "old").mkdir()
    with locked_connection(old_db) as connection:  # a database as the previous release left it
        config = alembic_config(old_db)
        config.attributes["connection"] = connection
        command.upgrade(config, "0004_dashboard")
    pairs = [generate_key_pair() for _ in range(2)]
    with locked_connection(old_db) as connection:
        for i, pair in enumerate(pairs):
            connection.execute(
                text("INSERT INTO users (user_id, private_key, created_at) VALUES (:u, :k, :t)"),
                {"u": pair.user_id, "k": pair.private_key, "t": float(i)},
            )
    ensure_schema(old_db)
    folder = keys_dir(old_db)
    assert folder == (
        tmp_path / "old" / "keys" if old_db.startswith("sqlite") else tmp_path / ".flowplex/keys"
    )
    for pair in pairs:
        path = folder / f"{pair.user_id}.pem"
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert load_key_pair(path) == pair
    engine = create_engine(old_db)
    try:
        columns = {c["name"] for c in inspect(engine).get_columns("users")}
    finally:
        engine.dispose()
    assert "private_key" not in columns
    node = flowplex.runtime.open_node(old_db, tmp_path / "elsewhere")
    try:
        assert [cl.key for cl in node.users()] == pairs  # found where the migration put them
    finally:
        node.close()


def test_a_node_signs_its_registration_with_its_own_key_file() -> None:
    from mesh_helpers import free_url, get, loader1, services, start, wait_until

    registry_url, node_url = free_url(), free_url()
    plain = {"key": None, "operators": ()}  # the defaults, not the test harness's shared key
    with services() as procs:
        procs.append(start(url=registry_url, node=False, registry=True, **plain))
        procs.append(start(url=node_url, connect=[registry_url], loader=loader1, **plain))
        wait_until(lambda: get(registry_url, "/flows")["items"], what="the node's flows listed")
        pinned = get(registry_url, "/_cache")["keys"]
    home = Path(os.environ["FLOWPLEX_HOME"])
    name = node_url.split("://", 1)[1].replace(":", "-")
    node_key = load_key_pair(home / "keys" / f"mesh-{name}.pem")
    assert pinned == {node_url: node_key.user_id}


def test_a_node_known_without_a_key_is_asked_to_register_again() -> None:
    service = MeshService(REGISTRY, node=False, registry=True)
    service.state.register(NodeRecord(NODE, None))  # as an older cache (no keys) left it
    with AppClient(create_app(mesh=service)) as r:
        again = as_(r, NODE_KEY, "/heartbeat", {"url": NODE})
        assert again.status_code == 404 and "POST /register" in again.json()["detail"]
        assert as_(r, NODE_KEY, "/register", REAL).status_code == 200
        assert as_(r, NODE_KEY, "/heartbeat", {"url": NODE}).status_code == 200
        assert as_(r, ATTACKER, "/heartbeat", {"url": NODE}).status_code == 403


def test_the_cli_switch_keeps_the_old_protocol(tmp_path: Path) -> None:
    import subprocess
    import sys

    from mesh_helpers import free_url, get, wait_until

    for insecure in (False, True):
        url = free_url()
        command = [sys.executable, "-m", "flowplex", "registry", "--url", url]
        command += ["--home", str(tmp_path / str(insecure))]
        proc = subprocess.Popen(
            [*command, *(["--insecure"] if insecure else [])],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            wait_until(lambda u=url: get(u), what="flowplex registry up")
            status = httpx.post(f"{url}/register", json={"url": "http://n:1"}).status_code
        finally:
            proc.terminate()
            _, err = proc.communicate(timeout=20)
        assert status == (200 if insecure else 401)
        assert ("UNSIGNED" in err) is insecure
        assert (tmp_path / str(insecure) / "keys" / "registry.pem").is_file()


def test_configured_peers_exchange_signed_updates_with_their_own_keys() -> None:
    from mesh_helpers import free_url, get, loader1, services, start, wait_until

    first, second, node = free_url(), free_url(), free_url()
    plain: dict[str, Any] = {"key": None, "operators": ()}
    with services() as procs:
        procs.append(start(url=first, node=False, registry=True, peers=[second], **plain))
        procs.append(start(url=second, node=False, registry=True, connect=[first], **plain))
        procs.append(start(url=node, connect=[second], loader=loader1, **plain))
        rows = wait_until(lambda: get(first, "/flows")["items"], what="the relayed flows")
        assert [r["url"] for r in rows] == ["/mytest"]
        assert set(get(first, "/_cache")["keys"]) == {second}
        assert node in get(second, "/_cache")["keys"]
        # A registry nobody configured is refused, even when it signs.
        stranger = free_url()
        procs.append(start(url=stranger, node=False, registry=True, connect=[first], **plain))
        wait_until(lambda: get(stranger, "/")["idle"], what="the stranger gives up")
        assert stranger not in get(first, "/_stats")["peers"]
