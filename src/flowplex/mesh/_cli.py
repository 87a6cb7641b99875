"""``flowplex registry`` and ``flowplex up``: mesh services from the command line."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from ..config import Settings

__all__ = ["register_commands"]

err_console = Console(stderr=True)

UrlOption = Annotated[str, typer.Option("--url", help="Where to serve: http://host:port.")]
OrgOption = Annotated[str | None, typer.Option("--organization", "-o", help="Organization name.")]
ConnectOption = Annotated[
    list[str] | None,
    typer.Option("--connect", "-c", help="A registry to connect to (repeatable)."),
]
CacheOption = Annotated[
    Path | None,
    typer.Option("--cache", help="Registry state file (default: FLOWPLEX_HOME/registry.json)."),
]
ResetOption = Annotated[bool, typer.Option("--reset", help="Ignore the cache and start empty.")]
HeartbeatOption = Annotated[
    float,
    typer.Option(
        "--heartbeat",
        min=0.05,
        help="Heartbeat interval in seconds; a node silent for three intervals is listed offline.",
    ),
]


def _cache_path(cache: Path | None) -> str:
    return str(cache if cache is not None else Settings.from_env().home / "registry.json")


def registry(
    url: UrlOption = "http://127.0.0.1:3366",
    organization: OrgOption = None,
    connect: ConnectOption = None,
    cache: CacheOption = None,
    reset: ResetOption = False,
    provider: Annotated[
        bool, typer.Option("--provider", help="Offer this registry's nodes, take no feed back.")
    ] = False,
    heartbeat: HeartbeatOption = 10.0,
) -> None:
    """Run a mesh registry: nodes register their flows, peers exchange updates."""
    from ._run import run_service

    path = _cache_path(cache)
    err_console.print(f"flowplex registry at [bold]{url}[/] (cache {path})", highlight=False)
    run_service(
        url,
        organization,
        node=False,
        registry=True,
        provider=provider,
        connect=connect or (),
        cache=path,
        reset=reset,
        heartbeat_interval=heartbeat,
    )


def up(
    url: UrlOption = "http://127.0.0.1:3366",
    db: Annotated[
        str | None,
        typer.Option("--db", help="Node database (default: FLOWPLEX_DB, else SQLite in home)."),
    ] = None,
    organization: OrgOption = None,
    connect: ConnectOption = None,
    cache: CacheOption = None,
    reset: ResetOption = False,
    heartbeat: HeartbeatOption = 10.0,
    workers: Annotated[
        int, typer.Option(min=0, help="Dispatch worker threads running the node's messages.")
    ] = 1,
    opstore: Annotated[
        bool, typer.Option("--opstore/--no-opstore", help="Serve the op store at /opstore.")
    ] = True,
) -> None:
    """Run node + registry + dashboard on the embedded default: served flows are listed.

    The node's served endpoints are its flows in the mesh (re-read every two seconds); the
    dashboard is the HTML listing at /flows?format=html. ``--workers`` dispatch worker threads
    run the messages of every user's instances on the node, and the op store (its artifacts in
    FLOWPLEX_HOME/artifacts, its rows in the node database) answers at /opstore/v1/....
    """
    from ..artifacts import FileSaver, OpStore
    from ..runtime import Dispatcher, DispatchWorker, open_node
    from ._run import run_service

    settings = Settings.from_env()
    db_url = db or settings.db_url
    if db_url.startswith("sqlite:///"):
        Path(db_url[len("sqlite:///") :]).parent.mkdir(parents=True, exist_ok=True)
    node = open_node(db_url, settings.home)
    for _ in range(workers):
        worker = DispatchWorker(Dispatcher(node), idle_wait=0.25)
        node.register_worker(worker)
        worker.start()
    store = OpStore(FileSaver(settings.home / "artifacts"), db_url) if opstore else None
    base = url.rstrip("/")
    err_console.print(
        f"flowplex up: node + registry at [bold]{url}[/], node database {db_url}, "
        f"{workers} dispatch worker(s)\n"
        f"dashboard: {base}/flows?format=html"
        + (f"\nop store: {base}/opstore" if store is not None else ""),
        highlight=False,
    )
    try:
        run_service(
            url,
            organization,
            node=True,
            registry=True,
            connect=connect or (),
            cache=_cache_path(cache),
            reset=reset,
            db=db_url,
            mounts={"/opstore": store.app} if store is not None else None,
            heartbeat_interval=heartbeat,
        )
    finally:
        node.close()
        if store is not None:
            store.close()


def register_commands(app: typer.Typer) -> None:
    """Add ``registry`` and ``up`` to the ``flowplex`` command."""
    app.command("registry")(registry)
    app.command("up")(up)
