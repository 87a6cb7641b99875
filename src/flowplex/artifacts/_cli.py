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
    import uvicorn

    from ._savers import FileSaver
    from ._store import OpStore

    store = OpStore(FileSaver(root), db)
    _console.print(f"[green]op store[/] on http://{host}:{port} (db {db}, bytes in {root})")
    try:
        uvicorn.run(store.app, host=host, port=port, log_level="warning")
    finally:
        store.close()


@opstore_app.command()
def versions(
    op_name: Annotated[str, typer.Argument(help="The op whose versions to list.")],
    db: DbOption,
    root: RootOption,
) -> None:
    """List the registered versions of an op with their numbers."""
    from ._savers import FileSaver
    from ._store import OpStore

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
