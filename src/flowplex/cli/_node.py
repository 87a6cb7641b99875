"""Commands on a node: run a flow in-process, serve, list, send, run workers, the demos."""

from __future__ import annotations

import json
import os
import signal
import threading
from pathlib import Path
from typing import Annotated

import typer

from .. import LocalRuntime, serving
from ..config import load_yaml
from ..flows import FlowProxy, InstanceAddress
from ..runtime import DEFAULT_LEASE_SECONDS, DEFAULT_MAX_DELIVERIES
from ..workers import run_dispatch_worker_thread
from ._common import (
    DbOption,
    HomeOption,
    PathOption,
    UserOption,
    add_import_paths,
    console,
    err_console,
    open_client,
    parse_json_object,
    read_only_client,
    settings,
)

__all__ = ["register"]


def run(
    flow_class: Annotated[str, typer.Argument(help="Dotted class path of the flow to run.")],
    data: Annotated[str, typer.Argument(help="Input data as a JSON object.")],
    config: Annotated[
        Path | None, typer.Option("--config", "-c", help="YAML file of config overrides.")
    ] = None,
    timeout: Annotated[float | None, typer.Option(help="Seconds to wait for the reply.")] = None,
    path: PathOption = None,
) -> None:
    """Run a flow once in this process (subflows too) and print its reply as JSON."""
    add_import_paths(path or ())
    payload = parse_json_object(data, "DATA")
    overrides = load_yaml(config) if config else None
    reply = LocalRuntime().run(flow_class, payload, config_overrides=overrides, timeout=timeout)
    console.print_json(json.dumps(reply))


def serve(
    flow_class: Annotated[str, typer.Argument(help="Dotted class path of the flow.")],
    endpoint: Annotated[str, typer.Argument(help="Endpoint name to serve it at.")],
    db: DbOption = None,
    home: HomeOption = None,
    user: UserOption = None,
    dispatch_point: Annotated[str, typer.Option(help="Worker pool that runs it.")] = "default",
    singleton: Annotated[bool, typer.Option(help="One shared instance.")] = False,
    parallel: Annotated[bool, typer.Option(help="Run messages concurrently.")] = False,
    path: PathOption = None,
) -> None:
    """Serve a flow class at an endpoint of the node."""
    add_import_paths(path or ())
    cl = open_client(settings(home, db), user)
    if serving.serve_flow(cl, flow_class, endpoint, dispatch_point, parallel, singleton):
        console.print(f"serving [cyan]{flow_class}[/] at [bold]{endpoint}[/]")
    else:
        console.print(f"[yellow]already serving at {endpoint}[/] (nothing changed)")


def flows(
    db: DbOption = None,
    home: HomeOption = None,
    user: UserOption = None,
    values: Annotated[bool, typer.Option("--values", help="Show values too.")] = False,
) -> None:
    """Print the served-flow tree of a user."""
    cl = read_only_client(settings(home, db), user)
    tree = serving.format_served_flows(cl, print_values=values) if cl is not None else ""
    console.print(tree or "[dim](no served flows)[/]", highlight=False)


def instances(db: DbOption = None, home: HomeOption = None, user: UserOption = None) -> None:
    """List the flow instances a user serves."""
    cl = read_only_client(settings(home, db), user)
    text = serving.format_flow_instances(cl) if cl is not None else ""
    console.print(text or "[dim](no instances)[/]", highlight=False)


def send(
    endpoint: Annotated[str, typer.Argument(help="Endpoint to mount an instance of.")],
    data: Annotated[str, typer.Argument(help="Input data as a JSON object.")],
    db: DbOption = None,
    home: HomeOption = None,
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
    path: PathOption = None,
) -> None:
    """Send data to a served flow and print the reply as JSON."""
    add_import_paths(path or ())
    payload = parse_json_object(data, "DATA")
    cl = open_client(settings(home, db), user)
    try:
        if flow_id is None:
            proxy = serving.get_flow_instance(cl, endpoint, user_id=serving_user)
        else:
            owner = cl.get_user_id() if serving_user == "local" else serving_user
            proxy = FlowProxy(cl, InstanceAddress(owner, flow_id), flow_endpoint=endpoint)
        if worker:
            run_dispatch_worker_thread(cl, all_users=True)
        reply = proxy.get_reply_future(proxy.package_input_message(payload)).get_data(timeout)
    finally:
        cl.node.close()
    console.print_json(json.dumps(reply))


def worker(
    db: DbOption = None,
    home: HomeOption = None,
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
    path: PathOption = None,
) -> None:
    """Run dispatch workers in this process until SIGINT/SIGTERM (then finish and exit)."""
    from ..server import start_dispatch_workers

    add_import_paths(path or ())
    secrets = {}
    for item in secret or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"--secret takes KEY=VALUE, got {item!r}.")
        secrets[key] = value
    node = open_client(settings(home, db)).node
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    threads = start_dispatch_workers(
        node,
        concurrency,
        dispatch_point,
        user_id=user,
        secrets=secrets,
        lease_seconds=lease,
        max_deliveries=max_deliveries,
    )
    err_console.print(
        f"flowplex worker: {concurrency} thread(s), dispatch point {dispatch_point!r}, "
        f"node {node.url}, pid {os.getpid()}",
        highlight=False,
        soft_wrap=True,
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


def demo(
    number: Annotated[int, typer.Option(help="The number to reverse.")] = 1234,
    home: Annotated[
        Path | None,
        typer.Option(
            "--home",
            help="Run on the node in this folder, which must serve nothing yet "
            "(default: a temporary node, removed at the end).",
            show_default=False,
        ),
    ] = None,
    db: Annotated[
        str | None,
        typer.Option(
            "--db",
            help="Run on this database, which must serve nothing yet (default: a temporary "
            "SQLite file).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Walk through serving, step by step, on a node of its own.

    Two users on one node: endpoints, mounts, unserve, deletes; then user 1 composes user 0's
    singleton flow. It never touches the node in FLOWPLEX_HOME or FLOWPLEX_DB.
    """
    from ..examples.demo import run_demo

    run_demo(console, number=number, db=db, home=home)


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


def register(app: typer.Typer) -> None:
    """Add the node commands to the root command."""
    app.command()(run)
    app.command()(serve)
    app.command()(flows)
    app.command()(instances)
    app.command()(send)
    app.command()(worker)
    app.command()(demo)
    app.command("local-demo")(local_demo)
