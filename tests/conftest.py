"""Shared fixtures.

PostgreSQL tests use ``FLOWPLEX_TEST_POSTGRES_URL``: without it they skip locally, and with
``CI`` set they fail, so a CI run can never pass by skipping them.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator

import pytest

# The conformance kit asserts with plain ``assert``: let pytest explain its failures.
pytest.register_assert_rewrite("flowplex.testing")


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path: object, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep every test's FLOWPLEX_HOME (and default database) inside its own tmp dir."""
    monkeypatch.setenv("FLOWPLEX_HOME", str(tmp_path) + "/.flowplex")
    monkeypatch.delenv("FLOWPLEX_DB", raising=False)


@pytest.fixture(autouse=True)
def _restore_flowplex_logging() -> Iterator[None]:
    """The command line sets the level of the ``flowplex`` logger: undo it after each test."""
    logger = logging.getLogger("flowplex")
    level, handlers = logger.level, list(logger.handlers)
    yield
    logger.setLevel(level)
    logger.handlers[:] = handlers


def postgres_url() -> str:
    """The test PostgreSQL URL; skips (locally) or fails (on CI) when none is configured."""
    url = os.environ.get("FLOWPLEX_TEST_POSTGRES_URL")
    if not url:
        if os.environ.get("CI"):
            pytest.fail("CI is set but FLOWPLEX_TEST_POSTGRES_URL is not: PostgreSQL is required.")
        pytest.skip("FLOWPLEX_TEST_POSTGRES_URL not set (PostgreSQL tests run on CI)")
    return url


@pytest.fixture
def pg_url() -> object:
    """A PostgreSQL URL whose search_path is a fresh schema, dropped after the test."""
    import uuid

    import psycopg

    base = postgres_url()
    schema = f"t_{uuid.uuid4().hex[:16]}"
    try:
        with psycopg.connect(base, autocommit=True) as conn:
            conn.execute(f'CREATE SCHEMA "{schema}"')
    except psycopg.OperationalError as exc:
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL at {base} is unreachable on CI: {exc}")
        pytest.skip(f"PostgreSQL unreachable: {exc}")
    sep = "&" if "?" in base else "?"
    yield f"{base}{sep}options=-csearch_path%3D{schema}"
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path: object) -> str:
    """A node database URL on each backend: memory, a SQLite file, a fresh PostgreSQL schema."""
    if request.param == "memory":
        return "memory://"
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/node.db"
    url: str = request.getfixturevalue("pg_url")
    return url


@pytest.fixture(params=["sqlite", "postgres"])
def durable_db(request: pytest.FixtureRequest, tmp_path: object) -> str:
    """A database that outlives the node object: a SQLite file or a fresh PostgreSQL schema
    (memory:// is volatile by design)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/node.db"
    url: str = request.getfixturevalue("pg_url")
    return url
