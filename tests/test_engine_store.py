"""FlowStore and FlowRunner on every SQL backend: in-memory SQLite, a SQLite file, PostgreSQL.

The conformance tests run on all three through ``store_url`` (PostgreSQL in a fresh schema per
test: skipped locally without ``FLOWPLEX_TEST_POSTGRES_URL``, failing on CI). The crash test
kills a real ``flowplex runner`` process in the middle of a tick.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import engineflows
from flowplex import BackendError, ConfigurationError
from flowplex.engine import (
    EngineError,
    FlowExistsError,
    FlowNotFoundError,
    FlowRunner,
    FlowStore,
    LeaseLostError,
    TaskFlow,
)
from flowplex.testing import FakeClock
from waiting import wait_for

TESTS_DIR = Path(__file__).resolve().parent
DEADLINE = 30.0  # every wait is bounded: a bug fails the test instead of hanging it


def chain(label: str, n: int = 3, task_type: str = "noop") -> TaskFlow:
    return TaskFlow.from_flow_spec(
        {
            "label": label,
            "tasks": [
                {"key": f"t{i}", "task_type": task_type, "task_params": {"msg": f"{label}:{i}"}}
                for i in range(n)
            ],
        }
    )


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "memory":
        return "sqlite://"
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/flows.db"
    url: str = request.getfixturevalue("pg_url")
    return url


@pytest.fixture
def store(store_url: str) -> Iterator[FlowStore]:
    s = FlowStore(store_url)
    s.ensure_tables()
    yield s
    s.close()


# -- seed 003 ------------------------------------------------------------------------------------


def test_seed_003_saving_and_querying_flows(capsys: pytest.CaptureFixture[str]) -> None:
    # Houston's db utility in the seed; FlowStore here, with the same steps and output.
    my_store = FlowStore("sqlite://")
    my_store.ensure_tables()

    flow_spec = {
        "label": "example_flow",
        "tasks": [
            {"task_type": "print", "task_params": {"msg": f"I am task_{i}."}} for i in range(3)
        ],
    }
    flow = TaskFlow.from_flow_spec(flow_spec)

    db_flow_instance = my_store.model(**flow.to_flow_dict())
    my_store.session.add(db_flow_instance)
    my_store.session.commit()
    print("Has flow key:", db_flow_instance.key.startswith("flow:"))

    flow_from_db = my_store.session.query(my_store.model).first()
    assert flow_from_db is not None
    print("Has flow key:", flow_from_db.key.startswith("flow:"))
    assert capsys.readouterr().out == "Has flow key: True\nHas flow key: True\n"
    my_store.close()


def test_seed_store_example_on_every_backend(store: FlowStore) -> None:
    flow = chain("seed")
    record = store.model(**flow.to_flow_dict())
    store.session.add(record)
    store.session.commit()
    assert record.key.startswith("flow:") and len(record.key) == 41
    (found,) = store.query_flows(label="seed")
    assert found.key == record.key
    # MissionControl scenario 11: the record converts back to the same flow dict.
    loaded = store.session.get(store.model, record.key)
    assert loaded is not None
    assert loaded.to_flow().to_flow_dict() == {**flow.to_flow_dict(), "key": record.key}


# -- create, get, save ---------------------------------------------------------------------------


def test_create_get_save_round_trip(store: FlowStore) -> None:
    flow = chain("rt")
    key = store.create_flow(flow)
    assert key.startswith("flow:") and flow.key == key
    loaded = store.get_flow(key)
    assert loaded.to_flow_dict() == flow.to_flow_dict()
    loaded.data["note"] = "changed"
    loaded.status = "RUNNING"
    store.save_flow(loaded)
    again = store.get_flow(key)
    assert (again.data, again.status) == ({"note": "changed"}, "RUNNING")


def test_create_keeps_a_given_key_and_refuses_duplicates(store: FlowStore) -> None:
    flow = chain("mine")
    flow.key = "flow:mine"
    assert store.create_flow(flow) == "flow:mine"
    with pytest.raises(FlowExistsError, match="flow:mine"):
        store.create_flow(flow)
    assert [f.label for f in store.query_flows()] == ["mine"]


def test_missing_flows(store: FlowStore) -> None:
    with pytest.raises(FlowNotFoundError, match="flow:nope") as info:
        store.get_flow("flow:nope")
    assert isinstance(info.value, LookupError)
    ghost = chain("ghost")
    with pytest.raises(FlowNotFoundError, match="create_flow first"):
        store.save_flow(ghost)
    ghost.key = "flow:ghost"
    with pytest.raises(FlowNotFoundError):
        store.save_flow(ghost)
    with pytest.raises(EngineError, match="expected a TaskFlow"):
        store.create_flow({"label": "x"})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (object(), "not JSON serializable"),
        # SQLite took NaN and PostgreSQL refused it: every backend refuses it alike.
        (float("nan"), "Out of range float values are not JSON compliant"),
        (float("inf"), "Out of range float values are not JSON compliant"),
    ],
)
def test_unserializable_data_is_refused_and_nothing_is_stored(
    store: FlowStore, value: object, message: str
) -> None:
    flow = chain("odd")
    flow.data["when"] = value
    with pytest.raises(EngineError, match=f"cannot store the flow: .*{message}"):
        store.create_flow(flow)
    assert flow.key is None and store.query_flows() == []


def test_a_run_persists_between_ticks(store: FlowStore) -> None:
    # MissionControl scenario 11: tick, save, reload, run to the end.
    from flowplex.engine import FlowEngine

    engine = FlowEngine()
    key = store.create_flow(chain("persist"))
    flow = store.get_flow(key)
    engine.tick_flow(flow)
    store.save_flow(flow)
    flow = store.get_flow(key)
    assert flow.tasks["t0"]["status"] == "COMPLETED" and flow.status == "RUNNING"
    engine.run_flow(flow)
    store.save_flow(flow)
    assert store.get_flow(key).status == "COMPLETED"


# -- queries -------------------------------------------------------------------------------------


@pytest.fixture
def populated(store: FlowStore) -> FlowStore:
    """Five flows with known labels, statuses, parents and creation times (100..500)."""
    rows = [
        ("flow:a", "alpha", "PENDING", None, 100.0),
        ("flow:b", "beta", "RUNNING", None, 200.0),
        ("flow:c", "alpha", "COMPLETED", "flow:a", 300.0),
        ("flow:d", "gamma_50%", "FAILED", "flow:a", 400.0),
        ("flow:e", None, "COMPLETED", None, 500.0),
    ]
    for key, label, status, parent, created in rows:
        flow = chain(label or "x")
        store.session.add(
            store.model(
                **flow.to_flow_dict(),
                key=key,
                created_at=created,
                modified_at=created,
            )
        )
        store.session.flush()
        record = store.session.get(store.model, key)
        assert record is not None
        record.label, record.status, record.parent_key = label, status, parent
    store.session.commit()
    return store


def keys(flows: list[TaskFlow]) -> list[str | None]:
    return [f.key for f in flows]


def test_query_by_keywords(populated: FlowStore) -> None:
    q = populated.query_flows
    assert keys(q()) == ["flow:a", "flow:b", "flow:c", "flow:d", "flow:e"]
    assert keys(q(status="COMPLETED")) == ["flow:c", "flow:e"]
    assert keys(q(status=["PENDING", "FAILED"])) == ["flow:a", "flow:d"]
    assert keys(q(label="alpha")) == ["flow:a", "flow:c"]
    assert keys(q(parent_key="flow:a")) == ["flow:c", "flow:d"]
    assert keys(q(created_after=200, created_before=400)) == ["flow:b", "flow:c"]
    assert keys(q(modified_after=450)) == ["flow:e"]
    assert keys(q(modified_before=150)) == ["flow:a"]
    from datetime import UTC, datetime

    assert keys(q(created_after=datetime.fromtimestamp(450, UTC))) == ["flow:e"]
    assert keys(q(label="alpha", status="COMPLETED")) == ["flow:c"]
    assert keys(q(order_by="created_at", descending=True, limit=2)) == ["flow:e", "flow:d"]


def test_query_with_filters(populated: FlowStore) -> None:
    def q(filters: Any) -> list[str | None]:
        return keys(populated.query_flows(filters))

    assert q({"field": "status", "op": "=", "arg": "RUNNING"}) == ["flow:b"]
    assert q({"field": "status", "op": "!=", "arg": "COMPLETED"}) == ["flow:a", "flow:b", "flow:d"]
    assert q({"field": "status", "op": "!IN", "arg": ["COMPLETED", "FAILED"]}) == [
        "flow:a",
        "flow:b",
    ]
    assert q({"field": "label", "op": "CONTAINS", "arg": "50%"}) == ["flow:d"]
    assert q({"field": "label", "op": "CONTAINS", "arg": "a"}) == [
        "flow:a",
        "flow:b",
        "flow:c",
        "flow:d",
    ]
    assert q({"field": "label", "op": "IS NULL"}) == ["flow:e"]
    assert q({"field": "parent_key", "op": "!IS NULL"}) == [
        "flow:c",
        "flow:d",
    ]
    assert q({"field": "created_at", "op": "BETWEEN", "arg": [200, 300]}) == ["flow:b", "flow:c"]
    assert q({"field": "created_at", "op": ">", "arg": 400}) == ["flow:e"]
    assert q(
        {
            "or": [
                {"field": "status", "op": "=", "arg": "FAILED"},
                {
                    "and": [
                        {"field": "label", "arg": "alpha"},
                        {"field": "depth", "op": "<=", "arg": 0},
                    ]
                },
            ]
        }
    ) == ["flow:a", "flow:c", "flow:d"]
    assert q({"not": {"field": "label", "op": "=", "arg": "alpha"}}) == ["flow:b", "flow:d"]
    assert q([{"field": "label", "arg": "alpha"}, {"field": "status", "arg": "PENDING"}]) == [
        "flow:a"
    ]
    assert keys(populated.query_flows({"field": "label", "arg": "alpha"}, status="COMPLETED")) == [
        "flow:c"
    ]


def test_query_with_conjunction_groups_and_spaced_negation(populated: FlowStore) -> None:
    """The reference's filter shapes: groups ``{"conjunction", "filters"}`` that nest, and
    negated ops with a space after the ``!``."""

    def q(filters: Any) -> list[str | None]:
        return keys(populated.query_flows(filters))

    failed_or_alpha_roots = {
        "conjunction": "OR",
        "filters": [
            {"field": "status", "op": "=", "arg": "FAILED"},
            {
                "conjunction": "AND",
                "filters": [
                    {"field": "label", "op": "=", "arg": "alpha"},
                    {"field": "parent_key", "op": "IS NULL"},
                ],
            },
        ],
    }
    assert q(failed_or_alpha_roots) == ["flow:a", "flow:d"]
    assert (
        q(
            {
                "conjunction": "and",
                "filters": [failed_or_alpha_roots, {"field": "depth", "op": ">", "arg": 0}],
            }
        )
        == []
    )
    assert q(
        {
            "conjunction": "AND",
            "filters": [failed_or_alpha_roots, {"field": "depth", "op": "=", "arg": 0}],
        }
    ) == ["flow:a", "flow:d"]
    assert q({"conjunction": "OR", "filters": []}) == []
    assert len(q({"conjunction": "AND", "filters": []})) == 5
    for spelling in ("! IN", "!IN", "!in", "!  IN"):
        assert q({"field": "status", "op": spelling, "arg": ["COMPLETED", "FAILED"]}) == [
            "flow:a",
            "flow:b",
        ], spelling
    assert q({"field": "label", "op": "! =", "arg": "alpha"}) == ["flow:b", "flow:d"]
    assert q({"field": "label", "op": "! IS NULL"}) == ["flow:a", "flow:b", "flow:c", "flow:d"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"filters": {"field": "graph", "arg": 1}}, "cannot filter on 'graph'"),
        ({"filters": {"field": "label", "op": "~", "arg": 1}}, "unknown filter op"),
        ({"filters": {"field": "label", "op": "IN", "arg": "abc"}}, "IN needs a list"),
        ({"filters": {"field": "depth", "op": "BETWEEN", "arg": [1]}}, "BETWEEN needs"),
        ({"filters": {"and": {"field": "label"}}}, "filter group"),
        ({"filters": "status=1"}, "mapping or a list"),
        ({"filters": {"conjunction": "XOR", "filters": []}}, "'conjunction': 'AND' or 'OR'"),
        ({"filters": {"conjunction": "OR", "filters": {"field": "label"}}}, "a filter group is"),
        ({"filters": {"conjunction": "OR", "filters": [], "arg": 1}}, "a filter group is"),
        (
            {"filters": {"field": "label", "arg": "a", "opp": "="}},
            r"unknown filter key\(s\) \['opp'\]",
        ),
        ({"filters": {"not": {"field": "label"}, "arg": 1}}, "a negated filter is"),
        ({"filters": {"field": "label", "op": "!~", "arg": "a"}}, "unknown filter op '!~'"),
        ({"order_by": "graph"}, "cannot order by"),
        ({"limit": "10"}, "limit must be a non-negative integer"),
        ({"created_after": "yesterday"}, "epoch seconds or a datetime"),
        # Each of these reached the database: a BackendError on PostgreSQL, [] or a
        # TypeError elsewhere.
        ({"limit": -1}, "limit must be a non-negative integer"),
        ({"status": 5}, "status must be one or a list of"),
        ({"status": ["DONE"]}, "status must be one or a list of"),
        ({"status": [{"is": "RUNNING"}]}, "status must be one or a list of"),
        ({"label": 5}, "label must be a string"),
        ({"parent_key": ["flow:a"]}, "parent_key must be a string"),
        ({"filters": {"field": "depth", "arg": "x"}}, "'depth' compares with int values"),
        ({"filters": {"field": "label", "arg": 5}}, "'label' compares with str values"),
        ({"filters": {"field": "label", "arg": ["a"]}}, "'label' compares with str values"),
        ({"filters": {"field": "key", "op": "IN", "arg": [{"k": 1}]}}, "compares with str"),
        ({"filters": {"field": "depth", "op": "BETWEEN", "arg": [0, "9"]}}, "compares with int"),
        ({"filters": {"field": "parent_key", "arg": None}}, "use op 'IS NULL'"),
    ],
)
def test_bad_queries_are_rejected(store: FlowStore, kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(EngineError, match=message):
        store.query_flows(**kwargs)


# -- claims --------------------------------------------------------------------------------------


def test_a_claimed_flow_cannot_be_claimed_again(store: FlowStore) -> None:
    key = store.create_flow(chain("c"))
    (claim,) = store.claim_flows(limit=5, lease=30)
    assert claim.key == key and claim.flow.to_flow_dict()["label"] == "c"
    assert store.claim_flows(limit=5) == []
    assert store.claim_flow(key) is None
    store.release_claim(claim)
    again = store.claim_flow(key)
    assert again is not None and again.token != claim.token


def test_finished_flows_are_not_claimed(store: FlowStore) -> None:
    flow = chain("done")
    flow.status = "COMPLETED"
    store.create_flow(flow)
    assert store.claim_flows(limit=5) == []


def test_claims_take_the_least_recently_saved_first(store: FlowStore) -> None:
    first, second = chain("first"), chain("second")
    store.create_flow(first)
    store.create_flow(second)
    store.save_flow(first)  # now "second" waited longer
    (claim,) = store.claim_flows(limit=1)
    assert claim.key == second.key


def test_an_expired_claim_is_taken_over_and_its_saves_refused(store_url: str) -> None:
    clock = FakeClock()
    store = FlowStore(store_url, clock=clock)
    store.ensure_tables()
    key = store.create_flow(chain("lease"))
    stale = store.claim_flow(key, lease=10)
    assert stale is not None and stale.lease_until == clock.time() + 10
    clock.advance(9.9)
    assert store.claim_flow(key, lease=30) is None  # still held
    clock.advance(0.1)
    fresh = store.claim_flow(key, lease=30)
    assert fresh is not None
    stale.flow.data["from"] = "stale"
    with pytest.raises(LeaseLostError, match="another runner took it over"):
        store.save_flow(stale.flow, claim=stale, release=True)
    with pytest.raises(LeaseLostError):
        store.renew_claim(stale)
    store.release_claim(stale)  # a no-op: the fresh claim holds
    assert store.claim_flow(key) is None
    clock.advance(29)
    store.renew_claim(fresh, lease=60)
    assert fresh.lease_until == clock.time() + 60
    clock.advance(59)
    assert store.claim_flow(key) is None  # the renewed lease holds past the first one's end
    fresh.flow.data["from"] = "fresh"
    store.save_flow(fresh.flow, claim=fresh, release=True)
    assert store.get_flow(key).data == {"from": "fresh"}
    assert store.claim_flow(key) is not None  # released
    store.close()


def test_bad_leases_are_rejected(store: FlowStore) -> None:
    for lease in (0, -1, "5", True):
        with pytest.raises(EngineError, match="lease must be a positive number"):
            store.claim_flows(lease=lease)  # type: ignore[arg-type]


def test_competing_claimers_never_share_a_flow(store_url: str, store: FlowStore) -> None:
    n_flows, n_claimers = 40, 4
    for i in range(n_flows):
        store.create_flow(chain(f"f{i}", n=1))
    taken: list[list[str]] = [[] for _ in range(n_claimers)]
    memory = store_url == "sqlite://"  # one in-memory database: share the store

    def claimer(i: int) -> None:
        mine = store if memory else FlowStore(store_url)
        try:
            while claims := mine.claim_flows(limit=3, lease=60):
                taken[i].extend(c.key for c in claims)
        finally:
            if not memory:
                mine.close()

    threads = [threading.Thread(target=claimer, args=(i,)) for i in range(n_claimers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(DEADLINE)
    everything = [k for keys_ in taken for k in keys_]
    assert len(everything) == n_flows
    assert len(set(everything)) == n_flows


# -- the runner ----------------------------------------------------------------------------------


def test_runner_claims_ticks_saves_and_releases(
    store: FlowStore, capsys: pytest.CaptureFixture[str]
) -> None:
    keys_ = [store.create_flow(chain(f"q{i}", task_type="print")) for i in range(3)]
    runner = FlowRunner(store, lease=30)
    assert runner.tick() == {"claimed": 3, "progressed": 3, "COMPLETED": 3}
    lines = capsys.readouterr().out.splitlines()
    assert sorted(lines) == sorted(f"q{i}:{j}" for i in range(3) for j in range(3))
    for key in keys_:
        assert store.get_flow(key).status == "COMPLETED"
    assert runner.tick() == {"claimed": 0, "progressed": 0}
    # Released: nothing is left claimed.
    assert not store.query_flows({"field": "claimed_by", "op": "!IS NULL"})


def test_runner_records_failures(store: FlowStore) -> None:
    bad = TaskFlow.from_flow_spec({"tasks": [{"task_type": "engineflows.raising_handler"}]})
    key = store.create_flow(bad)
    assert FlowRunner(store).tick() == {"claimed": 1, "progressed": 1, "FAILED": 1}
    assert "broke" in store.get_flow(key).errors[0]


@pytest.mark.parametrize("handler", ["unstorable_handler", "nan_handler"])
def test_a_run_that_cannot_be_saved_fails_instead_of_looping(
    store: FlowStore, handler: str
) -> None:
    # nan_handler: PostgreSQL refused the save with a BackendError, which crashed the runner
    # (and every runner that reclaimed the run after it); SQLite stored it.
    key = store.create_flow(
        TaskFlow.from_flow_spec(
            {"tasks": [{"task_type": "noop"}, {"task_type": f"engineflows.{handler}"}]}
        )
    )
    assert FlowRunner(store).tick() == {"claimed": 1, "progressed": 1, "FAILED": 1}
    flow = store.get_flow(key)
    assert flow.status == "FAILED"
    assert "the run could not be saved: cannot store the flow" in flow.errors[0]
    assert store.claim_flows() == []


def test_runner_limits_flows_per_tick_and_run_until_finished(store: FlowStore) -> None:
    for i in range(5):
        store.create_flow(chain(f"r{i}"))
    runner = FlowRunner(store, max_flows_per_tick=2)
    seen: list[dict[str, int]] = []
    runner.run(until_finished=True, interval=0.01, on_tick=seen.append)
    assert [s["claimed"] for s in seen] == [2, 2, 1]
    assert {f.status for f in store.query_flows()} == {"COMPLETED"}


def test_runner_stops_when_asked(store: FlowStore) -> None:
    stop = threading.Event()
    thread = threading.Thread(target=FlowRunner(store).run, args=(stop,), kwargs={"interval": 0.01})
    thread.start()
    key = store.create_flow(chain("late"))
    wait_for(lambda: store.get_flow(key).status == "COMPLETED", "the runner to run the flow")
    stop.set()
    thread.join(DEADLINE)
    assert not thread.is_alive()


def test_the_runner_rides_out_lost_database_connections(pg_url: str) -> None:
    """The database drops every connection of a running runner (as in a server restart): the
    runner logs, retries, and runs a flow created afterwards; it does not die."""
    import psycopg

    app = f"flowplex-runner-{os.getpid()}-{time.monotonic_ns()}"
    runner_store = FlowStore(f"{pg_url}&application_name={app}")
    runner_store.ensure_tables()
    store = FlowStore(pg_url)  # this test's own connections, which the drop spares
    stop = threading.Event()
    thread = threading.Thread(
        target=FlowRunner(runner_store).run, args=(stop,), kwargs={"interval": 0.01}
    )
    thread.start()
    try:
        first = store.create_flow(chain("before"))
        wait_for(lambda: store.get_flow(first).status == "COMPLETED", "the first run")
        base = pg_url.split("?", 1)[0]
        with psycopg.connect(base, autocommit=True) as conn:
            killed = conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE application_name = %s",
                (app,),
            ).fetchall()
        assert killed and all(row[0] for row in killed)
        second = store.create_flow(chain("after"))
        wait_for(lambda: store.get_flow(second).status == "COMPLETED", "the run after the drop")
        assert thread.is_alive()
    finally:
        stop.set()
        thread.join(DEADLINE)
        store.close()
        runner_store.close()
    assert not thread.is_alive()


def test_the_runner_opens_no_client_without_call_tasks(store: FlowStore) -> None:
    # The client factory (the CLI's opens a node and adds a user to it) is for call tasks
    # only; releasing the (no) replies after each save used to call it for every run.
    from flowplex.engine import FlowEngine

    def no_client() -> Any:
        raise AssertionError("the client factory was called")

    store.create_flow(chain("plain"))
    runner = FlowRunner(store, FlowEngine(store=store, client=no_client))
    assert runner.tick() == {"claimed": 1, "progressed": 1, "COMPLETED": 1}


def test_runner_rejects_bad_settings(store: FlowStore) -> None:
    with pytest.raises(EngineError, match="lease"):
        FlowRunner(store, lease=0)
    with pytest.raises(EngineError, match="at least 1"):
        FlowRunner(store, max_flows_per_tick=0)
    # These failed only once a flow was ticked, crashing the runner mid-round.
    with pytest.raises(EngineError, match="ctx must be a mapping"):
        FlowRunner(store, ctx=[("who", "me")])  # type: ignore[arg-type]
    with pytest.raises(EngineError, match="engine must be a FlowEngine"):
        FlowRunner(store, engine="default")  # type: ignore[arg-type]
    with pytest.raises(EngineError, match="needs a FlowStore"):
        FlowRunner(store.url)  # type: ignore[arg-type]


def test_nested_flow_task_runs_a_persisted_child(
    store: FlowStore, capsys: pytest.CaptureFixture[str]
) -> None:
    child_spec = {
        "label": "child",
        "tasks": [
            {
                "task_type": "wire",
                "task_params": {"wirings": [{"value": 42, "dest": "ctx.flow.data.result"}]},
            }
        ],
    }
    parent = TaskFlow.from_flow_spec(
        {
            "label": "parent",
            "tasks": [
                {"key": "p1", "task_type": "flow", "task_params": {"flow_spec": child_spec}},
                {
                    "key": "p2",
                    "task_type": "print",
                    "task_params": {"msg": "$ctx.flow.tasks.p1.data.flow_data.result"},
                },
            ],
        }
    )
    parent_key = store.create_flow(parent)
    runner = FlowRunner(store)
    assert runner.tick()["RUNNING"] == 1
    assert store.get_flow(parent_key).status == "RUNNING"
    (child,) = store.query_flows(parent_key=parent_key)
    assert (child.status, child.depth, child.label) == ("PENDING", 1, "child")
    runner.run(until_finished=True, interval=0.01)
    assert store.get_flow(parent_key).status == "COMPLETED"
    assert store.get_flow(child.key or "").data["result"] == 42
    assert capsys.readouterr().out == "42\n"


def test_a_reticked_flow_task_reuses_its_child(store: FlowStore) -> None:
    # A runner that died after creating the child but before saving the parent: the next
    # runner ticks the parent's first tick again and must not make a second child.
    from flowplex.engine import FlowEngine

    parent = TaskFlow.from_flow_spec(
        {"tasks": [{"key": "p1", "task_type": "flow", "task_params": {"flow_spec": {}}}]}
    )
    key = store.create_flow(parent)
    engine = FlowEngine(store=store)
    first, second = store.get_flow(key), store.get_flow(key)
    engine.tick_flow(first)
    engine.tick_flow(second)
    assert first.tasks["p1"]["data"] == second.tasks["p1"]["data"]
    assert len(store.query_flows(parent_key=key)) == 1


def test_a_failed_child_fails_the_flow_task(store: FlowStore) -> None:
    child_spec = {"tasks": [{"task_type": "engineflows.raising_handler"}]}
    key = store.create_flow(
        TaskFlow.from_flow_spec(
            {
                "tasks": [
                    {"key": "p1", "task_type": "flow", "task_params": {"flow_spec": child_spec}}
                ]
            }
        )
    )
    FlowRunner(store).run(until_finished=True, interval=0.01)
    parent = store.get_flow(key)
    assert parent.status == "FAILED"
    assert "the child flow None failed" in parent.tasks["p1"]["error"]


# -- a runner process killed mid-tick ------------------------------------------------------------


@pytest.fixture(params=["sqlite", "postgres"])
def shared_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/shared.db"
    url: str = request.getfixturevalue("pg_url")
    return url


def test_a_killed_runner_loses_its_claim_and_the_flow_still_completes(
    shared_url: str, tmp_path: Path
) -> None:
    started, release = tmp_path / "started", tmp_path / "release"
    store = FlowStore(shared_url)
    store.ensure_tables()
    key = store.create_flow(
        TaskFlow.from_flow_spec(
            {
                "label": "crash",
                "tasks": [
                    {"key": "before", "task_type": "noop"},
                    {
                        "key": "block",
                        "task_type": "python",
                        "task_params": {
                            "fn": "engineflows.block_until_file",
                            "args": [str(started), str(release)],
                        },
                    },
                ],
            }
        )
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS_DIR), *sys.path])}
    with (tmp_path / "runner.log").open("w") as log:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "flowplex",
                "runner",
                "--db",
                shared_url,
                "--lease",
                "3",
                "--interval",
                "0.05",
            ],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_for(started.exists, "the runner process to start the blocking task")
            proc.send_signal(signal.SIGKILL)
            proc.wait(DEADLINE)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(DEADLINE)
    assert proc.returncode == -signal.SIGKILL
    # The dead runner still holds the claim and saved nothing of the tick it died in.
    (row,) = store.query_flows({"field": "claimed_by", "op": "!IS NULL"})
    assert row.key == key and row.tasks["block"]["status"] == "PENDING"
    runner = FlowRunner(store, lease=30)
    assert runner.tick()["claimed"] == 0  # the lease has not run out yet
    release.write_text("go")
    wait_for(lambda: runner.tick()["claimed"], "the dead runner's lease to expire")
    flow = store.get_flow(key)
    assert flow.status == "COMPLETED"
    assert flow.tasks["block"]["data"] == {"result": "released"}
    store.close()


# -- configuration and failures ------------------------------------------------------------------


@pytest.mark.parametrize("url", ["", "flows.db", "mysql://x/y", "sqlite:///"])
def test_bad_urls_are_refused(url: str) -> None:
    with pytest.raises(ConfigurationError):
        FlowStore(url)


def test_an_unreachable_database_is_a_backend_error() -> None:
    store = FlowStore("postgresql://postgres@127.0.0.1:1/nothing")
    with pytest.raises(BackendError, match=r"127\.0\.0\.1:1"):
        store.ensure_tables()
    with pytest.raises(BackendError, match="flow store"):
        store.get_flow("flow:x")


def test_file_store_is_migrated_with_the_node_schema(tmp_path: Path) -> None:
    from flowplex.db.migrate import HEAD, VERSION_QUERY

    url = f"sqlite:///{tmp_path}/node.db"
    store = FlowStore(url)
    store.ensure_tables()
    store.ensure_tables()  # idempotent
    import sqlite3

    with sqlite3.connect(tmp_path / "node.db") as conn:
        assert conn.execute(VERSION_QUERY).fetchone()[0] == HEAD
        assert conn.execute("SELECT count(*) FROM engine_flows").fetchone()[0] == 0
    store.close()


def test_spread_into_persisted_child_runs(
    store: FlowStore, capsys: pytest.CaptureFixture[str]
) -> None:
    key = store.create_flow(
        TaskFlow.from_flow_spec(
            {
                "tasks": [
                    {
                        "key": "spread",
                        "task_type": "spread",
                        "task_params": {
                            "items": ["a", "b"],
                            "container_task_type": "flow",
                            "mapping_params": {
                                "skeleton": {"task_type": "print", "task_params": {"msg": None}},
                                "wirings": ["ctx.item.value => ctx.skeleton.task_params.msg"],
                            },
                        },
                    }
                ]
            }
        )
    )
    FlowRunner(store).run(until_finished=True, interval=0.01)
    assert store.get_flow(key).status == "COMPLETED"
    (child,) = store.query_flows(parent_key=key)
    assert child.label == "spread:spread" and child.status == "COMPLETED"
    assert capsys.readouterr().out == "a\nb\n"


def test_the_runner_renews_its_lease_on_a_long_run(tmp_path: Path) -> None:
    # Eight ticks of 0.4 s (on a fake clock) under a 1 s lease; after each, a competitor tries
    # to claim the flow: without renewal it would have it from the third tick on.
    url = f"sqlite:///{tmp_path}/renew.db"
    clock = FakeClock()
    store, competitor = FlowStore(url, clock=clock), FlowStore(url, clock=clock)
    store.ensure_tables()
    stolen: list[object] = []
    name = uuid.uuid4().hex
    key = store.create_flow(
        TaskFlow.from_flow_spec(
            {
                "tasks": [
                    {
                        "task_type": "python",
                        "task_params": {"fn": "engineflows.pass_time", "args": [name, 0.4]},
                    }
                    for _ in range(8)
                ]
            }
        )
    )
    engineflows.CLOCKS[name] = (clock, lambda: stolen.append(competitor.claim_flow(key, lease=30)))
    runner = FlowRunner(store, lease=1.0)
    (claim,) = store.claim_flows(lease=1.0)
    try:
        runner.run_claim(claim)
    finally:
        del engineflows.CLOCKS[name]
    assert stolen == [None] * 8
    assert clock.monotonic() == pytest.approx(3.2)
    assert store.get_flow(key).status == "COMPLETED"
    store.close()
    competitor.close()


def test_migration_0002_upgrades_and_downgrades(tmp_path: Path) -> None:
    import sqlite3

    from alembic import command

    from flowplex.db.migrate import alembic_config, locked_connection

    url = f"sqlite:///{tmp_path}/steps.db"

    def tables() -> set[str]:
        with sqlite3.connect(tmp_path / "steps.db") as conn:
            rows = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
            return {name for (name,) in rows}

    for target, step in (("0002", command.upgrade), ("0001", command.downgrade)):
        with locked_connection(url) as connection:
            config = alembic_config(url)
            config.attributes["connection"] = connection
            step(config, target)
        assert ("engine_flows" in tables()) == (target == "0002")
    assert "messages" in tables()  # 0001's tables stay
