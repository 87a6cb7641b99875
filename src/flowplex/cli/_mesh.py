"""``flowplex registry`` and ``flowplex up``: flowplex's HTTP services from the command line."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

import typer

from ..config import Settings
from ..db import redact
from ._common import (
    COMMAND,
    DbOption,
    HomeOption,
    PathOption,
    UrlOption,
    add_import_paths,
    err_console,
    settings,
)

__all__ = ["register"]

OrgOption = Annotated[str | None, typer.Option("--organization", "-o", help="Organization name.")]
ConnectOption = Annotated[
    list[str] | None,
    typer.Option("--connect", "-c", help="A registry to connect to (repeatable)."),
]
CacheOption = Annotated[
    Path | None,
    typer.Option(
        "--cache",
        help="Registry state file (default: registry.json in the home).",
        show_default=False,
    ),
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
OfflineRemoveOption = Annotated[
    float,
    typer.Option(
        "--offline-remove-after",
        min=0,
        help="Seconds after which an offline node leaves the listing (0: keep it).",
    ),
]


PeerOption = Annotated[
    list[str] | None,
    typer.Option(
        "--peer", help="A registry allowed to connect to this one (repeatable; --connect too)."
    ),
]
TrustOption = Annotated[
    list[str] | None,
    typer.Option(
        "--trust",
        help="A key (user id) allowed to register nodes (repeatable; default: any key, pinned "
        "to its node URL on first registration).",
    ),
]
OperatorOption = Annotated[
    list[str] | None,
    typer.Option(
        "--operator", help="An operator key (user id) whose signed /connect adds any peer."
    ),
]
InsecureOption = Annotated[
    bool,
    typer.Option(
        "--insecure",
        help="Accept unsigned writes (the old protocol; for migration and tests only).",
    ),
]


def _trust(
    peer: list[str] | None, trust: list[str] | None, operator: list[str] | None
) -> dict[str, Any]:
    return {"peers": peer or (), "trust": trust or None, "operators": operator or ()}


def _say(line: str) -> None:
    err_console.print(line, highlight=False, soft_wrap=True)


def _remove_after(seconds: float) -> float | None:
    return seconds or None


def _advertised(url: str) -> str:
    """``url``, refused when its port is 0: the mesh advertises it, so it must be the real one."""
    try:
        port = urlsplit(url).port
    except ValueError:
        return url  # the mesh names what is wrong with it
    if port == 0:
        raise typer.BadParameter(f"{url}: peers reach this service at its URL; give a real port.")
    return url


def _home_key(resolved: Settings, name: str) -> Path:
    from ..identity import load_or_create_key_pair

    path = resolved.home / "keys" / f"{name}.pem"
    load_or_create_key_pair(path)
    return path


def _cache_path(cache: Path | None, resolved: Settings) -> str:
    return str(cache if cache is not None else resolved.home / "registry.json")


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
    offline_remove_after: OfflineRemoveOption = 86400.0,
    home: HomeOption = None,
    key: Annotated[
        Path | None,
        typer.Option(
            "--key", help="This registry's key file (default: one in the home's keys folder)."
        ),
    ] = None,
    peer: PeerOption = None,
    trust: TrustOption = None,
    operator: OperatorOption = None,
    insecure: InsecureOption = False,
) -> None:
    """Run a mesh registry: nodes register their flows, peers exchange updates.

    Every write is signed: nodes with their key (pinned on first registration), peers with
    theirs. Only ``--connect`` and ``--peer`` registries may connect, or an ``--operator``."""
    from .._asgi import listen, serve
    from ..mesh import MeshService
    from ..server import create_app

    resolved = settings(home)
    path = _cache_path(cache, resolved)
    service = MeshService(
        _advertised(url),
        organization,
        node=False,
        registry=True,
        provider=provider,
        connect=connect or (),
        cache=path,
        reset=reset,
        heartbeat_interval=heartbeat,
        offline_remove_after=_remove_after(offline_remove_after),
        key=key if key is not None else _home_key(resolved, "registry"),
        insecure=insecure,
        **_trust(peer, trust, operator),
    )
    sock, _ = listen(service.state.url, "flowplex registry")
    err_console.print(
        f"flowplex registry at [bold]{service.state.url}[/] (cache {path})", highlight=False
    )
    serve(create_app(mesh=service), sock, log_level=resolved.log_level, on_stop=_say)


def up(
    url: UrlOption = "http://127.0.0.1:3366",
    db: DbOption = None,
    home: HomeOption = None,
    organization: OrgOption = None,
    connect: ConnectOption = None,
    cache: CacheOption = None,
    reset: ResetOption = False,
    heartbeat: HeartbeatOption = 10.0,
    offline_remove_after: OfflineRemoveOption = 86400.0,
    workers: Annotated[
        int, typer.Option(min=0, help="Dispatch worker threads running the node's messages.")
    ] = 1,
    opstore: Annotated[
        bool, typer.Option("--opstore/--no-opstore", help="Serve the op store at /opstore.")
    ] = True,
    message_log: Annotated[
        int,
        typer.Option(
            "--message-log",
            min=0,
            help="Messages kept per instance for the dashboard's message log (0: none).",
        ),
    ] = 50,
    lease: Annotated[
        float,
        typer.Option(
            "--lease",
            min=0.05,
            help="Seconds a message stays leased to a worker: after a crash, messages in hand "
            "run again this long after.",
        ),
    ] = 60.0,
    path: PathOption = None,
    node_key: Annotated[
        Path | None,
        typer.Option("--node-key", help="The node key file (default: keys/node.pem in the home)."),
    ] = None,
    peer: PeerOption = None,
    trust: TrustOption = None,
    operator: OperatorOption = None,
    insecure: InsecureOption = False,
) -> None:
    """Serve the node over HTTP: registry, dashboard, dispatch workers and op store.

    The dashboard is at / (open it in a browser): the node's endpoints and instances, their
    messages, task-graph runs, registry peers and artifacts. The node's served endpoints are
    its flows in the mesh (re-read every two seconds). ``--workers`` dispatch worker threads
    run the messages of every user's instances on the node, and the op store (its artifacts in
    the home's artifacts folder, its rows in the node database) answers at /opstore/v1/....
    The node HTTP API (mount, message, read and delete instances; /docs) serves its flows to
    users of other nodes: the URL the registry lists for each.
    The node signs what it sends with its key (``--node-key``, default keys/node.pem in the
    home); writes it receives must be signed unless ``--insecure``.
    """
    from .._asgi import listen, serve
    from ..server import NodeServer

    add_import_paths(path or ())
    resolved = settings(home, db)
    with NodeServer(
        _advertised(url),
        resolved.db_url,
        resolved.home,
        organization=organization,
        connect=connect or (),
        cache=_cache_path(cache, resolved),
        reset=reset,
        workers=workers,
        opstore=opstore,
        message_log=message_log,
        lease_seconds=lease,
        heartbeat_interval=heartbeat,
        offline_remove_after=_remove_after(offline_remove_after),
        key=node_key,
        insecure=insecure,
        **_trust(peer, trust, operator),
    ) as server:
        sock, base = listen(server.url, "flowplex up")
        err_console.print(
            f"flowplex up: node + registry at [bold]{base}[/], node database "
            f"{redact(resolved.db_url)}, {workers} dispatch worker(s)\n"
            f"dashboard: {base}/" + (f"\nop store: {base}/opstore" if opstore else ""),
            highlight=False,
            soft_wrap=True,
        )
        serve(
            server.app,
            sock,
            log_level=resolved.log_level,
            on_stop=_say,
            finishing="finishing the requests and the messages in hand",
        )


def register(app: typer.Typer) -> None:
    """Add ``registry`` and ``up`` to the root command."""
    app.command("registry", **COMMAND)(registry)
    app.command("up", **COMMAND)(up)
