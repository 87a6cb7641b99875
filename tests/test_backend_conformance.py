"""Every backend passes the conformance kit; the SQL ones also migrate and fail cleanly.

The kit (:mod:`flowplex.testing`) runs against memory, a SQLite file in ``tmp_path`` and a
fresh PostgreSQL schema per test (``pg_url``: skipped locally without
``FLOWPLEX_TEST_POSTGRES_URL``, failing on CI).
"""

from __future__ import annotations

import functools
import importlib.util
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from flowplex.errors import BackendError
from flowplex.runtime import Backend, Envelope, InstanceRecord, open_backend
from flowplex.runtime.memory import MemoryBackend
from flowplex.testing import CHECKS, SHARED_STORE_CHECKS, Check, Opener
from flowplex.testing._backend import instance
from waiting import wait_for


def _sql_opener(request: pytest.FixtureRequest, tmp_path: Path, kind: str) -> Opener:
    if kind == "sqlite":
        url = f"sqlite:///{tmp_path}/conformance.db"
    else:
        url = request.getfixturevalue("pg_url")
    return functools.partial(open_backend, url)


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def opener(request: pytest.FixtureRequest, tmp_path: Path) -> Opener:
    """Opens a backend of each kind; SQL ones all on the same fresh store."""
    if request.param == "memory":
        return MemoryBackend
    return _sql_opener(request, tmp_path, request.param)


@pytest.fixture(params=["sqlite", "postgres"])
def shared_opener(request: pytest.FixtureRequest, tmp_path: Path) -> Opener:
    """Opens SQL backend objects that all share one fresh store."""
    return _sql_opener(request, tmp_path, request.param)


@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__.removeprefix("check_"))
def test_conformance(check: Check, opener: Opener) -> None:
    check(opener)


@pytest.mark.parametrize(
    "check", SHARED_STORE_CHECKS, ids=lambda c: c.__name__.removeprefix("check_")
)
def test_shared_store_conformance(check: Check, shared_opener: Opener) -> None:
    check(shared_opener)


# -- schema and migrations ----------------------------------------------------------------------


def test_head_constant_is_alembics_head() -> None:
    from alembic.script import ScriptDirectory

    from flowplex.db.migrate import HEAD, alembic_config

    script = ScriptDirectory.from_config(alembic_config("sqlite:///unused.db"))
    assert script.get_heads() == [HEAD]


@pytest.fixture(params=["sqlite", "postgres"])
def sql_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, never migrated SQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/fresh/node.db"
    url: str = request.getfixturevalue("pg_url")
    return url


def test_migrations_build_the_metadata(sql_url: str) -> None:
    """The migrated database has exactly the tables, columns and indexes of the metadata."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from flowplex.db import metadata
    from flowplex.db.migrate import ensure_schema, locked_connection

    ensure_schema(sql_url)
    with locked_connection(sql_url) as connection:
        diff = compare_metadata(MigrationContext.configure(connection), metadata)
        tables = {t for (t,) in connection.exec_driver_sql(_TABLES[connection.dialect.name])}
    assert diff == []
    assert {"users", "endpoints", "instances", "messages", "replies", "dead_letters"} <= tables


def test_postgres_queue_tables_keep_free_space_and_vacuum_often(pg_url: str) -> None:
    """Migration 0006_perf gives the busy tables page space for HOT updates and fixed vacuum
    thresholds; downgrading puts the server's defaults back."""
    import psycopg
    from alembic import command

    from flowplex.db.migrate import alembic_config, ensure_schema, locked_connection

    def options() -> dict[str, list[str]]:
        query = (
            "SELECT relname, reloptions FROM pg_class WHERE relkind = 'r' "
            "AND relnamespace = current_schema()::regnamespace AND relname = ANY(%s)"
        )
        tables = ["messages", "instances", "replies", "message_log"]
        with psycopg.connect(pg_url) as conn:
            return {name: sorted(opts or []) for name, opts in conn.execute(query, (tables,))}

    ensure_schema(pg_url)
    found = options()
    assert "fillfactor=50" in found["messages"] and "fillfactor=50" in found["instances"]
    for table in ("messages", "instances", "replies", "message_log"):
        assert "autovacuum_vacuum_scale_factor=0" in found[table], table
    with locked_connection(pg_url) as connection:
        config = alembic_config(pg_url)
        config.attributes["connection"] = connection
        command.downgrade(config, "0005_security")
    assert all(opts == [] for opts in options().values())


