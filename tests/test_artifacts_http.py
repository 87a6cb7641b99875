"""The reference's op store scenarios over HTTP, against real servers (uvicorn on 127.0.0.1,
an ephemeral port) on SQLite and PostgreSQL; garbage to every route in process (ASGI)."""

from __future__ import annotations

import asyncio
import io
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from flowplex import AtomicFlow, FlowMessage, run_local
from flowplex._httpsign import SigningAuth
from flowplex.artifacts import (
    ArtifactNotFoundError,
    CorruptArtifactError,
    FileSaver,
    InvalidRequestError,
    LoadableOp,
    NotRegisteredError,
    OpStore,
    OpStoreClient,
    OpStoreUnavailableError,
    Pipeline,
    Version,
    VersionError,
    VersionType,
    connect,
    load_artifact,
    op_path,
    save_artifact,
)
from flowplex.db import create_engine, schema
from flowplex.errors import ConfigurationError
from mesh_helpers import OPERATOR as KEY
from mesh_helpers import Server
from waiting import wait_for


@pytest.fixture(params=["sqlite", "postgres"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/ops.db"
    url: str = request.getfixturevalue("pg_url")
    return url


@pytest.fixture
def store(db: str, tmp_path: Path) -> Iterator[OpStore]:
    s = OpStore(FileSaver(tmp_path / "ops"), db)
    yield s
    s.close()


@pytest.fixture
def server(store: OpStore) -> Iterator[Server]:
    srv = Server(store.app)
    yield srv
    srv.stop()


@pytest.fixture
def client(server: Server) -> Iterator[OpStoreClient]:
    with OpStoreClient(server.url, key=KEY) as c:
        yield c


def count(db: str, table: Any) -> int:
    engine = create_engine(db)
    try:
        with engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(table)).scalar_one())
    finally:
        engine.dispose()


def numbers(client: OpStoreClient, op: str) -> list[str]:
    return [str(info.number) for info in client.get_version_numbers(op)]


# -- reference scenarios 3-9 ----------------------------------------------------------------


def test_link_on_empty_store_creates_ops_version_and_link(client: OpStoreClient, db: str) -> None:
    v = Version()
    client.register_valid_link("downstream", "upstream", v)
    assert count(db, schema.opstore_ops) == 2
    assert count(db, schema.opstore_versions) == 1
    assert count(db, schema.opstore_links) == 1
    assert numbers(client, "upstream") == ["1.0.0"]
    assert client.get_validated_links("downstream", "upstream") == [v]
    # The same link again adds nothing (unique link).
    client.register_valid_link("downstream", "upstream", v)
    assert count(db, schema.opstore_links) == 1

    w = v + Version()
    client.register_valid_link("downstream", "upstream", w)
    assert numbers(client, "upstream") == ["1.0.0", "2.0.0"]
    assert count(db, schema.opstore_links) == 2
    client.register_valid_link("other", "upstream", Version(major="1" * 40))
    assert client.get_validated_links("downstream", "upstream") == [v, w]
    assert client.get_validated_links("other", "upstream") == [Version(major="1" * 40)]
    assert client.get_validated_links("upstream", "downstream") is None


def test_numbering_patch_patch_minor_major(client: OpStoreClient) -> None:
    base = Version()
    client.register_valid_link(None, "op", base)
    p1 = Version(base.major, base.minor, "1" * 40)
    p2 = Version(base.major, base.minor, "2" * 40)
    m1 = Version(base.major, "3" * 40, "2" * 40)
    big = Version("4" * 40, "3" * 40, "2" * 40)
    for v in (p1, p2, m1, big):
        client.register_valid_link(None, "op", v)
    assert numbers(client, "op") == ["1.0.0", "1.0.1", "1.0.2", "1.1.0", "2.0.0"]
    assert client.get_all_versions_of_op("op") == [base, p1, p2, m1, big]


def test_bytes_round_trip_and_file_location(
    client: OpStoreClient, store: OpStore, tmp_path: Path
) -> None:
    v = Version.atomic(VersionType.PATCH, "trained")
    client.register_valid_link(None, "model", v)
    payload = os.urandom(100_000)
    client.save_op_bytes("model", v, payload)
    assert client.get_op_bytes_for_version("model", v) == payload
    stored = store.registered_version("model", v)
    assert (tmp_path / "ops" / "models" / "model" / str(stored)).is_file()
    assert op_path("model", stored) == f"/models/model/{stored}"
    # The version parsed from the listing names the same bytes.
    (listed,) = client.get_all_versions_of_op("model") or []
    assert client.get_op_bytes_for_version("model", listed) == payload


