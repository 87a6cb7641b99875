"""The engine's commands: ``flowplex runs ...`` and ``flowplex runner``.

Runs live in the node database (``--db``, else ``FLOWPLEX_DB``, else the SQLite file in the
home). ``call`` tasks reach the serving runtime through a client of that same node, opened when
the first ``call`` task runs; a dispatch worker for the called flow must be running
(``flowplex worker``).
"""

from __future__ import annotations

import json
import os
import threading
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.table import Column, Table
from rich.tree import Tree

from ..config import Settings, load_yaml
from ..db import DatabaseURL
from ..engine import ROOT_KEY, EngineError, FlowEngine, Status, TaskFlow
from ..runtime import Client
from ._common import (
    COMMAND,
    DbOption,
    FlowplexGroup,
    HomeOption,
    Interrupts,
    PathOption,
    add_import_paths,
    console,
    err_console,
    open_client,
    require_database,
    settings,
)

if TYPE_CHECKING:
    from ..engine import FlowRunner, FlowStore

__all__ = ["register"]

COMPLETED, FAILED, RUNNING = Status.COMPLETED, Status.FAILED, Status.RUNNING
FINISHED = frozenset({COMPLETED, FAILED})

runs_app = typer.Typer(
    cls=FlowplexGroup,
    help="Task-graph flow runs: create, list, show and tick them.",
    no_args_is_help=True,
)

LeaseOption = Annotated[
    float, typer.Option(min=0.05, help="Seconds a claimed flow stays reserved to this process.")
]

_STYLE = {"PENDING": "dim", "RUNNING": "yellow", "COMPLETED": "green", "FAILED": "red"}


def register(app: typer.Typer) -> None:
    """Add ``runs`` and ``runner`` to the root command."""
    app.add_typer(runs_app, name="runs")
    app.command("runner", **COMMAND)(runner_command)


def _settings(home: Path | None, db: str | None, *, read_only: bool = False) -> Settings:
    resolved = settings(home, db)
    if DatabaseURL.parse(resolved.db_url).volatile:
        raise typer.BadParameter(
            "runs need a database that outlives the command: use a SQLite file or PostgreSQL."
        )
    if read_only:
        require_database(resolved.db_url)
    return resolved


def _store(resolved: Settings) -> FlowStore:
    from ..engine import FlowStore

    store = FlowStore(resolved.db_url)
    store.ensure_tables()
    return store


def _engine(store: FlowStore, resolved: Settings) -> FlowEngine:
    def client() -> Client:
        return open_client(resolved)

    return FlowEngine(store=store, client=client)


def _status(status: str) -> str:
    return f"[{_STYLE.get(status, '')}]{status}[/]"


def _progress(flow: TaskFlow) -> str:
    tasks = list(flow.iter_tasks())
    done = sum(1 for t in tasks if t["status"] == COMPLETED)
    return f"{done}/{len(tasks)}"


@runs_app.command("create", **COMMAND)
def create(
    file: Annotated[Path, typer.Argument(help="Flow spec file: YAML, or JSON (.json).")],
    db: DbOption = None,
    home: HomeOption = None,
    path: PathOption = None,
) -> None:
    """Store a new run from a flow spec; print its key."""
    add_import_paths(path or ())
    if not file.is_file():
        raise typer.BadParameter(f"no such file: {file}")
    if not file.read_bytes().strip():
        raise typer.BadParameter(f"empty flow spec file: {file}")
    if file.suffix.lower() == ".json":
        try:
            spec = json.loads(file.read_text())
        except ValueError as exc:
            raise typer.BadParameter(f"{file} is not valid JSON: {exc}") from None
    else:
        spec = load_yaml(file)
    flow = TaskFlow.from_flow_spec(spec)
    store = _store(_settings(home, db))
    try:
        console.print(store.create_flow(flow), highlight=False, soft_wrap=True)
    finally:
        store.close()


