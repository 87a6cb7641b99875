"""Commands on a node: run a flow in-process, serve, list, send, run workers, the demos."""

from __future__ import annotations

import json
import os
import tempfile
import threading
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Column, Table

from .. import LocalRuntime, serving
from .._json import preview
from ..config import Settings, load_yaml
from ..flows import FlowProxy, InstanceAddress
from ..runtime import DEFAULT_LEASE_SECONDS, DEFAULT_MAX_DELIVERIES, Client
from ..workers import run_dispatch_worker_thread
from ._common import (
    COMMAND,
    DbOption,
    HomeOption,
    Interrupts,
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
    registry: Annotated[
        str | None,
        typer.Option(
            "--registry",
            metavar="URL",
            help="List the flows this registry knows instead (each at its node's URL).",
        ),
    ] = None,
    query: Annotated[
        str | None, typer.Option("--query", "-q", help="With --registry: a /flows query.")
    ] = None,
) -> None:
    """Print the served-flow tree of a user, or the flows a registry lists."""
    if registry is not None:
        _registry_flows(registry, query)
        return
    cl = read_only_client(settings(home, db), user)
    tree = serving.format_served_flows(cl, print_values=values) if cl is not None else ""
    console.print(tree or "[dim](no served flows)[/]", highlight=False)


def _registry_flows(registry: str, query: str | None) -> None:
    import httpx

    from ..errors import RemoteError
    from ..runtime import normalize_node_url

    base = normalize_node_url(registry, "--registry")
    params: dict[str, str | int] = {"pp": 1000}
    if query:
        params["q"] = query
    try:
        response = httpx.get(f"{base}/flows", params=params, timeout=10.0, trust_env=False)
        response.raise_for_status()
        rows = response.json()["items"]
    except (httpx.HTTPError, ValueError, KeyError) as exc:
        raise RemoteError(f"the registry {base} did not answer a listing: {exc}") from None
    if not rows:
        console.print("[dim](no flows listed)[/]")
        return
    table = Table("name", Column("url", no_wrap=True), "status", "description")
    for row in rows:
        url = f"{row.get('node', '')}{row.get('url', '')}"
        table.add_row(
            escape(str(row.get("name"))),
            escape(url),
            escape(str(row.get("status"))),
            escape(str(row.get("description") or "")),
        )
    console.print(table)


def instances(
    db: DbOption = None,
    home: HomeOption = None,
    user: Annotated[
        str | None,
        typer.Option(
            "--user",
            metavar="USER_ID",
            help="Only the instances this user serves (default: every user's).",
        ),
    ] = None,
) -> None:
    """List the flow instances on the node: endpoint, users, state, queue and errors."""
    cl = read_only_client(settings(home, db), user)
    if cl is None:
        console.print("[dim](no instances)[/]")
        return
    backend = cl.node.backend
    users = [cl.get_user_id()] if user is not None else [u.user_id for u in backend.list_users()]
    records = [r for u in users for r in backend.list_instances(u)]
    if not records:
        console.print("[dim](no instances)[/]")
        return
    stats = backend.instance_stats([r.flow_id for r in records])
    table = Table(
        Column("instance", no_wrap=True),
        "endpoint",
        Column("served by", no_wrap=True),
        Column("mounted by", no_wrap=True),
        "state",
        Column("queued", justify="right"),
        Column("in flight", justify="right"),
        Column("dead", justify="right"),
        "last error",
    )
    for r in records:
        s = stats[r.flow_id]
        table.add_row(
            r.flow_id,
            r.endpoint,
            r.user_id[:10] + "…",
            "the serving user" if r.client_id == "local" else r.client_id[:10] + "…",
            escape(preview(r.state, 40)),
            str(s.queued),
            str(s.in_flight),
            f"[red]{s.dead_letters}[/]" if s.dead_letters else "0",
            f"[red]{escape(_cut(s.last_error, 60))}[/]" if s.last_error else "",
        )
    console.print(table)


def _cut(text: str, width: int) -> str:
    line = " ".join(text.split())
    return line if len(line) <= width else line[: width - 1] + "…"


def send(
    endpoint: Annotated[str, typer.Argument(help="The served endpoint to send to.")],
    data: Annotated[str, typer.Argument(help="Input data as a JSON object.")],
    db: DbOption = None,
    home: HomeOption = None,
    user: UserOption = None,
    serving_user: Annotated[
        str,
        typer.Option(
            "--serving-user", metavar="USER_ID", help="Who serves the endpoint ('local': you)."
        ),
    ] = "local",
    instance: Annotated[
        str | None,
        typer.Option(
            "--instance",
            metavar="NAME",
            help="Send to the instance you named NAME (mounted the first time).",
        ),
    ] = None,
    flow_id: Annotated[
        str | None,
        typer.Option(metavar="ID", help="Send to this existing instance of ENDPOINT."),
    ] = None,
    new: Annotated[
        bool, typer.Option("--new", help="Mount a new instance (and use it from now on).")
    ] = False,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the reply.")] = 30.0,
    worker: Annotated[
        bool, typer.Option(help="Run a dispatch worker in this process while waiting.")
    ] = True,
    path: PathOption = None,
) -> None:
    """Send data to a served flow and print the reply as JSON.

    The first send to an endpoint mounts an instance; later sends reuse it (one per endpoint
    and user, remembered in the home), so its state carries on. --new mounts a fresh one,
    --instance NAME keeps a named one, --flow-id picks any existing instance of ENDPOINT.
    """
    if flow_id is not None and (instance is not None or new):
        raise typer.BadParameter("give --flow-id, or --instance/--new, not both.")
    add_import_paths(path or ())
    payload = parse_json_object(data, "DATA")
    resolved = settings(home, db)
    cl = open_client(resolved, user)
    interrupted = threading.Event()

    def stop_waiting() -> None:
        interrupted.set()
        raise KeyboardInterrupt

    interrupts = Interrupts("finishing the message in hand", stop_waiting)
    # Covers the node's closing too: a second Ctrl-C there exits at once.
    with interrupts:
        try:
            proxy = _target(cl, resolved, endpoint, serving_user, flow_id, instance, new)
            interrupts.finishing = (
                f"the message stays queued for instance {proxy.get_instance_id()} of "
                f"{endpoint}; finishing the message in hand"
            )
            if worker:
                run_dispatch_worker_thread(cl, all_users=True)
            future = proxy.get_reply_future(proxy.package_input_message(payload))
            reply = future.get_data(timeout)
        except KeyboardInterrupt:
            if not interrupted.is_set():
                raise
            raise typer.Exit(130) from None
        finally:
            cl.node.close()
    console.print_json(json.dumps(reply))