def test_client_mistakes_are_typed_4xx(client: OpStoreClient, server: Server) -> None:
    v = Version()
    with pytest.raises(NotRegisteredError, match="op 'ghost' is not registered"):
        client.save_op_bytes("ghost", v, b"x")
    client.register_valid_link(None, "op", v)
    with pytest.raises(NotRegisteredError, match=r"version .* of op 'op' is not registered"):
        client.save_op_bytes("op", Version(major="9" * 40), b"x")
    with pytest.raises(ArtifactNotFoundError, match="no bytes were saved"):
        client.get_op_bytes_for_version("op", v)
    raw = httpx.post(
        f"{server.url}/v1/get_op_bytes_for_version",
        json={"desired_op_name": "op", "version": str(v)},
    )
    assert raw.status_code == 404
    assert "no bytes were saved" in raw.json()["detail"]
    raw = httpx.post(
        f"{server.url}/v1/save_op_bytes",
        json={"op_name": "op", "version": str(v), "bytes": "not base64!"},
        auth=SigningAuth(KEY),
    )
    assert raw.status_code == 422
    assert "base64" in raw.json()["detail"]
    with pytest.raises(InvalidRequestError, match="op name"):
        client.register_valid_link(None, "../etc", v)
    assert httpx.get(f"{server.url}/v1/register_valid_link").status_code == 405


def test_unknown_things_are_none_or_false(client: OpStoreClient) -> None:
    assert client.get_all_versions_of_op("nope") is None
    assert client.get_validated_links("a", "b") is None
    assert client.pipeline_exists("nope") is False
    assert client.get_version_numbers("nope") == []


def test_register_new_pipeline_is_idempotent(client: OpStoreClient, db: str) -> None:
    client.register_new_pipeline("pipe", "last")
    client.register_new_pipeline("pipe", "last")
    assert client.pipeline_exists("pipe") is True
    assert count(db, schema.opstore_pipelines) == 1
    engine = create_engine(db)
    with engine.connect() as conn:
        ops = schema.opstore_ops
        pipes = schema.opstore_pipelines
        last = conn.execute(
            select(ops.c.op_name).join(pipes, pipes.c.last_op_id == ops.c.id)
        ).scalar_one()
    engine.dispose()
    assert last == "last"


def test_concurrent_registrations_from_several_stores(db: str, tmp_path: Path) -> None:
    """Processes sharing one database number an op's versions uniquely (1.0.0 ... 1.0.39)."""
    stores = [OpStore(FileSaver(tmp_path), db) for _ in range(4)]
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            for j in range(10):
                version = Version(patch=f"{i:02d}{j:038d}")
                stores[i].register_valid_link(f"down{j % 2}", "shared", version)
                stores[i].register_new_pipeline("pipe", f"down{j % 2}")
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    infos = stores[0].get_version_numbers("shared")
    assert [str(i.number) for i in infos] == [f"1.0.{p}" for p in range(40)]
    assert count(db, schema.opstore_ops) == 3
    assert count(db, schema.opstore_links) == 40
    assert count(db, schema.opstore_pipelines) == 1
    for s in stores:
        s.close()


def test_saving_a_pipeline_again_adds_nothing(client: OpStoreClient, db: str) -> None:
    ops = [Weights(), Bias()]
    Pipeline("p", ops).save(client)
    tables = (schema.opstore_ops, schema.opstore_versions, schema.opstore_links)
    first = [count(db, t) for t in tables]
    assert first == [2, 2, 1]
    Pipeline("p", [Weights(), Bias()]).save(client)  # a restart: same code, same versions
    assert [count(db, t) for t in tables] == first
    assert count(db, schema.opstore_pipelines) == 1


# -- pipelines over HTTP --------------------------------------------------------------------


class Weights(LoadableOp):
    """Multiplies by trained weights; training makes a new major."""

    def __init__(self, weight: int = 1) -> None:
        self.weight = weight

    def execute(self, value: Any) -> Any:
        return value * self.weight

    def fit(self, weight: int, when: str) -> None:
        self.weight = weight
        self.mark_changed(VersionType.MAJOR, when)

    def serialize(self) -> bytes:
        return str(self.weight).encode()

    def load(self, data: bytes) -> None:
        self.weight = int(data)


