"""Which node ``start_node`` opens: the settings' (as the CLI), unless told otherwise."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import flowplex
from flowplex import Settings, serving


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """FLOWPLEX_HOME in a tmp dir (conftest's), and the current directory elsewhere."""
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    yield Path(Settings.from_env().home)


def test_start_node_defaults_to_the_node_of_the_cli(home: Path) -> None:
    cl = flowplex.start_node()
    try:
        assert cl.node.url == Settings.from_env().db_url == f"sqlite:///{home / 'flowplex.db'}"
        assert cl.node.path == home
        assert (home / "flowplex.db").is_file()
        serving.serve_flow(cl, "testflows.EchoFlow", "echo")
        # Called again, it is the same node: same user, same endpoints.
        again = flowplex.start_node()
        assert again == cl
        assert serving.is_flow_served(again, "echo")
    finally:
        cl.node.close()
    assert not Path(".flowplex").exists()  # nothing in the current directory


def test_without_flowplex_home_the_node_is_in_dot_flowplex(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("FLOWPLEX_HOME")
    monkeypatch.chdir(tmp_path)
    cl = flowplex.start_node()
    try:
        assert (tmp_path / ".flowplex" / "flowplex.db").is_file()
        assert cl.node.url == "sqlite:///.flowplex/flowplex.db"
    finally:
        cl.node.close()


def test_flowplex_db_picks_the_database(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLOWPLEX_DB", "memory://")
    cl = flowplex.start_node()
    assert cl.node.url == "memory://"
    cl.node.close()
    # With a path, FLOWPLEX_DB still names the database; the path holds the node's files.
    other = home.parent / "other"
    cl = flowplex.start_node(path=other)
    assert cl.node.url == "memory://"
    assert cl.node.path == other
    cl.node.close()


def test_a_path_without_flowplex_db_holds_the_database(home: Path) -> None:
    path = home.parent / "elsewhere"
    cl = flowplex.start_node(path=path)
    try:
        assert cl.node.url == f"sqlite:///{path / 'flowplex.db'}"
        assert (path / "flowplex.db").is_file()
        assert not (home / "flowplex.db").exists()
    finally:
        cl.node.close()
