"""flowplex.db: one meaning for every database URL, one engine factory, one transaction, one
translation of driver errors (on the real SQLite and PostgreSQL)."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Column, Engine, Integer, MetaData, String, Table, select
from sqlalchemy.exc import StatementError

from flowplex.artifacts import MemorySaver, OpStore, Version
from flowplex.db import (
    DatabaseURL,
    connect_sqlite,
    create_engine,
    is_retryable,
    transaction,
    translate_error,
)
from flowplex.engine import FlowStore, TaskFlow
from flowplex.errors import (
    BackendError,
    ConfigurationError,
    DuplicateKeyError,
    StorageUnwritableError,
)
from flowplex.runtime import open_backend
from flowplex.runtime.memory import MemoryBackend

# -- DatabaseURL ---------------------------------------------------------------------------------

VOLATILE = ["memory://", "sqlite://", "sqlite:///:memory:"]


@pytest.mark.parametrize("url", VOLATILE)
def test_volatile_urls(url: str) -> None:
    db = DatabaseURL.parse(url)
    assert (db.kind, db.volatile, db.path, db.key) == ("memory", True, None, None)
    assert db.sqlalchemy_url == "sqlite://"
    assert str(db) == url


def test_sqlite_file_urls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    relative = DatabaseURL.parse("sqlite:///data/node.db")
    absolute = DatabaseURL.parse(f"sqlite:///{tmp_path}/data/node.db")
    home = DatabaseURL.parse("sqlite:///~/node.db")
    escaped = DatabaseURL.parse("sqlite:///with%20space.db")
    assert relative.kind == "sqlite" and not relative.volatile
    assert relative.path == tmp_path / "data" / "node.db"
    assert absolute.path == relative.path
    assert relative.key == absolute.key == f"sqlite:///{(tmp_path / 'data' / 'node.db')}"
    assert relative.sqlalchemy_url == f"sqlite:///{tmp_path}/data/node.db"
    assert home.path == tmp_path / "home" / "node.db"
    assert escaped.path == tmp_path / "with space.db"
    assert str(relative) == "sqlite:///data/node.db"
    with pytest.raises(ConfigurationError, match="not a PostgreSQL URL"):
        _ = relative.conninfo


@pytest.mark.parametrize(
    ("url", "conninfo"),
    [
        ("postgresql://u:pw@db.example:5433/nodes", "postgresql://u:pw@db.example:5433/nodes"),
        ("postgres://u@h/nodes", "postgresql://u@h/nodes"),
        ("postgresql+psycopg://u@h/nodes", "postgresql://u@h/nodes"),
        (
            "postgresql://u@h/n?options=-csearch_path%3Dtenant",
            "postgresql://u@h/n?options=-csearch_path%3Dtenant",
        ),
    ],
)
def test_postgresql_urls(url: str, conninfo: str) -> None:
    db = DatabaseURL.parse(url)
    assert db.kind == "postgresql" and db.path is None and not db.volatile
    # libpq parses the URL again: escapes are kept as written.
    assert db.conninfo == conninfo
    assert db.sqlalchemy_url == "postgresql+psycopg://" + conninfo.removeprefix("postgresql://")


def test_postgresql_keys_name_the_database_not_the_password() -> None:
    keys = {
        DatabaseURL.parse(url).key
        for url in (
            "postgresql://u:one@h:5432/n?options=-csearch_path%3Dt",
            "postgres://u:two@h:5432/n?options=-csearch_path%3Dt&password=three",
            "postgresql+psycopg://u@h:5432/n?options=-csearch_path%3Dt",
        )
    }
    assert keys == {"postgresql://u@h:5432/n?options=-csearch_path%3Dt"}
    other_schema = DatabaseURL.parse("postgresql://u@h:5432/n?options=-csearch_path%3Dx")
    assert other_schema.key not in keys


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("", "scheme://"),
        ("flows.db", "scheme://"),
        ("sqlite:/x.db", "scheme://"),
        ("sqlite:///", "names no database file"),
        ("sqlite:///?mode=ro", "no query parameters"),
        ("sqlite:///x.db?timeout=5", "no query parameters"),
        ("sqlite://host/x.db", "not a host"),
        ("memory://name", "nothing after the scheme"),
        ("mysql://h/db", "'mysql' is not supported"),
        ("postgresql+asyncpg://h/db", "'postgresql\\+asyncpg' is not supported"),
        ("postgresql://", "names no server"),
    ],
)
def test_rejected_urls_name_the_accepted_forms(url: str, why: str) -> None:
    with pytest.raises(ConfigurationError, match=why) as caught:
        DatabaseURL.parse(url)
    assert "sqlite:////absolute/path.db or postgresql://" in str(caught.value)


def test_a_non_string_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="must be a string, got int"):
        DatabaseURL.parse(42)


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://flowplex:s3cret-pw@h:5432/nodes",
        "postgresql://flowplex@h:5432/nodes?sslmode=require&password=s3cret-pw",
        "postgres://flowplex:s3cret-pw@h/nodes",
    ],
)
def test_passwords_never_show(url: str) -> None:
    db = DatabaseURL.parse(url)
    for text in (str(db), repr(db), db.redacted, db.key or ""):
        assert "s3cret-pw" not in text
    assert "***" in db.redacted
    rejected = url.replace("postgres", "mysql", 1)
    with pytest.raises(ConfigurationError) as caught:
        DatabaseURL.parse(rejected)
    assert "s3cret-pw" not in str(caught.value)


def test_parsing_a_memory_url_loads_no_sqlalchemy() -> None:
    code = (
        "import sys\n"
        "from flowplex.db import DatabaseURL\n"
        "assert DatabaseURL.parse('memory://').key is None\n"
        "print('sqlalchemy' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# -- one meaning everywhere ----------------------------------------------------------------------


@pytest.mark.parametrize("url", VOLATILE)
def test_volatile_urls_mean_the_same_to_every_store(url: str) -> None:
    """The runtime opens its in-process backend; the flow store and the op store a private
    in-memory SQLite: two of them never see each other's rows."""
    backend = open_backend(url)
    assert isinstance(backend, MemoryBackend)
    backend.close()

    first, second = FlowStore(url), FlowStore(url)
    for store in (first, second):
        store.ensure_tables()
    key = first.create_flow(TaskFlow.from_flow_spec({"tasks": []}))
    assert first.get_flow(key).key == key
    assert second.query_flows() == []
    first.close()
    second.close()

    ops, other = OpStore(MemorySaver(), url), OpStore(MemorySaver(), url)
    ops.register_valid_link(None, "op", Version())
    assert ops.get_all_versions_of_op("op") is not None
    assert other.get_all_versions_of_op("op") is None
    ops.close()
    other.close()