@runs_app.command("ls", **COMMAND)
def ls(
    status: Annotated[
        list[str] | None, typer.Option("--status", help="Only runs with this status (repeat).")
    ] = None,
    label: Annotated[str | None, typer.Option(help="Only runs with this label.")] = None,
    limit: Annotated[int, typer.Option(min=1, help="At most this many (newest first).")] = 50,
    db: DbOption = None,
    home: HomeOption = None,
) -> None:
    """List runs, newest first."""
    statuses = [s.upper() for s in status or []]
    unknown = sorted(set(statuses) - {"PENDING", "RUNNING", "COMPLETED", "FAILED"})
    if unknown:
        raise typer.BadParameter(f"unknown status {unknown}: use PENDING, RUNNING, ...")
    store = _store(_settings(home, db, read_only=True))
    try:
        flows = store.query_flows(
            status=statuses or None, label=label, descending=True, limit=limit
        )
    finally:
        store.close()
    if not flows:
        console.print("[dim](no runs)[/]")
        return
    # Keys are long: the key column never wraps, the others give way on narrow terminals.
    table = Table(Column("key", no_wrap=True), "label", "status", "done")
    for flow in flows:
        table.add_row(flow.key, flow.label or "", _status(flow.status), _progress(flow))
    console.print(table)


@runs_app.command("show", **COMMAND)
def show(
    key: Annotated[str, typer.Argument(help="The run's key (flow:...).")],
    db: DbOption = None,
    home: HomeOption = None,
) -> None:
    """Show a run's task tree with statuses (and its errors)."""
    store = _store(_settings(home, db, read_only=True))
    try:
        flow = store.get_flow(key)
    finally:
        store.close()
    console.print(_tree(flow))
    for error in flow.errors:
        console.print(f"[red]error:[/] {error}", highlight=False, soft_wrap=True)


def _tree(flow: TaskFlow) -> Tree:
    """ROOT at the top, each task under its precursors (a join appears under each, once in
    full and then as a reference)."""
    parent = f" (child of {flow.parent_key}, depth {flow.depth})" if flow.parent_key else ""
    tree = Tree(f"[bold]{flow.label or '(no label)'}[/] {flow.key} {_status(flow.status)}{parent}")
    children: dict[str, list[str]] = {}
    for src, dest in flow.edges:
        children.setdefault(src, []).append(dest)
    shown: set[str] = set()

    def add(node: Tree, key: str) -> None:
        task = flow.tasks[key]
        text = f"{key} [cyan]{task.get('task_type')}[/] {_status(task['status'])}"
        if key in shown:
            node.add(f"{text} [dim](see above)[/]")
            return
        shown.add(key)
        if task.get("error"):
            text += f" [red]{task['error']}[/]"
        branch = node.add(text)
        for child in children.get(key, []):
            add(branch, child)

    for key in children.get(ROOT_KEY, []):
        add(tree, key)
    return tree