def _target(
    cl: Client,
    resolved: Settings,
    endpoint: str,
    serving_user: str,
    flow_id: str | None,
    name: str | None,
    new: bool,
) -> FlowProxy:
    """The instance ``send`` talks to (see its help); says on stderr when it mounts one."""
    owner = cl.get_user_id() if serving_user == "local" else serving_user
    backend = cl.node.backend
    if flow_id is not None:
        record = backend.get_instance(flow_id)
        if record is None:
            raise typer.BadParameter(f"no flow instance {flow_id} on this node.")
        if (record.endpoint, record.user_id) != (endpoint, owner):
            raise typer.BadParameter(
                f"instance {flow_id} belongs to endpoint {record.endpoint!r} served by "
                f"{record.user_id[:10]}…, not to {endpoint!r}: give its endpoint, or leave out "
                "--flow-id."
            )
        return FlowProxy(cl, InstanceAddress(owner, flow_id), flow_endpoint=endpoint)
    memory = _SendMemory(resolved)
    key = memory.key(cl.get_user_id(), owner, endpoint, name)
    remembered = None if new else memory.get(key)
    if remembered is not None:
        record = backend.get_instance(remembered)
        if record is not None and (record.endpoint, record.user_id) == (endpoint, owner):
            return FlowProxy(cl, InstanceAddress(owner, remembered), flow_endpoint=endpoint)
    proxy = serving.get_flow_instance(cl, endpoint, user_id=serving_user)
    memory.put(key, proxy.get_instance_id())
    named = f" named {name!r}" if name else ""
    err_console.print(
        f"mounted instance {proxy.get_instance_id()}{named} of {endpoint}; later sends reuse it "
        "(--new mounts another)",
        highlight=False,
        soft_wrap=True,
    )
    return proxy


class _SendMemory:
    """Which instance ``flowplex send`` uses, per database, user, endpoint and name: a small
    JSON file in the home (``send-instances.json``), rewritten atomically."""

    def __init__(self, resolved: Settings) -> None:
        self.db = resolved.db_url
        self.path = Path(resolved.home) / "send-instances.json"

    def key(self, user_id: str, owner: str, endpoint: str, name: str | None) -> str:
        return "|".join((self.db, user_id, owner, endpoint, name or ""))

    def _load(self) -> dict[str, str]:
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def get(self, key: str) -> str | None:
        value = self._load().get(key)
        return value if isinstance(value, str) else None

    def put(self, key: str, flow_id: str) -> None:
        if self.db.startswith("memory://"):
            return  # the instance goes with the process
        data = self._load()
        data[key] = flow_id
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".send-", suffix=".json")
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=1, sort_keys=True)
        os.replace(tmp, self.path)


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
    # The handlers go in before the threads start: a Ctrl-C as soon as they claim a message
    # must already finish it instead of killing the process under it.
    with Interrupts("finishing the messages in hand, then exiting", stop):
        threads = start_dispatch_workers(
            node,
            concurrency,
            dispatch_point,
            user_id=user,
            secrets=secrets,
            lease_seconds=lease,
            max_deliveries=max_deliveries,
            log_fatal=False,  # reported below, as the command's one error line
        )
        err_console.print(
            f"flowplex worker: {concurrency} thread(s), dispatch point {dispatch_point!r}, "
            f"node {node.url}, pid {os.getpid()}",
            highlight=False,
            soft_wrap=True,
        )
        last, beats = -1, 0
        fatal = None
        while not stop.wait(0.5) and fatal is None:
            # A thread that cannot write stops the worker: the others would fail the same way.
            fatal = next((t.fatal for t in threads if t.fatal is not None), None)
            beats += 1
            done = sum(t.processed for t in threads)
            if beats % 10 == 0 and done != last:
                err_console.print(f"processed {done} message(s)")
                last = done
        node.close()
    if fatal is not None:
        raise fatal
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
    app.command(**COMMAND)(run)
    app.command(**COMMAND)(serve)
    app.command(**COMMAND)(flows)
    app.command(**COMMAND)(instances)
    app.command(**COMMAND)(send)
    app.command(**COMMAND)(worker)
    app.command(**COMMAND)(demo)
    app.command("local-demo", **COMMAND)(local_demo)