class Bias(Weights):
    """Adds a trained bias; training makes a new patch."""

    def execute(self, value: Any) -> Any:
        return value + self.weight

    def fit(self, weight: int, when: str) -> None:
        self.weight = weight
        self.mark_changed(VersionType.PATCH, when)


def test_pipeline_save_load_and_refused_load_over_http(client: OpStoreClient, db: str) -> None:
    Pipeline("pred", [Weights(), Bias()]).save(client)  # the start-up save
    w, b = Weights(), Bias()
    w.fit(10, "t1")
    b.fit(1, "t1")
    Pipeline("train", [w, b]).save(client)
    assert client.pipeline_exists("pred") and client.pipeline_exists("train")

    pred = Pipeline("pred", [Weights(), Bias()])
    pred.load(client)
    assert pred.run(3) == 31

    w2 = Weights()
    w2.fit(100, "t2")
    Pipeline("train_weights", [w2]).save(client)
    rows = [count(db, t) for t in (schema.opstore_versions, schema.opstore_links)]
    with pytest.raises(VersionError):
        pred.load(client)
    assert pred.run(3) == 31
    # The refused load wrote nothing either.
    assert [count(db, t) for t in (schema.opstore_versions, schema.opstore_links)] == rows


# -- streaming, corruption, URL handling ----------------------------------------------------


def test_streaming_upload_and_download(client: OpStoreClient, store: OpStore) -> None:
    v = Version()
    client.register_valid_link(None, "big", v)
    blob = os.urandom(3 * 1024 * 1024 + 7)
    chunks = (blob[i : i + 65536] for i in range(0, len(blob), 65536))
    info = client.upload_op_bytes("big", v, chunks)
    assert info.size == len(blob)
    sink = io.BytesIO()
    assert client.download_op_bytes("big", v, sink).sha256 == info.sha256
    assert sink.getvalue() == blob
    assert client.get_op_bytes_for_version("big", v) == blob  # the seed's route sees it too
    with pytest.raises(NotRegisteredError):
        client.upload_op_bytes("big", Version(patch="5" * 40), [b"x"])
    with pytest.raises(ArtifactNotFoundError):
        client.register_valid_link(None, "empty", v)
        client.download_op_bytes("empty", v, io.BytesIO())


def test_large_artifacts_stream_in_bounded_memory(client: OpStoreClient, tmp_path: Path) -> None:
    """64 MB up and down through the native routes (client and server in this process)
    without ever holding the artifact whole: the traced peak stays far below its size."""
    import hashlib
    import tracemalloc

    v = Version()
    client.register_valid_link(None, "huge", v)
    piece = os.urandom(1024 * 1024)
    total = 64
    expected = hashlib.sha256()
    for _ in range(total):
        expected.update(piece)

    class Sink(io.RawIOBase):
        def __init__(self) -> None:
            self.digest = hashlib.sha256()
            self.size = 0

        def writable(self) -> bool:
            return True

        def write(self, b: Any) -> int:
            self.digest.update(b)
            self.size += len(b)
            return len(b)

    tracemalloc.start()
    try:
        info = client.upload_op_bytes("huge", v, (piece for _ in range(total)))
        sink = Sink()
        client.download_op_bytes("huge", v, sink)  # type: ignore[arg-type]
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert info.size == total * len(piece) and info.sha256 == expected.hexdigest()
    assert sink.size == info.size and sink.digest.hexdigest() == info.sha256
    assert peak < 16 * 1024 * 1024, f"peak {peak / 1e6:.1f} MB for a {total} MB artifact"


def test_interrupted_upload_keeps_the_old_bytes(
    client: OpStoreClient, store: OpStore, tmp_path: Path
) -> None:
    v = Version()
    client.register_valid_link(None, "op", v)
    client.save_op_bytes("op", v, b"old bytes")

    def broken() -> Iterator[bytes]:
        yield b"new " * 100_000
        raise RuntimeError("the sender died")

    with pytest.raises(RuntimeError, match="sender died"):
        client.upload_op_bytes("op", v, broken())
    with pytest.raises(InvalidRequestError, match="iterable of bytes chunks"):
        client.upload_op_bytes("op", v, b"abc")  # type: ignore[arg-type]
    folder = tmp_path / "ops" / "models" / "op"
    name = str(store.registered_version("op", v))
    wait_for(  # the server drops its temporary file
        lambda: sorted(p.name for p in folder.iterdir()) == [name, f"{name}.sha256"],
        "only the bytes and their checksum to remain",
        timeout=10,
    )
    assert client.get_op_bytes_for_version("op", v) == b"old bytes"