def test_every_sql_store_shares_one_sqlite_file(tmp_path: Path) -> None:
    """The node runtime, the flow store and the op store given one file URL use one database
    (migrated once to the same schema)."""
    url = f"sqlite:///{tmp_path}/node.db"
    open_backend(url).close()
    store = FlowStore(url)
    store.ensure_tables()
    ops = OpStore(MemorySaver(), url)
    with sqlite3.connect(tmp_path / "node.db") as conn:
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
    assert {"messages", "engine_flows", "opstore_ops"} <= tables
    store.close()
    ops.close()


# -- transactions and driver errors --------------------------------------------------------------

_meta = MetaData()
_things = Table(
    "things", _meta, Column("id", Integer, primary_key=True), Column("name", String, unique=True)
)


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def engine_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "memory":
        return "memory://"
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/things.db"
    url: str = request.getfixturevalue("pg_url")
    return url


@pytest.fixture
def things(engine_url: str) -> Iterator[Engine]:
    engine = create_engine(engine_url, name="the things store")
    with transaction(engine) as conn:
        _meta.create_all(conn)
    yield engine
    engine.dispose()


def test_transaction_commits_or_rolls_back(things: Engine) -> None:
    engine = things
    with transaction(engine) as conn:
        conn.execute(_things.insert(), {"name": "kept"})
    with pytest.raises(RuntimeError), transaction(engine) as conn:
        conn.execute(_things.insert(), {"name": "dropped"})
        raise RuntimeError("the caller's own error passes through")
    with transaction(engine, write=False) as conn:
        assert conn.execute(select(_things.c.name)).scalars().all() == ["kept"]