def _instance(flow_id: str) -> InstanceRecord:
    """An instance record to queue messages to (nothing runs them)."""
    return InstanceRecord(
        flow_id=flow_id,
        user_id="u",
        endpoint="e",
        client_id="local",
        flow_class_name="C",
        config={},
        state={},
        dispatch_point="p",
        dispatch_point_override=None,
        parallel_dispatch=False,
        created_at=0.0,
    )


def test_postgres_vacuums_its_queue_as_it_drains(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every VACUUM_EVERY acknowledgements the backend vacuums the queue table itself (the dead
    entries of acknowledged heads would otherwise slow the claims until autovacuum comes)."""
    import psycopg

    from flowplex.runtime import postgres

    monkeypatch.setattr(postgres, "VACUUM_EVERY", 5)

    def vacuums() -> int:
        query = "SELECT vacuum_count FROM pg_stat_user_tables WHERE relid = 'messages'::regclass"
        with psycopg.connect(pg_url, autocommit=True) as conn:
            conn.execute("SELECT pg_stat_clear_snapshot()")
            row = conn.execute(query).fetchone()
            return int(row[0]) if row else 0

    backend = postgres.PostgresBackend(pg_url)
    try:
        backend.add_instances([_instance("f1")])
        before = vacuums()
        for i in range(4):
            backend.enqueue([Envelope("f1", str(i))])
            (delivery,) = backend.claim("p", None, 30, 1)
            assert backend.complete(delivery, state=None)[0]
        assert vacuums() == before  # four acknowledgements: not yet
        backend.enqueue([Envelope("f1", "4")])
        (delivery,) = backend.claim("p", None, 30, 1)
        backend.complete(delivery, state=None)
        wait_for(lambda: vacuums() > before, "the queue to be vacuumed", 30)
    finally:
        backend.close()


def test_sqlite_checkpoints_in_a_thread_of_its_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The WAL is copied back into the database file by the backend's checkpoint thread every
    CHECKPOINT_EVERY write transactions, not by whichever commit finds it long."""
    import os

    from flowplex.runtime import sqlite

    monkeypatch.setattr(sqlite, "CHECKPOINT_EVERY", 5)
    path = tmp_path / "queue.db"
    backend = sqlite.SQLiteBackend(f"sqlite:///{path}")
    try:
        backend.add_instances([_instance("f1")])
        size = os.path.getsize(path)
        for _ in range(10):  # far fewer pages than a commit's own threshold
            backend.enqueue([Envelope("f1", "x" * 20_000)])
        wait_for(lambda: os.path.getsize(path) > size, "the WAL to be checkpointed", 30)
    finally:
        backend.close()


_TABLES = {
    "sqlite": "SELECT name FROM sqlite_master WHERE type = 'table'",
    "postgresql": "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()",
}


def test_concurrent_ensure_schema(sql_url: str) -> None:
    """Processes migrating (or opening a backend on) one fresh database at the same time all
    succeed."""
    code = textwrap.dedent(
        """
        import sys
        import alembic.command, flowplex.db.schema  # the slow imports, before the start line
        from flowplex.db.migrate import ensure_schema
        from flowplex.runtime import open_backend
        sys.stdin.readline()  # start together
        if sys.argv[2] == "migrate":
            ensure_schema(sys.argv[1])
        else:
            open_backend(sys.argv[1]).close()
        """
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, sql_url, how],
            stdin=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for how in ("migrate", "open", "migrate", "open")
    ]
    for proc in procs:
        assert proc.stdin is not None
        proc.stdin.write("go\n")
        proc.stdin.flush()
    outcomes = [(proc.communicate(timeout=60)[1], proc.returncode) for proc in procs]
    assert [code for _, code in outcomes] == [0] * len(procs), outcomes
    backend = open_backend(sql_url)
    try:
        backend.add_instances([instance("f1")])
        assert backend.enqueue([Envelope("f1", "m")]) == []
    finally:
        backend.close()