def test_corrupted_bytes_are_reported_not_served(
    client: OpStoreClient, store: OpStore, tmp_path: Path
) -> None:
    v = Version()
    client.register_valid_link(None, "op", v)
    client.save_op_bytes("op", v, b"precious" * 1000)
    path = tmp_path / "ops" / "models" / "op" / str(store.registered_version("op", v))
    raw = bytearray(path.read_bytes())
    raw[3] ^= 0x01
    path.write_bytes(bytes(raw))
    with pytest.raises(CorruptArtifactError, match="corrupted"):
        client.get_op_bytes_for_version("op", v)
    with pytest.raises(CorruptArtifactError, match="corrupted"):
        client.download_op_bytes("op", v, io.BytesIO())


def test_client_uses_its_url(tmp_path: Path) -> None:
    from starlette.applications import Starlette
    from starlette.routing import Mount

    store = OpStore(FileSaver(tmp_path), "sqlite://")
    srv = Server(Starlette(routes=[Mount("/opstore", app=store.app)]))
    try:
        with OpStoreClient(f"{srv.url}/opstore/", key=KEY) as mounted:
            mounted.register_valid_link(None, "op", Version())
            assert [str(i.number) for i in mounted.get_version_numbers("op")] == ["1.0.0"]
        with (
            OpStoreClient(srv.url, key=KEY) as wrong_prefix,
            pytest.raises(OpStoreUnavailableError),
        ):
            wrong_prefix.pipeline_exists("p")
    finally:
        srv.stop()
        store.close()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed_port = sock.getsockname()[1]
    with (
        OpStoreClient(f"http://127.0.0.1:{closed_port}", key=KEY) as nobody,
        pytest.raises(OpStoreUnavailableError, match=f"127.0.0.1:{closed_port}"),
    ):
        nobody.pipeline_exists("p")
    for bad in ("127.0.0.1:8000", "http://[::1", "http://127.0.0.1:port", "http://\x00x"):
        with pytest.raises(ConfigurationError, match="invalid op store URL"):
            OpStoreClient(bad)


def test_a_url_that_answers_something_else_is_a_typed_error() -> None:
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    async def page(_request: Any) -> PlainTextResponse:
        return PlainTextResponse("<html>not an op store</html>")

    srv = Server(Starlette(routes=[Route("/{path:path}", page, methods=["GET", "POST", "PUT"])]))
    try:
        with OpStoreClient(srv.url, key=KEY) as client:
            with pytest.raises(OpStoreUnavailableError, match="not JSON"):
                client.pipeline_exists("p")
            with pytest.raises(OpStoreUnavailableError, match="not JSON"):
                client.upload_op_bytes("op", Version(), [b"x"])
    finally:
        srv.stop()


def test_mounted_in_flowplex_server_and_as_a_router(tmp_path: Path) -> None:
    from flowplex.server import create_app

    store = OpStore(FileSaver(tmp_path), f"sqlite:///{tmp_path}/ops.db")
    srv = Server(create_app(mounts={"/opstore": store.app}, routers=[store.router]))
    try:
        for url in (f"{srv.url}/opstore", srv.url):
            with OpStoreClient(url, key=KEY) as client:
                v = Version.atomic(VersionType.MAJOR, url)
                client.register_valid_link(None, "op", v)
                client.save_op_bytes("op", v, url.encode())
                assert client.get_op_bytes_for_version("op", v) == url.encode()
                with pytest.raises(NotRegisteredError):
                    client.save_op_bytes("ghost", v, b"x")
                with pytest.raises(InvalidRequestError):
                    client.pipeline_exists("")
        assert [str(i.number) for i in store.get_version_numbers("op")] == ["1.0.0", "2.0.0"]
    finally:
        srv.stop()
        store.close()


# -- flows use the same store ----------------------------------------------------------------


class TokenizerFlow(AtomicFlow):
    """Saves its vocabulary as a versioned artifact, or loads the latest one."""

    default_config = {"name": "Tokenizer", "description": "Keeps its vocabulary in the op store."}

    def run(self, input_message: FlowMessage) -> dict[str, Any]:
        with connect(self.flow_config["opstore"]) as store:
            if "vocabulary" in input_message.data:
                data = " ".join(input_message.data["vocabulary"]).encode()
                version = save_artifact(store, "vocabulary", data)
                return {"saved": str(version)}
            version, data = load_artifact(store, "vocabulary")
            return {"vocabulary": data.decode().split(), "version": str(version)}