def test_a_unique_violation_is_a_duplicate_key_error(things: Engine) -> None:
    engine = things
    with transaction(engine) as conn:
        conn.execute(_things.insert(), {"name": "once"})
    with (
        pytest.raises(DuplicateKeyError, match=r"the things store at .*exists already") as caught,
        transaction(engine) as conn,
    ):
        conn.execute(_things.insert(), {"name": "twice"})
        conn.execute(_things.insert(), {"name": "once"})
    assert is_retryable(caught.value)
    with transaction(engine, write=False) as conn:
        assert conn.execute(select(_things.c.name)).scalars().all() == ["once"]


def test_other_driver_errors_are_backend_errors_with_the_reason(things: Engine) -> None:
    engine = things
    with (
        pytest.raises(BackendError, match=r"the things store at .* failed: .*nowhere") as caught,
        transaction(engine) as conn,
    ):
        conn.exec_driver_sql("SELECT * FROM nowhere")
    assert not isinstance(caught.value, DuplicateKeyError)
    assert not is_retryable(caught.value)
    assert "\n" not in str(caught.value)


def test_a_read_only_sqlite_database_says_so(tmp_path: Path) -> None:
    """Writing to a database SQLite holds read-only is a BackendError that says so, on a raw
    connection and through an engine."""
    path = tmp_path / "ro.db"
    connect_sqlite(path).close()
    readonly = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        with pytest.raises(sqlite3.OperationalError) as raw:
            readonly.execute("CREATE TABLE t (x)")
    finally:
        readonly.close()
    error = translate_error(raw.value, f"the database at sqlite:///{path}")
    assert type(error) is StorageUnwritableError  # a BackendError that retrying cannot fix
    assert str(error).startswith(f"the database at sqlite:///{path} failed: the database is read")

    engine = create_engine(f"sqlite:///{path}")
    try:
        with (
            pytest.raises(BackendError, match="failed: the database is read-only") as caught,
            transaction(engine) as conn,
        ):
            conn.exec_driver_sql("PRAGMA query_only = ON")
            conn.exec_driver_sql("CREATE TABLE t (x)")
        assert isinstance(caught.value.__cause__, Exception)
    finally:
        engine.dispose()


def test_a_read_only_postgresql_transaction_says_so(pg_url: str) -> None:
    engine = create_engine(f"{pg_url}%20-cdefault_transaction_read_only%3Don")
    try:
        with (
            pytest.raises(BackendError, match="failed: the database is read-only") as caught,
            transaction(engine) as conn,
        ):
            conn.exec_driver_sql("CREATE TABLE t (x int)")
        assert isinstance(caught.value, StorageUnwritableError)
    finally:
        engine.dispose()


def test_an_unreachable_server_names_the_url_without_its_password() -> None:
    url = "postgresql://flowplex:s3cret-pw@127.0.0.1:1/nodes?connect_timeout=5"
    engine = create_engine(url)
    with pytest.raises(BackendError) as caught, transaction(engine):
        pass
    text = str(caught.value)
    assert "s3cret-pw" not in text
    assert "postgresql://flowplex:***@127.0.0.1:1/nodes" in text
    assert "cannot reach the server" in text
    with pytest.raises(BackendError) as again:
        open_backend(url)
    assert "cannot reach the server" in str(again.value) and "s3cret-pw" not in str(again.value)