def _modules_loaded_by(url: str) -> list[str]:
    """The heavy modules a fresh process has loaded once it opened and closed ``url``."""
    code = (
        "import json, sys\n"
        "from flowplex.runtime import open_backend\n"
        f"open_backend({url!r}).close()\n"
        "heavy = ('alembic', 'sqlalchemy', 'sqlalchemy.orm')\n"
        "print(json.dumps([m for m in heavy if m in sys.modules]))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    loaded: list[str] = json.loads(out)
    return loaded


def test_opening_a_current_database_skips_alembic(tmp_path: Path) -> None:
    """Opening an up-to-date SQLite database imports no Alembic and no ORM (SQLAlchemy's core
    parses the URL); an in-process memory:// backend loads no SQLAlchemy at all."""
    url = f"sqlite:///{tmp_path}/node.db"
    open_backend(url).close()
    assert _modules_loaded_by(url) == ["sqlalchemy"]
    assert _modules_loaded_by("memory://") == []


def test_sqlite_creates_parent_directories_and_relative_paths(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    backend = open_backend("sqlite:///nested/dirs/node.db")
    backend.close()
    assert (tmp_path / "nested" / "dirs" / "node.db").is_file()


def test_unreachable_postgres_names_the_url_without_password() -> None:
    url = "postgresql://flowplex:s3cret-pw@127.0.0.1:1/nodes?connect_timeout=5"
    with pytest.raises(BackendError) as caught:
        open_backend(url)
    text = str(caught.value)
    assert "s3cret-pw" not in text
    assert "postgresql://flowplex:***@127.0.0.1:1/nodes" in text


def _closed(backend: Backend) -> Backend:
    backend.close()
    return backend


def test_sql_backends_raise_backend_error_once_closed(sql_url: str) -> None:
    backend = _closed(open_backend(sql_url))
    with pytest.raises(BackendError, match="closed"):
        backend.list_users()
    with pytest.raises(BackendError, match="closed"):
        backend.enqueue([Envelope("f1", "m")])
    backend.wait_for_messages("default", 5.0)  # returns at once


def test_sqlite_driver_errors_become_backend_errors(tmp_path: Path) -> None:
    import sqlite3

    url = f"sqlite:///{tmp_path}/node.db"
    backend = open_backend(url)
    try:
        conn = sqlite3.connect(tmp_path / "node.db")
        conn.execute("DROP TABLE messages")
        conn.commit()
        conn.close()
        with pytest.raises(BackendError, match=r"node\.db.*no such table: messages"):
            backend.pending_count()
    finally:
        backend.close()


def test_postgres_driver_errors_become_backend_errors(pg_url: str) -> None:
    import psycopg

    backend = open_backend(pg_url)
    try:
        with psycopg.connect(pg_url, autocommit=True) as conn:
            conn.execute("DROP TABLE messages")
        with pytest.raises(BackendError, match='relation "messages" does not exist'):
            backend.pending_count()
        # The connection that failed is not poisoned for the next call.
        assert backend.list_users() == []
    finally:
        backend.close()


def test_wheel_ships_the_migrations(tmp_path: Path) -> None:
    """The built wheel contains the Alembic environment, template and revisions."""
    import zipfile

    root = Path(__file__).resolve().parents[1]
    if importlib.util.find_spec("hatchling") is not None:
        command = [sys.executable, "-m", "hatchling", "build", "-t", "wheel", "-d", str(tmp_path)]
    else:
        # A fresh venv has the build backend only in pip's isolated build environments.
        command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", str(tmp_path), "."]
    subprocess.run(command, cwd=root, check=True, capture_output=True)
    [wheel] = tmp_path.glob("*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for name in ("env.py", "script.py.mako", "versions/0001_runtime.py"):
        assert f"flowplex/db/migrations/{name}" in names
