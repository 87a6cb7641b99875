"""The ``flowplex`` command line (Typer + Rich).

This is the only package that reads argv, resolves settings and picks backends; the library
never does, and nothing imports this package. Every command takes the node the same way
(``--home``, ``--db``), serves at ``--url``, imports flow classes from the current folder (and
each ``--path``), and prints a flowplex error as one ``error:`` line.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from .._version import __version__
from ..errors import FlowError, FlowplexError
from . import _engine, _mesh, _node, _opstore
from ._common import (
    FlowplexGroup,
    add_import_paths,
    configure_logging,
    console,
    error_line,
    missing_extra,
)

__all__ = ["app", "main"]

app = typer.Typer(
    cls=FlowplexGroup,
    name="flowplex",
    help="Define, serve, discover, compose and run flows.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version_callback(value: bool) -> None:
    if value:
        console.print(f"flowplex {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version_callback, is_eager=True, help="Print the version."
        ),
    ] = False,
    log_level: Annotated[
        str | None,
        typer.Option(
            "--log-level",
            help="DEBUG, INFO, WARNING, ERROR or CRITICAL (default: FLOWPLEX_LOG_LEVEL, else "
            "WARNING).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """flowplex: define, serve, discover, compose and run flows."""
    configure_logging(log_level)
    add_import_paths()


# In --help order: the node commands, then the engine's, the services, the op store.
_node.register(app)
_engine.register(app)
_mesh.register(app)
_opstore.register(app)


def main() -> None:
    """Entry point of the ``flowplex`` command: errors print as one clear line and exit 1."""
    try:
        app()
    except FlowError as exc:
        # The flow's own error, in one line: its remote traceback is for the logs.
        where = f" in flow instance {exc.flow_id}" if exc.flow_id else ""
        error_line(f"{exc.remote_type}{where}: {exc.remote_message}")
        sys.exit(1)
    except FlowplexError as exc:
        error_line(missing_extra(exc) or str(exc))
        sys.exit(1)
    except ImportError as exc:
        hint = missing_extra(exc)
        if hint is None:
            raise
        error_line(hint)
        sys.exit(1)
