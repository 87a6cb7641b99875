"""What every command shares: the consoles, the options that name a node, settings and logging,
the import path, and turning errors into one clear line.

Settings are resolved here and nowhere else: :func:`settings` passes a command's ``--home`` and
``--db`` to :meth:`flowplex.config.Settings.from_env` (the one reader of ``FLOWPLEX_*``), and
:func:`configure_logging` applies the log level once, when the command line starts.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape
from typer.core import TyperArgument, TyperCommand, TyperGroup

from ..config import Settings
from ..db import redact
from ..errors import ConfigurationError
from ..runtime import Client, Node, open_node, start_node_with_users

__all__ = [
    "COMMAND",
    "DbOption",
    "FlowplexCommand",
    "FlowplexGroup",
    "HomeOption",
    "Interrupts",
    "PathOption",
    "UrlOption",
    "UserOption",
    "add_import_paths",
    "configure_logging",
    "console",
    "err_console",
    "error_line",
    "missing_extra",
    "open_client",
    "parse_json_object",
    "read_only_client",
    "require_database",
    "settings",
]

#: Where results go (stdout) and where progress, banners and errors go (stderr).
console = Console()
err_console = Console(stderr=True)

logger = logging.getLogger("flowplex.cli")

DbOption = Annotated[
    str | None,
    typer.Option(
        "--db",
        metavar="URL",
        help="Database URL: memory://, sqlite:///path.db or postgresql://... "
        "(default: FLOWPLEX_DB, else flowplex.db in the home).",
        show_default=False,
    ),
]
HomeOption = Annotated[
    Path | None,
    typer.Option(
        "--home",
        metavar="DIR",
        help="Where the node keeps its files (default: FLOWPLEX_HOME, else ./.flowplex).",
        show_default=False,
    ),
]
UrlOption = Annotated[
    str, typer.Option("--url", metavar="URL", help="Where to serve: http://host:port.")
]
PathOption = Annotated[
    list[Path] | None,
    typer.Option(
        "--path",
        metavar="DIR",
        help="A folder to import flow classes from (repeatable; the current folder is always "
        "searched).",
        show_default=False,
    ),
]
UserOption = Annotated[
    str | None,
    typer.Option("--user", metavar="USER_ID", help="User id (default: the node's first user)."),
]

_LABELS = {"int": "N", "float": "NUMBER", "Path": "PATH", "str": "TEXT"}


def _tidy_help(params: list[Any]) -> list[Any]:
    """Help labels people read: ``N``, ``NUMBER``, ``PATH``, ``TEXT`` (or the option's own
    metavar) instead of Python type names, none for flags and arguments (their help says
    it), and arguments named in capitals."""
    for param in params:
        if isinstance(param, TyperArgument):
            if param.metavar is None:
                param.metavar = (param.name or "").upper()
            # Typer reads the label through this method: one per parameter, set on the object.
            setattr(param, "display_type_rich", _no_label)  # noqa: B010
        elif param.metavar is None:
            if param.is_flag or param.name == "help":
                setattr(param, "display_type_rich", _no_label)  # noqa: B010
            else:
                name = param.bare_type()
                many = name.startswith("list[")
                label = _LABELS.get(name.removeprefix("list[").removesuffix("]"), "TEXT")
                setattr(param, "display_type_rich", _label(label + ("..." if many else "")))  # noqa: B010
    return params


def _no_label(ctx: object) -> None:
    return None


def _label(text: str) -> Any:
    def show(ctx: object) -> str:
        return text

    return show


class FlowplexCommand(TyperCommand):
    """A command whose help shows plain labels (see :func:`_tidy_help`)."""

    def get_params(self, ctx: Any) -> list[Any]:
        return _tidy_help(super().get_params(ctx))


class FlowplexGroup(TyperGroup):
    """A command group whose own options' help shows plain labels."""

    def get_params(self, ctx: Any) -> list[Any]:
        return _tidy_help(super().get_params(ctx))


#: Keyword arguments of every ``app.command(...)``.
COMMAND: dict[str, Any] = {"cls": FlowplexCommand}

#: Optional extras: the top-level module each brings, and the extra that installs it.
EXTRAS = {"psycopg": "postgres", "psycopg_binary": "postgres", "psycopg_c": "postgres"}


def settings(home: Path | None = None, db: str | None = None) -> Settings:
    """The settings of one command: ``--db`` beats ``FLOWPLEX_DB`` beats the home's SQLite
    file; ``--home`` beats ``FLOWPLEX_HOME`` beats ``./.flowplex``."""
    resolved = Settings.from_env(home=home, db=db)
    logger.debug("home %s, database %s", resolved.home, resolved.db_url)
    return resolved


