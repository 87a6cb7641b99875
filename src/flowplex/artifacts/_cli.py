"""``flowplex opstore ...``: the op store on its own (``serve``) and a look at its versions.

Heavy imports (SQLAlchemy, FastAPI, uvicorn) happen inside the commands, so
``flowplex --help`` stays fast.
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

__all__ = ["opstore_app", "register_commands"]

opstore_app = typer.Typer(
    name="opstore",
    help="The versioned op store (seed 004): serve it over HTTP, list versions.",
    no_args_is_help=True,
)
_console = Console()

DbOption = Annotated[
    str,
    typer.Option(
        "--db",
        help="Database URL: sqlite:// (in memory), sqlite:///path.db or postgresql://...",
    ),
]
RootOption = Annotated[str, typer.Option("--root", help="Directory that holds the op bytes.")]


@opstore_app.command()
def serve(
    db: DbOption,
    root: RootOption,
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on (0: any free port).")] = 8765,
) -> None:
    """Serve an op store over HTTP (the seed's POST /v1/... routes) until interrupted."""
    import socket

    import uvicorn

    from ..errors import ConfigurationError
    from ._savers import FileSaver
    from ._store import OpStore

    store = OpStore(FileSaver(root), db)
    # Bind before printing the URL, so that port 0 prints the port actually chosen.
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        sock = socket.create_server((host, port), family=family)
    except OSError as exc:
        store.close()
        raise ConfigurationError(f"cannot listen on {host}:{port}: {exc}") from None
    url_host = f"[{host}]" if family == socket.AF_INET6 else host
    url = f"http://{url_host}:{sock.getsockname()[1]}"
    _console.print(f"[green]op store[/] on {url} (db {db}, bytes in {root})", highlight=False)
    try:
        uvicorn.Server(uvicorn.Config(store.app, log_level="warning")).run(sockets=[sock])
    finally:
        sock.close()
        store.close()


@opstore_app.command()
def versions(
    op_name: Annotated[str, typer.Argument(help="The op whose versions to list.")],
    db: DbOption,
    root: RootOption,
) -> None:
    """List the registered versions of an op with their numbers."""
    from ..db import DatabaseURL
    from ..errors import ConfigurationError
    from ._savers import FileSaver
    from ._store import OpStore

    # A read: a mistyped SQLite path must not quietly create an empty database.
    path = DatabaseURL.parse(db).path
    if path is not None and not path.exists():
        raise ConfigurationError(f"no op store database at {path}.")
    store = OpStore(FileSaver(root), db)
    try:
        infos = store.get_version_numbers(op_name)
    finally:
        store.close()
    if not infos:
        _console.print(f"op {op_name!r} has no registered versions")
        return
    table = Table("number", "version", title=f"versions of {op_name}")
    for info in infos:
        table.add_row(str(info.number), str(info.version))
    _console.print(table)


def register_commands(app: typer.Typer) -> None:
    """Add ``flowplex opstore ...`` to the root command."""
    app.add_typer(opstore_app, name="opstore")