def test_sqlite_writers_take_the_lock_first_and_readers_never_block_them(tmp_path: Path) -> None:
    """A read transaction left open does not stop a writer; a write transaction holds SQLite's
    write lock from its BEGIN (another connection cannot start writing)."""
    url = f"sqlite:///{tmp_path}/locks.db"
    engine = create_engine(url)
    with transaction(engine) as conn:
        _meta.create_all(conn)
    probe = sqlite3.connect(tmp_path / "locks.db", timeout=0, isolation_level=None)
    try:
        with transaction(engine, write=False) as reader:
            reader.execute(select(_things)).all()
            with transaction(engine) as writer:
                writer.execute(_things.insert(), {"name": "while reading"})
        with transaction(engine) as writer:
            with pytest.raises(sqlite3.OperationalError, match="locked"):
                probe.execute("BEGIN IMMEDIATE")
            writer.execute(_things.insert(), {"name": "alone"})
        probe.execute("BEGIN IMMEDIATE")
        probe.execute("ROLLBACK")
    finally:
        probe.close()
        engine.dispose()


def test_a_volatile_engine_serializes_its_users(tmp_path: Path) -> None:
    """One in-memory connection, many threads: their transactions take turns."""
    engine = create_engine("memory://")
    with transaction(engine) as conn:
        _meta.create_all(conn)
    errors: list[BaseException] = []

    def insert(start: int) -> None:
        try:
            for i in range(start, start + 50):
                with transaction(engine) as conn:
                    conn.execute(_things.insert(), {"name": f"n{i}"})
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=insert, args=(n * 100,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert errors == []
    with transaction(engine, write=False) as conn:
        assert len(conn.execute(select(_things)).all()) == 200
    engine.dispose()


def test_json_is_strict_on_sqlite_as_on_postgresql() -> None:
    from sqlalchemy import JSON

    meta = MetaData()
    docs = Table("docs", meta, Column("id", Integer, primary_key=True), Column("doc", JSON))
    engine = create_engine("memory://")
    with transaction(engine) as conn:
        meta.create_all(conn)
    with pytest.raises(StatementError, match="Out of range float"), transaction(engine) as conn:
        conn.execute(docs.insert(), {"doc": {"x": float("nan")}})
    engine.dispose()


# -- the runtime's backends use the same translation ---------------------------------------------


def test_runtime_backends_raise_duplicate_key_errors_through_the_translator(
    tmp_path: Path,
) -> None:
    from flowplex.runtime import UserRecord

    backend = open_backend(f"sqlite:///{tmp_path}/node.db")
    try:
        backend.add_user(UserRecord("ab" * 32, 1.0))
        with pytest.raises(DuplicateKeyError, match="exists already") as caught:
            backend.add_user(UserRecord("ab" * 32, 2.0))
        assert caught.value.__cause__ is None  # the message names the user instead
    finally:
        backend.close()


def test_a_node_on_a_password_url_never_shows_the_password(pg_url: str) -> None:
    """The node's URL, as client handles, messages and stored run data show it, hides the
    password (the test server trusts local connections, so any password opens it)."""
    import flowplex
    from flowplex import serving
    from flowplex.errors import FlowInstanceError

    url = pg_url.replace("://postgres@", "://postgres:s3cret-pw@", 1)
    assert "s3cret-pw" in url
    cl = flowplex.start_node(db=url)
    try:
        assert cl.node.backend.url == url
        assert "s3cret-pw" not in cl.node.url and "postgres:***@" in cl.node.url
        assert "s3cret-pw" not in repr(cl)
        with pytest.raises(FlowInstanceError) as caught:
            serving.get_flow_instance(cl, "nothing", user_id="ab" * 32)
        assert "s3cret-pw" not in str(caught.value)
    finally:
        cl.node.close()