@runs_app.command("tick", **COMMAND)
def tick(
    key: Annotated[
        str | None, typer.Argument(help="Tick this run only (default: every claimable run).")
    ] = None,
    until_finished: Annotated[
        bool, typer.Option("--until-finished", help="Keep ticking until the run(s) finish.")
    ] = False,
    max_ticks: Annotated[int, typer.Option(min=1, help="Give up after this many rounds.")] = 500,
    interval: Annotated[
        float, typer.Option(min=0.0, help="Seconds between rounds that only wait.")
    ] = 0.1,
    lease: LeaseOption = 5.0,  # the runner's DEFAULT_CLAIM_LEASE (its module loads SQLAlchemy)
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the flow dict(s) as JSON.")
    ] = False,
    db: DbOption = None,
    home: HomeOption = None,
    path: PathOption = None,
) -> None:
    """Tick runs and print where they stand.

    With KEY: one engine tick of that run, or with --until-finished, rounds over the run and
    its child runs until it finishes. Without KEY: one runner round (every claimable run
    ticked as far as it goes now), or rounds until no run is PENDING or RUNNING.
    """
    from ..engine import FlowRunner

    add_import_paths(path or ())
    resolved = _settings(home, db)
    store = _store(resolved)
    stop = threading.Event()
    try:
        with Interrupts("finishing the round in hand; the runs keep their progress", stop):
            if key is None:
                keys = [f.key for f in store.query_flows(status=["PENDING", "RUNNING"]) if f.key]
                # One round takes every run listed (a runner's default would take only ten).
                runner = FlowRunner(
                    store,
                    _engine(store, resolved),
                    lease=lease,
                    max_flows_per_tick=max(1, len(keys)),
                )
                with _Rounds(store, keys, until_finished, max_ticks, interval, stop) as rounds:
                    _run_all(runner, until_finished, rounds)
            else:
                keys = [key]
                runner = FlowRunner(store, _engine(store, resolved), lease=lease)
                with _Rounds(store, keys, until_finished, max_ticks, interval, stop) as rounds:
                    _run_one(runner, key, until_finished, rounds)
        flows = [store.get_flow(k) for k in keys]
    finally:
        store.close()
    for flow in flows:
        if as_json:
            console.print_json(json.dumps(flow.to_flow_dict()))
        else:
            console.print(
                f"{flow.key} {_status(flow.status)} ({_progress(flow)} tasks completed)",
                highlight=False,
                soft_wrap=True,
            )
    if not flows:
        console.print("[dim](no runs to tick)[/]")
    if stop.is_set():
        raise typer.Exit(130)
    failed = [f for f in flows if f.status == FAILED]
    for flow in failed:
        errors = "; ".join(flow.errors) or "a task failed"
        err_console.print(
            f"[red]error:[/] run {flow.key} FAILED: {escape(errors)}",
            highlight=False,
            soft_wrap=True,
        )
    if failed:
        raise typer.Exit(1)


class _Rounds:
    """How ``runs tick`` goes round: at most ``max_rounds``, ``interval`` between rounds that
    only wait, until ``stop``; with ``show``, a Rich status line on stderr with each run's
    completed tasks (drawn only on a terminal)."""

    def __init__(
        self,
        store: FlowStore,
        keys: list[str],
        show: bool,
        max_rounds: int,
        interval: float,
        stop: threading.Event,
    ) -> None:
        self.store = store
        self.keys = keys
        self.max_rounds = max_rounds
        self.interval = interval
        self.stop = stop
        self.rounds = 0
        self._status = err_console.status("starting", spinner="dots") if show else None

    def update(self) -> None:
        """Count a round and show where the runs stand."""
        self.rounds += 1
        if self._status is None:
            return
        parts = []
        for key in self.keys[:3]:
            flow = self.store.get_flow(key)
            parts.append(f"{flow.label or key[:13]}: {_progress(flow)} tasks, {flow.status}")
        more = f" (+{len(self.keys) - 3} more)" if len(self.keys) > 3 else ""
        self._status.update(f"round {self.rounds}: " + "; ".join(parts) + more)

    def __enter__(self) -> _Rounds:
        if self._status is not None:
            self._status.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._status is not None:
            self._status.stop()


def _run_all(runner: FlowRunner, until_finished: bool, rounds: _Rounds) -> None:
    if not until_finished:
        runner.tick()
        return
    gave_up = False

    def count(_: dict[str, int]) -> None:
        nonlocal gave_up
        rounds.update()
        if rounds.rounds >= rounds.max_rounds:
            gave_up = True
            rounds.stop.set()

    runner.run(rounds.stop, interval=rounds.interval, until_finished=True, on_tick=count)
    if gave_up:
        rounds.stop.clear()
        raise EngineError(f"runs are still unfinished after {rounds.max_rounds} rounds.")


