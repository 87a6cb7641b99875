"""The ``flowplex`` command line (Typer + Rich).

This is the only module that reads argv and picks backends; the library never does.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from . import __version__, serving
from .artifacts._cli import register_commands as _register_artifacts_commands
from .config import Settings, load_yaml
from .engine._cli import register as _register_engine_commands
from .errors import FlowplexError
from .flows import FlowProxy, InstanceAddress
from .mesh._cli import register_commands as _register_mesh_commands
from .runtime import (
    DEFAULT_LEASE_SECONDS,
    DEFAULT_MAX_DELIVERIES,
    Client,
    Dispatcher,
    DispatchWorker,
    LocalRuntime,
    start_node_with_users,
)
from .workers import run_dispatch_worker_thread

app = typer.Typer(
    name="flowplex",
    help="Define, serve, discover, compose and run flows.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()
err_console = Console(stderr=True)


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
) -> None:
    """flowplex: define, serve, discover, compose and run flows."""


def _parse_json_object(text: str, what: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise typer.BadParameter(f"{what} is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise typer.BadParameter(f"{what} must be a JSON object, like '{{\"number\": 1234}}'.")
    return value


@app.command()
def run(
    flow_class: Annotated[str, typer.Argument(help="Dotted class path of the flow to run.")],
    data: Annotated[str, typer.Argument(help="Input data as a JSON object.")],
    config: Annotated[
        Path | None, typer.Option("--config", "-c", help="YAML file of config overrides.")
    ] = None,
    timeout: Annotated[float | None, typer.Option(help="Seconds to wait for the reply.")] = None,
) -> None:
    """Run a flow once in this process (subflows too) and print its reply as JSON."""
    payload = _parse_json_object(data, "DATA")
    overrides = load_yaml(config) if config else None
    reply = LocalRuntime().run(flow_class, payload, config_overrides=overrides, timeout=timeout)
    console.print_json(json.dumps(reply))


# -- nodes and serving ---------------------------------------------------------------------

DbOption = Annotated[
    str | None,
    typer.Option(
        "--db", help="Node database URL (default: FLOWPLEX_DB, else SQLite in FLOWPLEX_HOME)."
    ),
]
UserOption = Annotated[
    str | None, typer.Option("--user", help="User id (default: the node's first user).")
]


def _client(db: str | None, user: str | None = None) -> Client:
    """A handle on the node at ``db`` (the embedded default when None) for ``user``."""
    settings = Settings.from_env()
    url = db or settings.db_url
    path = settings.home if url == settings.db_url else None
    clients = start_node_with_users(1, path=path, db=url)
    if user is None:
        return clients[0]
    for cl in clients[0].node.users():
        if cl.get_user_id() == user:
            return cl
    raise typer.BadParameter(f"no user {user} on the node at {url}.")


@app.command()
def serve(
    flow_class: Annotated[str, typer.Argument(help="Dotted class path of the flow.")],
    endpoint: Annotated[str, typer.Argument(help="Endpoint name to serve it at.")],
    db: DbOption = None,
    user: UserOption = None,
    dispatch_point: Annotated[str, typer.Option(help="Worker pool that runs it.")] = "default",
    singleton: Annotated[bool, typer.Option(help="One shared instance.")] = False,
    parallel: Annotated[bool, typer.Option(help="Run messages concurrently.")] = False,
) -> None:
    """Serve a flow class at an endpoint of the node."""
    cl = _client(db, user)
    if serving.serve_flow(cl, flow_class, endpoint, dispatch_point, parallel, singleton):
        console.print(f"serving [cyan]{flow_class}[/] at [bold]{endpoint}[/]")
    else:
        console.print(f"[yellow]already serving at {endpoint}[/] (nothing changed)")


@app.command()
def flows(
    db: DbOption = None,
    user: UserOption = None,
    values: Annotated[bool, typer.Option("--values", help="Show values too.")] = False,
) -> None:
    """Print the served-flow tree of a user."""
    cl = _client(db, user)
    tree = serving.format_served_flows(cl, print_values=values)
    console.print(tree or "[dim](no served flows)[/]", highlight=False)


@app.command()
def instances(db: DbOption = None, user: UserOption = None) -> None:
    """List the flow instances a user serves."""
    cl = _client(db, user)
    console.print(serving.format_flow_instances(cl) or "[dim](no instances)[/]", highlight=False)


@app.command()
def send(
    endpoint: Annotated[str, typer.Argument(help="Endpoint to mount an instance of.")],
    data: Annotated[str, typer.Argument(help="Input data as a JSON object.")],
    db: DbOption = None,
    user: UserOption = None,
    serving_user: Annotated[
        str, typer.Option("--serving-user", help="Who serves the endpoint ('local': you).")
    ] = "local",
    flow_id: Annotated[
        str | None, typer.Option(help="Send to this existing instance instead of a new one.")
    ] = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the reply.")] = 30.0,
    worker: Annotated[
        bool, typer.Option(help="Run a dispatch worker in this process while waiting.")
    ] = True,
) -> None:
    """Send data to a served flow and print the reply as JSON."""
    payload = _parse_json_object(data, "DATA")
    cl = _client(db, user)
    if flow_id is None:
        proxy = serving.get_flow_instance(cl, endpoint, user_id=serving_user)
    else:
        owner = cl.get_user_id() if serving_user == "local" else serving_user
        proxy = FlowProxy(cl, InstanceAddress(owner, flow_id), flow_endpoint=endpoint)
    if worker:
        run_dispatch_worker_thread(cl, all_users=True)
    try:
        reply = proxy.get_reply_future(proxy.package_input_message(payload)).get_data(timeout)
    finally:
        cl.node.close()
    console.print_json(json.dumps(reply))


@app.command()
def worker(
    db: DbOption = None,
    dispatch_point: Annotated[str, typer.Option(help="The worker pool to serve.")] = "default",
    concurrency: Annotated[int, typer.Option(min=1, help="Worker threads.")] = 1,
    user: Annotated[
        str | None, typer.Option("--user", help="Only this user's instances (default: all).")
    ] = None,
    lease: Annotated[
        float, typer.Option(min=0.05, help="Seconds a message stays leased to a worker.")
    ] = DEFAULT_LEASE_SECONDS,
    max_deliveries: Annotated[
        int, typer.Option(min=1, help="Deliveries before a message is dead-lettered.")
    ] = DEFAULT_MAX_DELIVERIES,
    secret: Annotated[
        list[str] | None, typer.Option(help="KEY=VALUE secret for '???' config values.")
    ] = None,
    path: Annotated[
        list[Path] | None, typer.Option(help="Directory to add to sys.path for flow classes.")
    ] = None,
) -> None:
    """Run dispatch workers in this process until SIGINT/SIGTERM (then finish and exit)."""
    for directory in path or []:
        sys.path.insert(0, str(directory.resolve()))
    secrets = {}
    for item in secret or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"--secret takes KEY=VALUE, got {item!r}.")
        secrets[key] = value
    cl = _client(db)
    node = cl.node
    threads = [
        DispatchWorker(
            Dispatcher(node, dispatch_point, user, secrets, lease, max_deliveries), idle_wait=0.25
        )
        for _ in range(concurrency)
    ]
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    for thread in threads:
        node.register_worker(thread)
        thread.start()
    err_console.print(
        f"flowplex worker: {concurrency} thread(s), dispatch point {dispatch_point!r}, "
        f"node {node.url}, pid {os.getpid()}"
    )
    last = -1
    while not stop.wait(5.0):
        done = sum(t.processed for t in threads)
        if done != last:
            err_console.print(f"processed {done} message(s)")
            last = done
    err_console.print("stopping: finishing the messages in hand")
    node.close()
    err_console.print(f"stopped after {sum(t.processed for t in threads)} message(s)")


@app.command()
def demo(
    number: Annotated[int, typer.Option(help="The number to reverse.")] = 1234,
    db: DbOption = None,
) -> None:
    """The served scenario of seeds 000/001 on the node database, step by step.

    Two users on one node: endpoints, mounts, unserve, deletes; then user 1 composes user 0's
    singleton flow. It removes its endpoints at the end, as the seed does.
    """
    from .examples.demo import run_demo

    run_demo(console, number=number, db=db)


@app.command("local-demo")
def local_demo(
    number: Annotated[int, typer.Option(help="The number to reverse.")] = 1234,
) -> None:
    """Run the ReverseNumber examples in-process, without serving (no database)."""
    rt = LocalRuntime()
    steps = [
        ("ReverseNumberAtomicFlow", "reverses the digits once"),
        ("ReverseNumberSequentialFlow", "reverses twice, non-blocking (get_reply)"),
        ("ReverseNumberBlockingSequentialFlow", "reverses twice, blocking (get_reply_future)"),
    ]
    console.rule("[bold]flowplex local demo: ReverseNumber, in-process")
    for name, what in steps:
        proxy = rt.get_flow_instance(f"flowplex.examples.{name}")
        message = proxy.package_input_message({"id": 0, "number": number})
        reply = proxy.get_reply_future(message).get_data(timeout=30)
        console.print(f"[cyan]{name}[/] ({what})")
        console.print(f"  sent  {message.data}")
        console.print(f"  reply {reply}")
    console.print(f"[green]done[/]: {len(rt.instance_ids)} flow instances mounted in-process.")


# The other subsystems' command groups, after flowplex's own commands in --help.
_register_engine_commands(app)
_register_mesh_commands(app)
_register_artifacts_commands(app)


def main() -> None:
    """Entry point of the ``flowplex`` command: flowplex errors print as one clear line."""
    try:
        app()
    except FlowplexError as exc:
        err_console.print(f"[red]error:[/] {exc}", highlight=False)
        sys.exit(1)