def test_flows_save_and_load_artifacts_through_the_store(
    client: OpStoreClient, server: Server
) -> None:
    overrides = {"opstore": server.url}
    saved = run_local(TokenizerFlow, {"vocabulary": ["a", "b"]}, overrides)
    loaded = run_local(TokenizerFlow, {}, overrides)
    assert loaded == {"vocabulary": ["a", "b"], "version": saved["saved"]}
    run_local(TokenizerFlow, {"vocabulary": ["a", "b", "c"]}, overrides)
    assert numbers(client, "vocabulary") == ["1.0.0", "1.0.1"]
    assert run_local(TokenizerFlow, {}, overrides)["vocabulary"] == ["a", "b", "c"]


# -- garbage to every route (in process) -----------------------------------------------------

ROUTES = [
    "get_all_versions_of_op",
    "get_version_numbers",
    "get_validated_links",
    "get_op_bytes_for_version",
    "save_op_bytes",
    "register_valid_link",
    "pipeline_exists",
    "register_new_pipeline",
]
GOOD_VERSION = str(Version())
GARBAGE: list[Any] = [
    b"",
    b"not json",
    b"[1, 2, 3]",
    b"null",
    b'"a string"',
    b"{}",
    b'{"desired_op_name": 5, "op_name": [], "pipeline_name": null}',
    b'{"desired_op_name": "\\ud800", "op_name": "\\udfff", "pipeline_name": "\\ud800",'
    b' "downstream_op_name": "\\ud800", "upstream_op_name": "\\ud800", "last_op_name": "x"}',
    b'{"desired_op_name": "a/b", "op_name": "..", "pipeline_name": "", "last_op_name": "\\u0000",'
    b' "downstream_op_name": "x", "upstream_op_name": "", "version": "v1",'
    b' "upstream_op_version": 3, "bytes": "@@@"}',
    (
        f'{{"desired_op_name": "op\\n", "op_name": "op", "version": "{GOOD_VERSION[:-3]}xyz",'
        f' "upstream_op_name": "op\\t", "upstream_op_version": "1.0.0",'
        f' "downstream_op_name": "op", "bytes": "%%%%", "pipeline_name": "{"p" * 100_000}",'
        f' "last_op_name": "x"}}'
    ).encode(),
    (  # a time that overflows when converted to UTC
        f'{{"desired_op_name": "", "op_name": "op", "version": "{GOOD_VERSION[:121]}0001-01-01'
        f' 00:00:00+05:00", "upstream_op_name": "op", "upstream_op_version":'
        f' "{GOOD_VERSION[:121]}0001-01-01 00:00:00+05:00", "downstream_op_name": "",'
        f' "bytes": "", "pipeline_name": "", "last_op_name": ""}}'
    ).encode(),
    (  # 200 characters but 400 bytes: too long for a file name
        f'{{"desired_op_name": "{"é" * 200}", "op_name": "{"é" * 200}", "version":'
        f' "{GOOD_VERSION}", "upstream_op_name": "{"é" * 200}", "upstream_op_version":'
        f' "{GOOD_VERSION}", "downstream_op_name": "{"é" * 200}", "bytes": "",'
        f' "pipeline_name": "{"é" * 200}", "last_op_name": "{"é" * 200}"}}'
    ).encode(),
]


def test_garbage_to_every_route_is_a_4xx_with_a_detail(tmp_path: Path) -> None:
    store = OpStore(FileSaver(tmp_path), "sqlite://")
    store.register_valid_link(None, "op", Version())

    async def probe() -> list[tuple[str, Any, int, Any]]:
        transport = httpx.ASGITransport(app=store.app)
        found = []
        async with httpx.AsyncClient(transport=transport, base_url="http://opstore") as http:
            for route in ROUTES:
                for body in GARBAGE:
                    r = await http.post(
                        f"/v1/{route}", content=body, headers={"content-type": "application/json"}
                    )
                    found.append((route, body, r.status_code, r.json()))
            for params in (
                {},
                {"op_name": "op"},
                {"op_name": "op", "version": "junk"},
                {"op_name": "a/b", "version": GOOD_VERSION},
                {"op_name": "ghost", "version": GOOD_VERSION},
            ):
                r = await http.put("/v1/op_bytes", params=params, content=b"x")
                found.append(("PUT op_bytes", params, r.status_code, r.json()))
                r = await http.get("/v1/op_bytes", params=params)
                found.append(("GET op_bytes", params, r.status_code, r.json()))
        return found

    results = asyncio.run(probe())
    assert len(results) == len(ROUTES) * len(GARBAGE) + 10
    for route, body, status, payload in results:
        assert 400 <= status < 500, (route, body, status, payload)
        assert isinstance(payload["detail"], str) and payload["detail"], (route, body)
        assert len(payload["detail"]) < 2000, (route, "the detail echoes the input")
    assert store.get_version_numbers("op")[0].number == (1, 0, 0)
    assert store.get_all_versions_of_op("x") is None
    store.close()