def _run_one(runner: FlowRunner, key: str, until_finished: bool, rounds: _Rounds) -> None:
    store = runner.store
    flow = store.get_flow(key)  # FlowNotFoundError if there is none
    if flow.status in FINISHED:
        raise EngineError(f"run {key} is already {flow.status}.")
    if not until_finished:
        claim = store.claim_flow(key, runner.lease)
        if claim is None:
            raise EngineError(f"run {key} is claimed by a runner right now; try again later.")
        saved = False
        try:
            runner.engine.tick_flow(claim.flow, runner.ctx)
            store.save_flow(claim.flow, claim=claim, release=True)
            saved = True
        finally:
            # Drop the replies call tasks used only once the run that used them is saved.
            runner.engine.release_replies(saved)
            if not saved:
                store.release_claim(claim)
        return
    for _ in range(rounds.max_rounds):
        # The run and its unfinished child runs (a flow task waits for its child).
        progressed = False
        for k in [key, *_unfinished_descendants(store, key)]:
            claim = store.claim_flow(k, runner.lease)
            if claim is not None:
                progressed = runner.run_claim(claim) or progressed
        rounds.update()
        if store.get_flow(key).status in FINISHED or rounds.stop.is_set():
            return
        if not progressed:
            rounds.stop.wait(rounds.interval)
    raise EngineError(f"run {key} is still unfinished after {rounds.max_rounds} rounds.")


def _unfinished_descendants(store: FlowStore, key: str) -> list[str]:
    found: list[str] = []
    parents = [key]
    while parents:
        children = [
            f.key
            for p in parents
            for f in store.query_flows(parent_key=p, status=["PENDING", "RUNNING"])
            if f.key
        ]
        found.extend(children)
        parents = children
    return found


def runner_command(
    db: DbOption = None,
    lease: LeaseOption = 5.0,  # the runner's DEFAULT_CLAIM_LEASE (its module loads SQLAlchemy)
    interval: Annotated[
        float, typer.Option(min=0.0, help="Seconds to wait after a round with nothing to do.")
    ] = 0.5,
    max_flows: Annotated[int, typer.Option(min=1, help="Flows claimed per round.")] = 10,
    home: HomeOption = None,
    path: PathOption = None,
) -> None:
    """Run task-graph flows from the database until SIGINT/SIGTERM (then finish the round)."""
    from ..engine import FlowRunner

    add_import_paths(path or ())
    resolved = _settings(home, db)
    store = _store(resolved)
    runner = FlowRunner(store, _engine(store, resolved), lease=lease, max_flows_per_tick=max_flows)
    stop = threading.Event()
    err_console.print(
        f"flowplex runner: {store!r}, lease {lease:g} s, up to {max_flows} flow(s) a round, "
        f"pid {os.getpid()}",
        soft_wrap=True,
        highlight=False,
    )
    totals: Counter[str] = Counter()
    report = _reporter(totals)
    try:
        with Interrupts("finishing the round in hand; the runs keep their progress", stop):
            runner.run(stop, interval=interval, on_tick=report)
    finally:
        store.close()
    err_console.print(f"stopped: {_summary(totals)}", soft_wrap=True)


def _reporter(totals: Counter[str]) -> Callable[[dict[str, int]], None]:
    def on_tick(counts: dict[str, int]) -> None:
        if not counts.get("progressed"):
            return
        totals.update({k: v for k, v in counts.items() if k in (COMPLETED, FAILED, "lost")})
        totals["rounds"] += 1
        now = {k: v for k, v in counts.items() if k in (COMPLETED, FAILED, RUNNING, "lost")}
        err_console.print(
            f"ticked {counts['claimed']} flow(s): "
            + ", ".join(f"{k.lower()} {v}" for k, v in sorted(now.items()))
            + f"  [dim](total: {_summary(totals)})[/]",
            highlight=False,
            soft_wrap=True,
        )

    return on_tick


def _summary(totals: Counter[str]) -> str:
    return f"{totals[COMPLETED]} completed, {totals[FAILED]} failed, {totals['lost']} lost claim(s)"