def configure_logging(level: str | None = None) -> Settings:
    """Apply the log level (``--log-level``, else ``FLOWPLEX_LOG_LEVEL``, else WARNING) to
    flowplex's loggers, which print to stderr."""
    resolved = Settings.from_env(log_level=level)
    flowplex_logger = logging.getLogger("flowplex")
    flowplex_logger.setLevel(resolved.log_level)
    if not any(getattr(h, "console", None) is err_console for h in flowplex_logger.handlers):
        handler = RichHandler(console=err_console, show_time=False, show_path=False, markup=False)
        handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
        flowplex_logger.addHandler(handler)
    return resolved


def add_import_paths(paths: Iterable[Path] = ()) -> None:
    """Put ``paths`` and then the current folder first on the import path (as ``python -m``
    does for the current folder), so ``greeter.Greeter`` resolves from a project folder."""
    for entry in [Path.cwd(), *reversed(list(paths))]:
        text = str(entry.resolve())
        if text in sys.path:
            sys.path.remove(text)
        sys.path.insert(0, text)


def require_database(url: str) -> None:
    """Refuse a SQLite file that does not exist: a command that only reads must not create
    an empty database at a mistyped path."""
    from ..db import DatabaseURL

    path = DatabaseURL.parse(url).path
    if path is not None and not path.is_file():
        raise ConfigurationError(
            f"no database at {path}: check --db, FLOWPLEX_DB or --home (this command only "
            f"reads, it creates none)."
        )


def open_client(resolved: Settings, user: str | None = None) -> Client:
    """A handle on the node of ``resolved`` (created if new) for ``user`` (default: the first
    user, created if the node has none)."""
    clients = start_node_with_users(1, path=resolved.home, db=resolved.db_url)
    return clients[0] if user is None else _find_user(clients[0].node, user, resolved.db_url)


def read_only_client(resolved: Settings, user: str | None = None) -> Client | None:
    """``user``'s handle (default: the first user; None if there is none) on the existing node
    of ``resolved``. Creates no database, no user and no home folder."""
    require_database(resolved.db_url)
    # The home holds the users' key files; an existing one is opened, none is made.
    node = open_node(resolved.db_url, resolved.home if resolved.home.is_dir() else None)
    if user is not None:
        return _find_user(node, user, resolved.db_url)
    users = node.users()
    return users[0] if users else None


def _find_user(node: Node, user: str, url: str) -> Client:
    for cl in node.users():
        if cl.get_user_id() == user:
            return cl
    raise typer.BadParameter(f"no user {user} on the node at {redact(url)}.")


def parse_json_object(text: str, what: str) -> dict[str, Any]:
    """``text`` as a JSON object, or a usage error naming ``what``."""
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise typer.BadParameter(f"{what} is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise typer.BadParameter(f"{what} must be a JSON object, like '{{\"number\": 1234}}'.")
    return value


def missing_extra(exc: BaseException) -> str | None:
    """The install line for the optional extra whose absence caused ``exc``, if one did."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, ModuleNotFoundError) and current.name:
            extra = EXTRAS.get(current.name.split(".")[0])
            if extra is not None:
                return (
                    f"{current.name.split('.')[0]} is not installed; it comes with the "
                    f'{extra} extra: pip install "flowplex[{extra}]"'
                )
        current = current.__cause__ or current.__context__
    return None


def error_line(message: str) -> None:
    """Print ``message`` as one ``error:`` line on stderr (brackets in it are shown as is)."""
    err_console.print(f"[red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)


class Interrupts:
    """Ctrl-C (and SIGTERM) for a command that finishes work before it exits.

    The first signal says what the command is finishing (``finishing``) and then sets
    ``on_first`` when it is an event (the command's stop event), or calls it (to raise
    :class:`KeyboardInterrupt` into the waiting main thread); a second one exits at once with
    code 130. A ``with`` block installs the handlers (in the main thread only) and restores the
    previous ones on the way out.
    """

    def __init__(self, finishing: str, on_first: threading.Event | Callable[[], None]) -> None:
        self.finishing = finishing
        self.on_first = on_first
        self.count = 0
        self._previous: dict[int, Any] = {}

    def handle(self, signum: int, frame: object) -> None:
        """The signal handler."""
        self.count += 1
        if self.count > 1:
            err_console.print("interrupted again: exiting now, without finishing")
            os._exit(130)
        err_console.print(
            f"stopping: {self.finishing} (Ctrl-C again to exit at once)", highlight=False
        )
        if isinstance(self.on_first, threading.Event):
            # Another thread sets it: the handler runs in the main thread, which may be inside
            # the event's wait() holding its lock (not reentrant), so setting it here could
            # deadlock.
            threading.Thread(target=self.on_first.set, name="flowplex-stop", daemon=True).start()
        else:
            self.on_first()

    def __enter__(self) -> Interrupts:
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                self._previous[signum] = signal.signal(signum, self.handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()