def test_garbage_over_http_on_real_databases(server: Server, client: OpStoreClient) -> None:
    client.register_valid_link(None, "op", Version())
    with httpx.Client(base_url=server.url) as http:
        for route in ROUTES:
            for body in GARBAGE:
                r = http.post(
                    f"/v1/{route}", content=body, headers={"content-type": "application/json"}
                )
                assert 400 <= r.status_code < 500, (route, body, r.status_code, r.text)
                assert isinstance(r.json()["detail"], str)
    assert numbers(client, "op") == ["1.0.0"]


# -- the CLI ------------------------------------------------------------------------------------


def test_cli_serves_an_op_store(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    db = f"sqlite:///{tmp_path}/cli.db"
    log = (tmp_path / "serve.log").open("wb")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "flowplex",
            "opstore",
            "serve",
            "--db",
            db,
            "--root",
            str(tmp_path / "bytes"),
            "--url",
            f"http://127.0.0.1:{port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=log,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        with OpStoreClient(url, key=KEY) as client:
            while True:
                try:
                    client.pipeline_exists("warmup")
                    break
                except OpStoreUnavailableError:
                    assert proc.poll() is None, (tmp_path / "serve.log").read_text()
                    assert time.monotonic() < deadline, "flowplex opstore serve did not start"
                    time.sleep(0.1)
            v = Version()
            client.register_valid_link(None, "op", v)
            client.save_op_bytes("op", v, b"abc")
            assert client.get_op_bytes_for_version("op", v) == b"abc"
        assert any((tmp_path / "bytes" / "models" / "op").iterdir())
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()
    listed = subprocess.run(
        [
            sys.executable,
            "-m",
            "flowplex",
            "opstore",
            "versions",
            "op",
            "--db",
            db,
            "--root",
            str(tmp_path / "bytes"),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "1.0.0" in listed.stdout
    bad = subprocess.run(
        [
            sys.executable,
            "-m",
            "flowplex",
            "opstore",
            "versions",
            "op",
            "--db",
            "mysql://x",
            "--root",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert bad.returncode == 1 and "is not supported" in bad.stderr
    missing = tmp_path / "typo.db"
    command = [sys.executable, "-m", "flowplex", "opstore", "versions", "op"]
    typo = subprocess.run(
        [*command, "--db", f"sqlite:///{missing}", "--root", str(tmp_path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert typo.returncode == 1 and f"no database at {missing}" in typo.stderr
    assert not missing.exists()  # a read never creates the database


def test_cli_serve_on_port_0_prints_the_port_it_listens_on(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "flowplex", "opstore", "serve"]
    command += ["--db", f"sqlite:///{tmp_path}/cli.db", "--root", str(tmp_path / "bytes")]
    proc = subprocess.Popen(
        [*command, "--url", "http://127.0.0.1:0"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        assert proc.stdout is not None
        output = []
        while not (output and output[-1].startswith("op store on ")):
            output.append(proc.stdout.readline().decode())
            assert output[-1], f"the server exited: {''.join(output)}"
        line = output[-1]
        assert line.startswith("op store on http://127.0.0.1:"), line
        url = line.split()[3]
        port = int(url.rsplit(":", 1)[1])
        assert port != 0
        with OpStoreClient(url, key=KEY) as client:
            assert client.pipeline_exists("p") is False
        taken = subprocess.run(
            [*command, "--url", url], capture_output=True, text=True, check=False
        )
        assert taken.returncode == 1
        assert f"cannot listen on 127.0.0.1:{port}" in taken.stderr
        # The old --port still works (deprecated): it names the same address.
        alias = subprocess.run(
            [*command, "--port", str(port)], capture_output=True, text=True, check=False
        )
        assert alias.returncode == 1
        assert "--host and --port are deprecated" in alias.stderr
        assert f"cannot listen on 127.0.0.1:{port}" in alias.stderr
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        if proc.stdout is not None:
            proc.stdout.close()
