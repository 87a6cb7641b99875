"""``flowplex opstore ...``: the op store on its own (``serve``) and a look at its versions.

Both default to the node's op store: its rows in the node database, its bytes in the home's
``artifacts`` folder (where ``flowplex up`` keeps them). Heavy imports (SQLAlchemy, FastAPI,
uvicorn) happen inside the commands, so ``flowplex --help`` stays fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from ..config import Settings
from ._common import (
    COMMAND,
    DbOption,
    FlowplexGroup,
    HomeOption,
    console,
    err_console,
    require_database,
    settings,
)

if TYPE_CHECKING:
    from ..artifacts import OpStore

__all__ = ["register"]

opstore_app = typer.Typer(
    cls=FlowplexGroup,
    name="opstore",
    help="The versioned op store: serve it over HTTP, list versions.",
    no_args_is_help=True,
)

RootOption = Annotated[
    Path | None,
    typer.Option(
        "--root",
        help="Folder that holds the op bytes (default: artifacts in the home).",
        show_default=False,
    ),
]
DEFAULT_URL = "http://127.0.0.1:8765"


def _open(resolved: Settings, root: Path | None, insecure: bool = False) -> tuple[OpStore, Path]:
    from ..artifacts import FileSaver, OpStore

    folder = root if root is not None else resolved.home / "artifacts"
    return OpStore(FileSaver(folder), resolved.db_url, insecure=insecure), folder


@opstore_app.command(**COMMAND)
def serve(
    url: Annotated[
        str, typer.Option("--url", help="Where to serve: http://host:port (port 0: any free).")
    ] = DEFAULT_URL,
    db: DbOption = None,
    root: RootOption = None,
    home: HomeOption = None,
    host: Annotated[str | None, typer.Option(hidden=True, help="Deprecated: use --url.")] = None,
    port: Annotated[int | None, typer.Option(hidden=True, help="Deprecated: use --url.")] = None,
    insecure: Annotated[
        bool,
        typer.Option(
            "--insecure", help="Accept unsigned writes (the old protocol; migration and tests)."
        ),
    ] = False,
) -> None:
    """Serve an op store over HTTP (POST /v1/... routes) until interrupted.

    Writes (registrations, bytes) must be signed unless ``--insecure``."""
    from .._asgi import listen, serve
    from ..db import redact

    if host is not None or port is not None:
        err_console.print("--host and --port are deprecated: use --url http://HOST:PORT.")
        if url != DEFAULT_URL:
            raise typer.BadParameter("give --url, or the deprecated --host/--port, not both.")
        bracketed = f"[{host}]" if host is not None and ":" in host else host
        url = f"http://{bracketed or '127.0.0.1'}:{8765 if port is None else port}"
    resolved = settings(home, db)
    store, folder = _open(resolved, root, insecure)
    try:
        sock, base = listen(url, "the op store")
        console.print(
            f"[green]op store[/] on {base} (db {redact(resolved.db_url)}, bytes in {folder})",
            highlight=False,
            soft_wrap=True,
        )
        serve(store.app, sock, log_level=resolved.log_level)
    finally:
        store.close()


@opstore_app.command(**COMMAND)
def versions(
    op_name: Annotated[str, typer.Argument(help="The op whose versions to list.")],
    db: DbOption = None,
    root: RootOption = None,
    home: HomeOption = None,
) -> None:
    """List the registered versions of an op with their numbers."""
    resolved = settings(home, db)
    require_database(resolved.db_url)
    store, _ = _open(resolved, root)
    try:
        infos = store.get_version_numbers(op_name)
    finally:
        store.close()
    if not infos:
        console.print(f"op {op_name!r} has no registered versions")
        return
    table = Table("number", "version", title=f"versions of {op_name}")
    for info in infos:
        table.add_row(str(info.number), str(info.version))
    console.print(table)


def register(app: typer.Typer) -> None:
    """Add ``flowplex opstore ...`` to the root command."""
    app.add_typer(opstore_app, name="opstore")
