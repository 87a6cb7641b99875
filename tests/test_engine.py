"""The task-graph engine (seed 003): specs, serialization, tick semantics, task types.

``test_seed_003_*`` run the seed's examples and compare with its expected output verbatim. The
other tests pin down each semantic of issue 4, including where the engine deliberately differs
from MissionControl (AND-joins, failures always seen, no flow left RUNNING that cannot
progress).
"""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest

import flowplex.engine
from flowplex import FlowDefinitionError, FlowplexError
from flowplex.engine import (
    EngineError,
    FlowEngine,
    FlowFailedError,
    FlowSpecError,
    FlowStore,
    MaxTicksError,
    TaskFlow,
)

TWO_PRINTS = {
    "label": "example_flow",
    "tasks": [
        {"key": "task_1", "task_type": "print", "task_params": {"msg": "I am task_1."}},
        {"key": "task_2", "task_type": "print", "task_params": {"msg": "I am task_2."}},
    ],
}

# Verbatim from seed 003 ("Serializing And Deserializing Flows"), minus the rst indentation.
SEED_JSONIFIED = """jsonified flow:
 {
  "cfg": {
    "fail_fast": true
  },
  "data": {},
  "depth": 0,
  "graph": {
    "edges": [
      {
        "dest_key": "task_1",
        "src_key": "ROOT"
      },
      {
        "dest_key": "task_2",
        "src_key": "task_1"
      }
    ],
    "tasks": {
      "ROOT": {
        "key": "ROOT",
        "status": "COMPLETED"
      },
      "task_1": {
        "key": "task_1",
        "precursors": [
          "ROOT"
        ],
        "status": "PENDING",
        "task_params": {
          "msg": "I am task_1."
        },
        "task_type": "print"
      },
      "task_2": {
        "key": "task_2",
        "precursors": [
          "task_1"
        ],
        "status": "PENDING",
        "task_params": {
          "msg": "I am task_2."
        },
        "task_type": "print"
      }
    }
  },
  "label": "example_flow",
  "num_tickable_tasks": 1,
  "parent_key": null,
  "status": "PENDING"
}
"""


def spec(*tasks: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"label": "test_flow", "tasks": list(tasks), **extra}


def statuses(flow: TaskFlow) -> dict[str, str]:
    return {key: task["status"] for key, task in flow.tasks.items() if key != "ROOT"}


# -- seed 003 ------------------------------------------------------------------------------------


def test_seed_003_running_flows(capsys: pytest.CaptureFixture[str]) -> None:
    my_flow_engine = FlowEngine()
    flow = my_flow_engine.flow_spec_to_flow(TWO_PRINTS)
    my_flow_engine.tick_flow_until_has_no_pending(flow)
    print("flow.status:", flow.status)
    assert capsys.readouterr().out == "I am task_1.\nI am task_2.\nflow.status: COMPLETED\n"


def test_seed_003_lifecycle_loop(capsys: pytest.CaptureFixture[str]) -> None:
    engine = FlowEngine()
    flow = engine.flow_spec_to_flow(TWO_PRINTS)
    while flow.status not in {"FAILED", "COMPLETED"}:
        engine.tick_flow(flow)
    assert capsys.readouterr().out == "I am task_1.\nI am task_2.\n"
    assert flow.status == "COMPLETED"


def test_seed_003_serialization_and_deserialization(capsys: pytest.CaptureFixture[str]) -> None:
    flow = TaskFlow.from_flow_spec(TWO_PRINTS)
    flow_dict = flow.to_flow_dict()
    jsonified_flow = json.dumps(flow_dict, indent=2, sort_keys=True)
    print("jsonified flow:\n", jsonified_flow)
    assert capsys.readouterr().out == SEED_JSONIFIED

    flow_dict = json.loads(jsonified_flow)
    flow = TaskFlow.from_flow_dict(flow_dict)
    print(type(flow))
    assert capsys.readouterr().out == "<class 'flowplex.engine.TaskFlow'>\n"
    assert flow.to_flow_dict() == flow_dict


# -- specs ---------------------------------------------------------------------------------------


def test_spec_defaults() -> None:
    flow = TaskFlow.from_flow_spec({"tasks": [{"task_type": "noop"}]})
    assert (flow.label, flow.key, flow.cfg, flow.data) == (None, None, {"fail_fast": True}, {})
    assert (flow.status, flow.depth, flow.parent_key) == ("PENDING", 0, None)
    (task,) = flow.iter_tasks()
    assert len(task["key"]) == 36 and task["status"] == "PENDING"  # a uuid4 string
    assert task["precursors"] == ["ROOT"]


def test_spec_keeps_label_key_cfg_data_and_is_copied() -> None:
    original = spec({"key": "a", "task_type": "noop"}, key="k-1", cfg={"fail_fast": False})
    original["data"] = {"x": [1]}
    flow = TaskFlow.from_flow_spec(original)
    assert (flow.key, flow.cfg, flow.data) == ("k-1", {"fail_fast": False}, {"x": [1]})
    flow.data["x"].append(2)
    flow.tasks["a"]["task_type"] = "changed"
    assert original["data"] == {"x": [1]} and original["tasks"][0]["task_type"] == "noop"


def test_default_precursors_chain_tasks() -> None:
    flow = TaskFlow.from_flow_spec(
        spec(*({"key": f"t{i}", "task_type": "noop"} for i in (1, 2, 3)))
    )
    assert flow.edges == [("ROOT", "t1"), ("t1", "t2"), ("t2", "t3")]
    assert flow.num_tickable_tasks == 1


def test_parallel_tasks_all_tick_at_once() -> None:
    tasks = [{"key": f"t{i}", "task_type": "noop", "precursors": ["ROOT"]} for i in (1, 2, 3)]
    flow = TaskFlow.from_flow_spec(spec(*tasks))
    assert flow.num_tickable_tasks == 3
    FlowEngine().tick_flow(flow)
    assert flow.status == "COMPLETED"


def test_precursor_may_name_a_later_task() -> None:
    flow = TaskFlow.from_flow_spec(
        spec(
            {"key": "b", "task_type": "noop", "precursors": ["a"]},
            {"key": "a", "task_type": "noop", "precursors": ["ROOT"]},
        )
    )
    FlowEngine().run_flow(flow)
    assert statuses(flow) == {"a": "COMPLETED", "b": "COMPLETED"}


def _graph(flow: TaskFlow) -> tuple[set[tuple[str, str]], dict[str, set[str]]]:
    return set(flow.edges), {k: set(t["precursors"]) for k, t in flow.tasks.items() if k != "ROOT"}


def test_successors_and_precursors_make_the_same_graph() -> None:
    by_precursors = TaskFlow.from_flow_spec(
        spec(
            {"key": "a", "task_type": "noop"},
            {"key": "b", "task_type": "noop", "precursors": ["a"]},
            {"key": "c", "task_type": "noop", "precursors": ["a"]},
            {"key": "d", "task_type": "noop", "precursors": ["b", "c"]},
        )
    )
    by_successors = TaskFlow.from_flow_spec(
        spec(
            {"key": "a", "task_type": "noop", "successors": ["b", "c"]},
            {"key": "b", "task_type": "noop", "successors": ["d"]},
            {"key": "c", "task_type": "noop", "successors": "d"},
            {"key": "d", "task_type": "noop"},
        )
    )
    mixed = TaskFlow.from_flow_spec(
        spec(
            {"key": "d", "task_type": "noop", "precursors": ["b"]},
            {"key": "c", "task_type": "noop", "precursors": ["a"], "successors": ["d"]},
            {"key": "b", "task_type": "noop", "precursors": ["a"]},
            {"key": "a", "task_type": "noop", "precursors": ["ROOT"]},
        )
    )
    expected = {("ROOT", "a"), ("a", "b"), ("a", "c"), ("b", "d"), ("c", "d")}
    assert _graph(by_precursors)[0] == expected
    assert _graph(by_successors) == _graph(by_precursors) == _graph(mixed)
    # The graph survives serialization.
    assert _graph(TaskFlow.from_flow_dict(by_successors.to_flow_dict())) == _graph(by_precursors)


def test_successors_set_the_order_tasks_run_in(capsys: pytest.CaptureFixture[str]) -> None:
    # Listed last-first, linked first-to-last by successors: they must print a, b, c.
    flow = TaskFlow.from_flow_spec(
        spec(
            {"key": "c", "task_type": "print", "task_params": {"msg": "c"}},
            {"key": "b", "task_type": "print", "task_params": {"msg": "b"}, "successors": ["c"]},
            {"key": "a", "task_type": "print", "task_params": {"msg": "a"}, "successors": ["b"]},
        )
    )
    FlowEngine().run_flow(flow)
    assert capsys.readouterr().out == "a\nb\nc\n"


def test_unknown_task_spec_keys_are_refused_naming_them() -> None:
    with pytest.raises(FlowSpecError) as info:
        TaskFlow.from_flow_spec(spec({"key": "t", "task_type": "noop", "precursor": ["ROOT"]}))
    message = str(info.value)
    assert "task 't': unknown key(s) ['precursor']" in message
    for accepted in ("precursors", "successors", "task_params", "task_type", "status", "data"):
        assert repr(accepted) in message


@pytest.mark.parametrize(
    ("bad_spec", "message"),
    [
        (spec({"key": "a", "task_type": "noop", "precursors": ["nope"]}), "precursor 'nope'"),
        (
            spec(
                {"key": "a", "task_type": "noop", "precursors": ["b"]},
                {"key": "b", "task_type": "noop", "precursors": ["a"]},
            ),
            "cycle",
        ),
        (spec({"key": "a", "task_type": "noop", "precursors": ["a"]}), "its own precursor"),
        (spec({"key": "a", "task_type": "noop"}, {"key": "a", "task_type": "noop"}), "duplicate"),
        (spec({"key": "ROOT", "task_type": "noop"}), "reserved"),
        (spec({"key": "a"}), "task_type"),
        (spec({"key": "a", "task_type": "noop", "task_params": [1]}), "task_params"),
        (spec({"key": "a", "task_type": "noop", "precursors": [1]}), "precursors"),
        (spec({"key": "a", "task_type": "noop", "successors": ["nope"]}), "successor 'nope'"),
        (spec({"key": "a", "task_type": "noop", "successors": ["a"]}), "its own successor"),
        (spec({"key": "a", "task_type": "noop", "successors": ["ROOT"]}), "cannot be a successor"),
        (spec({"key": "a", "task_type": "noop", "successors": {"b": 1}}), "'successors' must be"),
        (
            spec(
                {"key": "a", "task_type": "noop", "successors": ["b"]},
                {"key": "b", "task_type": "noop", "successors": ["b2"]},
                {"key": "b2", "task_type": "noop", "successors": ["a"]},
            ),
            "cycle",
        ),
        (
            spec(
                {"key": "a", "task_type": "noop", "successors": ["b", "b"]},
                {"key": "b", "task_type": "noop"},
            ),
            "lists a task twice",
        ),
        (spec({"key": "a", "task_type": "noop", "status": "DONE"}), "status"),
        (spec("not a task"), "task #0"),
        (spec(tasks=None) | {"tasks": "abc"}, "'tasks' must be a list"),
        ({"label": "x", "taks": []}, "unknown flow spec key"),
        ({"label": "x", "cfg": {"fail_fast": "yes"}}, "fail_fast"),
        ([1, 2], "mapping"),
    ],
)
def test_bad_specs_are_rejected_when_read(bad_spec: Any, message: str) -> None:
    with pytest.raises(FlowSpecError, match=message) as info:
        FlowEngine().flow_spec_to_flow(bad_spec)
    assert isinstance(info.value, FlowDefinitionError)
    assert isinstance(info.value, FlowplexError)


# -- serialization -------------------------------------------------------------------------------


def test_flow_dict_round_trips_after_running() -> None:
    flow = TaskFlow.from_flow_spec(
        spec({"key": "a", "task_type": "python", "task_params": {"fn": "engineflows.add"}})
        | {"key": "flow:abc"}
    )
    flow.tasks["a"]["task_params"]["kwargs"] = {"a": 1, "b": 2}
    FlowEngine().run_flow(flow)
    d = json.loads(json.dumps(flow.to_flow_dict()))
    assert d["key"] == "flow:abc" and d["data"]["_tick_counter"] == 1
    assert d["graph"]["tasks"]["a"]["data"] == {"result": 3}
    assert TaskFlow.from_flow_dict(d).to_flow_dict() == d


def test_from_flow_dict_ignores_unknown_keys_and_adds_root() -> None:
    d = TaskFlow.from_flow_spec(TWO_PRINTS).to_flow_dict()
    del d["graph"]["tasks"]["ROOT"]
    d.update(created_at=1.0, claimed_by=None, whatever="x")
    flow = TaskFlow.from_flow_dict(d)
    assert flow.tasks["ROOT"] == {"key": "ROOT", "status": "COMPLETED"}
    assert "whatever" not in flow.to_flow_dict()


def test_from_flow_dict_copies_its_input() -> None:
    d = TaskFlow.from_flow_spec(TWO_PRINTS).to_flow_dict()
    flow = TaskFlow.from_flow_dict(d)
    flow.tasks["task_1"]["status"] = "COMPLETED"
    assert d["graph"]["tasks"]["task_1"]["status"] == "PENDING"


def test_from_flow_dict_rejects_a_broken_graph() -> None:
    d = TaskFlow.from_flow_spec(TWO_PRINTS).to_flow_dict()
    d["graph"]["tasks"]["task_1"]["precursors"] = ["task_2"]
    with pytest.raises(FlowSpecError, match="cycle"):
        TaskFlow.from_flow_dict(d)
    with pytest.raises(FlowSpecError, match="status"):
        TaskFlow.from_flow_dict({"status": "SLEEPING"})


def _dict_with(**changes: Any) -> dict[str, Any]:
    """The two-print flow dict with top-level ``changes``; ``graph`` maps dot paths in it."""
    d = TaskFlow.from_flow_spec(TWO_PRINTS).to_flow_dict()
    graph_changes = changes.pop("graph", {})
    d.update(changes)
    for path, value in graph_changes.items():
        *parents, last = path.split(".")
        target = d["graph"]
        for part in parents:
            target = target[part]
        target[last] = value
    return d


@pytest.mark.parametrize(
    ("flow_dict", "message"),
    [
        (_dict_with(graph={"tasks.task_1.precursors": 5}), "'precursors' must be a list"),
        (_dict_with(graph={"tasks.task_1.precursors": [1]}), "'precursors' must be a list"),
        (_dict_with(graph={"edges": 5}), "'graph.edges' must be a list"),
        (_dict_with(graph={"edges": [1]}), "an edge is"),
        (_dict_with(graph={"edges": [{"src_key": "ROOT"}]}), "an edge is"),
        (_dict_with(graph={"tasks.ROOT.status": "PENDING"}), "ROOT task must be COMPLETED"),
        (_dict_with(depth="1"), "'depth' must be a non-negative integer"),
        (_dict_with(label=5), "'label' must be a string"),
        (_dict_with(parent_key=["flow:x"]), "'parent_key' must be a string"),
    ],
)
def test_from_flow_dict_rejects_malformed_dicts(flow_dict: dict[str, Any], message: str) -> None:
    # MissionControl-era rows or hand-edited JSON: a clear FlowSpecError, not a TypeError.
    with pytest.raises(FlowSpecError, match=message):
        TaskFlow.from_flow_dict(flow_dict)


def test_precursors_come_from_edges_when_a_task_lacks_them() -> None:
    d = TaskFlow.from_flow_spec(TWO_PRINTS).to_flow_dict()
    del d["graph"]["tasks"]["task_2"]["precursors"]
    assert TaskFlow.from_flow_dict(d).tasks["task_2"]["precursors"] == ["task_1"]


# -- tick semantics ------------------------------------------------------------------------------


def test_a_chain_advances_one_task_per_tick() -> None:
    engine = FlowEngine()
    flow = engine.flow_spec_to_flow(TWO_PRINTS)
    engine.tick_flow(flow)
    assert flow.status == "RUNNING" and flow.data["_tick_counter"] == 1
    assert statuses(flow) == {"task_1": "COMPLETED", "task_2": "PENDING"}
    engine.tick_flow(flow)
    assert flow.status == "COMPLETED" and flow.data["_tick_counter"] == 2


def test_a_flow_without_tasks_completes() -> None:
    engine = FlowEngine()
    flow = engine.flow_spec_to_flow({"label": "empty"})
    engine.tick_flow_until_has_no_pending(flow)
    assert flow.status == "COMPLETED"


def test_a_finished_flow_is_not_ticked_again() -> None:
    engine = FlowEngine()
    flow = engine.run_flow(engine.flow_spec_to_flow(TWO_PRINTS))
    engine.tick_flow(flow)
    assert flow.data["_tick_counter"] == 2


def test_a_join_waits_for_all_its_precursors() -> None:
    # b takes three ticks; c (after a and b) must not start while b is still RUNNING.
    engine = FlowEngine()
    flow = engine.flow_spec_to_flow(
        spec(
            {"key": "a", "task_type": "noop", "precursors": ["ROOT"]},
            {
                "key": "b",
                "task_type": "engineflows.MyCustomTask",
                "task_params": {"steps": 3},
                "precursors": ["ROOT"],
            },
            {"key": "c", "task_type": "noop", "precursors": ["a", "b"]},
        )
    )
    engine.tick_flow(flow)
    engine.tick_flow(flow)
    assert statuses(flow) == {"a": "COMPLETED", "b": "RUNNING", "c": "PENDING"}
    assert flow.num_tickable_tasks == 1
    engine.tick_flow(flow)
    assert statuses(flow) == {"a": "COMPLETED", "b": "COMPLETED", "c": "PENDING"}
    engine.tick_flow(flow)
    assert flow.status == "COMPLETED"


def test_fail_fast_fails_the_flow_at_the_first_failure() -> None:
    engine = FlowEngine()
    flow = engine.flow_spec_to_flow(
        spec(
            {"key": "boom", "task_type": "engineflows.raising_handler"},
            {"key": "after", "task_type": "print", "task_params": {"msg": "never"}},
        )
    )
    engine.tick_flow(flow)
    assert flow.status == "FAILED"
    assert statuses(flow) == {"boom": "FAILED", "after": "PENDING"}
    assert flow.tasks["boom"]["error"] == "RuntimeError: handler of boom broke"
    assert "Traceback" in flow.tasks["boom"]["traceback"]
    assert flow.data["errors"] == [
        "task 'boom' (engineflows.raising_handler): RuntimeError: handler of boom broke"
    ]
    with pytest.raises(FlowFailedError, match="handler of boom broke") as info:
        engine.run_flow(
            engine.flow_spec_to_flow(
                spec({"key": "boom", "task_type": "engineflows.raising_handler"})
            )
        )
    assert len(info.value.errors) == 1


def test_without_fail_fast_branches_finish_then_the_flow_fails() -> None:
    engine = FlowEngine()
    flow = engine.flow_spec_to_flow(
        spec(
            {"key": "boom", "task_type": "engineflows.raising_handler", "precursors": ["ROOT"]},
            {"key": "after_boom", "task_type": "noop", "precursors": ["boom"]},
            {"key": "ok", "task_type": "noop", "precursors": ["ROOT"]},
            {"key": "ok2", "task_type": "noop", "precursors": ["ok"]},
            cfg={"fail_fast": False},
        )
    )
    ticks = 0
    while not flow.finished:
        engine.tick_flow(flow)
        ticks += 1
        # The bug this fixes: MissionControl stayed RUNNING with nothing left to tick.
        assert not (flow.status == "RUNNING" and flow.num_tickable_tasks == 0)
    assert ticks == 2
    assert flow.status == "FAILED"
    assert statuses(flow) == {
        "boom": "FAILED",
        "after_boom": "PENDING",
        "ok": "COMPLETED",
        "ok2": "COMPLETED",
    }
    assert len(flow.errors) == 1


def test_a_handler_that_fails_its_task_is_seen_by_the_engine() -> None:
    # MissionControl's handlers swallowed such failures: a last task failing left the flow
    # COMPLETED, with no error recorded.
    engine = FlowEngine()
    flow = engine.flow_spec_to_flow(
        spec({"key": "last", "task_type": "engineflows.failing_handler"}, cfg={"fail_fast": False})
    )
    engine.tick_flow_until_has_no_pending(flow)
    assert flow.status == "FAILED"
    assert flow.errors == ["task 'last' (engineflows.failing_handler): refused politely"]


def test_unknown_task_type_fails_task_and_flow() -> None:
    engine = FlowEngine()
    flow = engine.flow_spec_to_flow(spec({"key": "x", "task_type": "nonesuch"}))
    engine.tick_flow(flow)
    assert flow.status == "FAILED"
    assert "unknown task_type 'nonesuch'" in flow.tasks["x"]["error"]
    flow = engine.flow_spec_to_flow(spec({"key": "x", "task_type": "no_such_module.handler"}))
    engine.tick_flow(flow)
    assert "no_such_module" in flow.tasks["x"]["error"]


HANDLER_MODULE = """
from flowplex.engine import BaseTaskHandler


class {name}(BaseTaskHandler):
    def initial_tick(self, ctx):
        ctx.data["ran"] = "{name}"
        ctx.complete()


TaskHandler = {name}
"""


def _write_module(root: Any, dotted: str, name: str) -> None:
    *packages, module = dotted.split(".")
    folder = root
    for package in packages:
        folder = folder / package
        folder.mkdir(exist_ok=True)
        (folder / "__init__.py").touch()
    (folder / f"{module}.py").write_text(HANDLER_MODULE.format(name=name))


def _ran(engine: FlowEngine, task_type: str) -> Any:
    flow = engine.flow_spec_to_flow(spec({"key": "t", "task_type": task_type}))
    engine.run_flow(flow, max_ticks=3)
    return flow.tasks["t"]["data"]["ran"]


def test_handlers_found_by_naming_convention(tmp_path: Any, monkeypatch: Any) -> None:
    # "name" is name_task_handler:TaskHandler; "pkg.tasks.x" is
    # pkg.task_handlers.x_task_handler:TaskHandler, as specs written for the reference name them.
    _write_module(tmp_path, "convention_probe_task_handler", "Probe")
    _write_module(tmp_path, "conv_pkg.task_handlers.greet_task_handler", "Greet")
    monkeypatch.syspath_prepend(str(tmp_path))
    engine = FlowEngine()
    assert _ran(engine, "convention_probe_task") == "Probe"
    assert _ran(engine, "convention_probe") == "Probe"
    assert _ran(engine, "convention_probe_task_handler:TaskHandler") == "Probe"
    assert _ran(engine, "conv_pkg.tasks.greet") == "Greet"
    # A dotted path that resolves as it is wins over the convention.
    assert _ran(engine, "conv_pkg.task_handlers.greet_task_handler.Greet") == "Greet"
    flow = engine.flow_spec_to_flow(spec({"key": "t", "task_type": "conv_pkg.tasks.nothing"}))
    engine.tick_flow(flow)
    error = flow.tasks["t"]["error"]
    assert "unknown task_type 'conv_pkg.tasks.nothing'" in error
    assert "no module 'conv_pkg.task_handlers.nothing_task_handler'" in error


def test_module_colon_attribute_works_with_a_top_level_module() -> None:
    engine = FlowEngine()
    flow = engine.flow_spec_to_flow(
        spec({"key": "c", "task_type": "engineflows:MyCustomTask", "task_params": {"steps": 2}})
    )
    engine.run_flow(flow)
    assert flow.tasks["c"]["data"]["log"] == ["initial", "intermediate", "completed"]
    flow = engine.flow_spec_to_flow(spec({"key": "c", "task_type": "engineflows:Nothing"}))
    engine.tick_flow(flow)
    assert "module 'engineflows' has no 'Nothing'" in flow.tasks["c"]["error"]


def test_a_class_that_is_not_a_task_handler_is_a_clear_error() -> None:
    engine = FlowEngine()
    flow = engine.flow_spec_to_flow(spec({"key": "c", "task_type": "json:JSONDecoder"}))
    engine.tick_flow(flow)
    assert "not a subclass of flowplex.engine.BaseTaskHandler" in flow.tasks["c"]["error"]


def test_reference_module_names_of_builtin_types_are_aliases(
    capsys: pytest.CaptureFixture[str],
) -> None:
    engine = FlowEngine()
    child = {"tasks": [{"task_type": "print", "task_params": {"msg": "inside"}}]}
    flow = engine.flow_spec_to_flow(
        spec({"task_type": "mc.tasks.inline_flow", "task_params": {"flow_spec": child}})
    )
    engine.run_flow(flow)
    assert capsys.readouterr().out == "inside\n"
    flow = engine.flow_spec_to_flow(
        spec({"key": "f", "task_type": "mc.tasks.flow", "task_params": {"flow_spec": child}})
    )
    engine.tick_flow(flow)
    assert "a 'flow' task needs a store" in flow.tasks["f"]["error"]

    def nested(ctx: flowplex.engine.TaskContext) -> None:
        ctx.data["ran"] = "override"
        ctx.complete()

    # An alias follows an override of the type it names.
    assert _ran(FlowEngine(handlers={"flow": nested}), "mc.tasks.flow") == "override"


def test_the_migration_page_example_runs(
    tmp_path: Any, monkeypatch: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    from docsnippets import python_blocks

    before, after = python_blocks("From MissionControl")
    assert "from mc." in before
    # The handler class the example defines lives in fetch_task_handler.py.
    handler_module, _, _ = after.partition("\nspec = ")
    (tmp_path / "fetch_task_handler.py").write_text(handler_module)
    monkeypatch.syspath_prepend(str(tmp_path))
    url = f"sqlite:///{tmp_path}/flows.db"
    with FlowStore(url) as earlier:
        earlier.ensure_tables()
        for label in ("report", "other"):
            earlier.create_flow(TaskFlow.from_flow_spec({"label": label, "tasks": []}))
    namespace: dict[str, Any] = {}
    exec(after.replace("sqlite:///flows.db", url), namespace)  # the page's own code
    namespace["store"].close()
    assert capsys.readouterr().out == "42\n"
    assert namespace["flow"].status == "COMPLETED"
    assert [f.label for f in namespace["found"]] == ["other"]


def test_a_handler_setting_a_bogus_status_fails_the_task() -> None:
    def bogus(ctx: flowplex.engine.TaskContext) -> None:
        ctx.task["status"] = "DONE"

    engine = FlowEngine(handlers={"bogus": bogus})
    flow = engine.flow_spec_to_flow(spec({"key": "x", "task_type": "bogus"}))
    engine.tick_flow(flow)
    assert flow.status == "FAILED" and "invalid status 'DONE'" in flow.errors[0]


def test_tick_methods_reject_what_they_cannot_tick() -> None:
    engine = FlowEngine()
    flow = engine.flow_spec_to_flow(TWO_PRINTS)
    calls: list[Any] = [
        (lambda: engine.tick_flow(TWO_PRINTS), "expected a TaskFlow"),  # type: ignore[arg-type]
        (lambda: engine.run_flow(None), "expected a TaskFlow"),  # type: ignore[arg-type]
        (lambda: engine.tick_flow(flow, ctx=[1]), "ctx must be a mapping"),  # type: ignore[arg-type]
        (lambda: engine.run_flow(flow, max_ticks=0), "max_ticks must be a positive"),
        (
            lambda: engine.tick_flow_until_has_no_pending(flow, max_ticks="9"),  # type: ignore[arg-type]
            "max_ticks must be a positive",
        ),
        (
            lambda: engine.run_flow(flow, poll_interval="0.1"),  # type: ignore[arg-type]
            "poll_interval",
        ),
    ]
    for call, message in calls:
        with pytest.raises(EngineError, match=message):
            call()
    assert flow.status == "PENDING" and "_tick_counter" not in flow.data


def test_run_flow_gives_up_after_max_ticks() -> None:
    engine = FlowEngine()
    flow = engine.flow_spec_to_flow(
        spec({"task_type": "engineflows.MyCustomTask", "task_params": {"steps": 100}})
    )
    with pytest.raises(MaxTicksError, match="after 5 ticks"):
        engine.run_flow(flow, max_ticks=5, poll_interval=0)


def test_custom_handlers_by_name_override_builtins(capsys: pytest.CaptureFixture[str]) -> None:
    def shout(ctx: flowplex.engine.TaskContext) -> None:
        print(str(ctx.params["msg"]).upper())
        ctx.complete()

    engine = FlowEngine(handlers={"print": shout})
    engine.run_flow(engine.flow_spec_to_flow(TWO_PRINTS))
    assert capsys.readouterr().out == "I AM TASK_1.\nI AM TASK_2.\n"


def test_custom_handler_class_by_dotted_path() -> None:
    engine = FlowEngine()
    flow = engine.flow_spec_to_flow(
        spec({"key": "c", "task_type": "engineflows.MyCustomTask", "task_params": {"steps": 2}})
    )
    engine.tick_flow(flow)
    assert flow.tasks["c"]["data"]["log"] == ["initial"] and flow.status == "RUNNING"
    engine.tick_flow(flow)
    assert flow.tasks["c"]["data"]["log"] == ["initial", "intermediate", "completed"]
    assert flow.status == "COMPLETED"
    bad = engine.flow_spec_to_flow(spec({"key": "c", "task_type": "engineflows.MyCustomTask"}))
    engine.tick_flow(bad)
    assert "MyCustomTask needs 'steps'" in bad.tasks["c"]["error"]


# -- interpolation -------------------------------------------------------------------------------


def test_ctx_interpolation_and_escaping(capsys: pytest.CaptureFixture[str]) -> None:
    engine = FlowEngine(ctx={"greeting": "hello"})
    flow = engine.flow_spec_to_flow(
        spec(
            {"key": "task_1", "task_type": "noop", "data": {"some_key": "some value"}},
            {
                "key": "task_2",
                "task_type": "print",
                "task_params": {"msg": "$ctx.flow.tasks.task_1.data.some_key"},
            },
            {"key": "task_3", "task_type": "print", "task_params": {"msg": "\\$literal"}},
            {"key": "task_4", "task_type": "print", "task_params": {"msg": "$ctx.greeting"}},
            {"key": "task_5", "task_type": "print", "task_params": {"msg": "costs $5"}},
        )
    )
    engine.run_flow(flow)
    assert capsys.readouterr().out == "some value\n$literal\nhello\ncosts $5\n"


def test_ctx_passed_to_a_tick_overrides_the_engine_ctx(capsys: pytest.CaptureFixture[str]) -> None:
    engine = FlowEngine(ctx={"who": "engine"})
    flow = engine.flow_spec_to_flow(
        spec({"task_type": "print", "task_params": {"msg": ["$ctx.who", {"n": "$ctx.n"}]}})
    )
    engine.tick_flow(flow, ctx={"who": "tick", "n": 3})
    assert capsys.readouterr().out == "['tick', {'n': 3}]\n"


def test_an_unresolvable_path_fails_the_task_clearly() -> None:
    engine = FlowEngine()
    flow = engine.flow_spec_to_flow(
        spec({"key": "p", "task_type": "print", "task_params": {"msg": "$ctx.flow.tasks.nope"}})
    )
    engine.tick_flow(flow)
    assert flow.status == "FAILED"
    assert "'ctx.flow.tasks.nope' does not resolve" in flow.tasks["p"]["error"]


def test_private_attributes_are_not_reachable() -> None:
    engine = FlowEngine()
    flow = engine.flow_spec_to_flow(
        spec({"key": "p", "task_type": "print", "task_params": {"msg": "$ctx.engine._handlers"}})
    )
    engine.tick_flow(flow)
    assert "does not resolve" in flow.tasks["p"]["error"]


# -- task types ----------------------------------------------------------------------------------


def test_noop_and_print(capsys: pytest.CaptureFixture[str]) -> None:
    engine = FlowEngine()
    engine.run_flow(engine.flow_spec_to_flow(spec({"task_type": "noop"})))
    flow = engine.flow_spec_to_flow(spec({"key": "p", "task_type": "print"}))
    engine.tick_flow(flow)
    assert "needs 'msg'" in flow.tasks["p"]["error"]
    assert capsys.readouterr().out == ""


def test_log(caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]) -> None:
    engine = FlowEngine()
    with caplog.at_level(logging.INFO, logger="flowplex.engine.tasks"):
        engine.run_flow(
            engine.flow_spec_to_flow(
                spec(
                    {"task_type": "log", "task_params": {"msg": "warned"}},
                    {"task_type": "log", "task_params": {"msg": "info", "log_level": "info"}},
                    {"task_type": "log", "task_params": {"msg": "printed", "use_print": True}},
                    {
                        "task_type": "log",
                        "task_params": {"msg": "dump", "use_print": True, "dump_flow": True},
                    },
                )
            )
        )
    assert [(r.levelname, r.message) for r in caplog.records] == [
        ("WARNING", "warned"),
        ("INFO", "info"),
    ]
    out = capsys.readouterr().out
    assert out.startswith("printed\ndump\n{")
    assert json.loads(out.split("dump\n", 1)[1])["label"] == "test_flow"
    flow = engine.flow_spec_to_flow(
        spec({"key": "l", "task_type": "log", "task_params": {"msg": "x", "log_level": "LOUD"}})
    )
    engine.tick_flow(flow)
    assert "unknown log_level 'LOUD'" in flow.tasks["l"]["error"]


def test_wire_sets_a_later_tasks_params(capsys: pytest.CaptureFixture[str]) -> None:
    engine = FlowEngine()
    flow = engine.flow_spec_to_flow(
        spec(
            {"key": "src", "task_type": "noop", "data": {"value": {"n": 1}}},
            {
                "key": "wire",
                "task_type": "wire",
                "task_params": {
                    "wirings": [
                        {"value": "wired msg", "dest": "ctx.flow.tasks.task_2.task_params.msg"},
                        "ctx.flow.tasks.src.data.value => ctx.flow.data.copied",
                        {
                            "src": "ctx.flow.tasks.src.data.value",
                            "dest": "ctx.flow.data.as_json",
                            "transform": "json.dumps",
                        },
                        {
                            "source": "ctx.flow.data.as_json",
                            "dest": "ctx.flow.data.nested.back",
                            "transform": {"type": "json.loads"},
                        },
                    ]
                },
            },
            {"key": "task_2", "task_type": "print", "task_params": {"msg": "unwired"}},
        )
    )
    engine.run_flow(flow)
    assert capsys.readouterr().out == "wired msg\n"
    assert flow.data["copied"] == {"n": 1}
    assert flow.data["as_json"] == '{"n": 1}'
    assert flow.data["nested"] == {"back": {"n": 1}}


@pytest.mark.parametrize(
    ("wiring", "message"),
    [
        ("no arrow here", "ctx.src => ctx.dest"),
        ({"value": 1}, "no 'dest'"),
        ({"dest": "ctx.flow.data.x"}, "needs a 'value' or a 'src'"),
        ({"value": 1, "dest": "ctx.flow.status.x"}, "not a mapping"),
        ({"value": 1, "dest": "ctx.flow.data.x", "transform": "upper"}, "unknown transform"),
        (42, "string or a mapping"),
    ],
)
def test_bad_wirings_fail_the_task(wiring: Any, message: str) -> None:
    engine = FlowEngine()
    flow = engine.flow_spec_to_flow(
        spec({"key": "w", "task_type": "wire", "task_params": {"wirings": [wiring]}})
    )
    engine.tick_flow(flow)
    assert flow.status == "FAILED" and message in flow.tasks["w"]["error"]


def _switch_flow(control_value: Any, default: bool = True) -> dict[str, Any]:
    params: dict[str, Any] = {
        "control_value": control_value,
        "cases": [
            {
                "condition": {"op": "eq", "arg": 1},
                "task": {"task_type": "print", "task_params": {"msg": "one"}},
            },
            {
                "condition": {"op": "gt", "arg": 1},
                "task": {"task_type": "print", "task_params": {"msg": "more than one"}},
            },
        ],
    }
    if default:
        params["default_case"] = {"task": {"task_type": "print", "task_params": {"msg": "other"}}}
    return spec({"key": "switch", "task_type": "switch", "task_params": params})


@pytest.mark.parametrize(
    ("value", "printed"), [(1, "one\n"), (2, "more than one\n"), (0, "other\n")]
)
def test_switch_runs_the_matching_case(
    value: int, printed: str, capsys: pytest.CaptureFixture[str]
) -> None:
    engine = FlowEngine()
    flow = engine.run_flow(engine.flow_spec_to_flow(_switch_flow(value)))
    assert capsys.readouterr().out == printed
    assert flow.tasks["switch"]["proxied_task"]["status"] == "COMPLETED"


def test_switch_without_match_or_default_fails() -> None:
    engine = FlowEngine()
    flow = engine.flow_spec_to_flow(_switch_flow(0, default=False))
    engine.tick_flow(flow)
    assert flow.status == "FAILED"
    assert "no case matched control_value 0" in flow.tasks["switch"]["error"]


def test_switch_control_value_can_be_interpolated(capsys: pytest.CaptureFixture[str]) -> None:
    engine = FlowEngine(ctx={"choice": 2})
    engine.run_flow(engine.flow_spec_to_flow(_switch_flow("$ctx.choice")))
    assert capsys.readouterr().out == "more than one\n"


def test_switch_proxied_multi_tick_task_and_failure() -> None:
    engine = FlowEngine()
    multi = _switch_flow(1)
    multi["tasks"][0]["task_params"]["cases"][0]["task"] = {
        "task_type": "engineflows.MyCustomTask",
        "task_params": {"steps": 3},
    }
    flow = engine.run_flow(engine.flow_spec_to_flow(multi))
    assert flow.data["_tick_counter"] == 3
    assert flow.tasks["switch"]["data"]["log"][-1] == "completed"
    failing = _switch_flow(1)
    failing["tasks"][0]["task_params"]["cases"][0]["task"] = {
        "task_type": "engineflows.raising_handler"
    }
    flow = engine.flow_spec_to_flow(failing)
    engine.tick_flow(flow)
    assert flow.status == "FAILED" and "broke" in flow.tasks["switch"]["error"]


def _spread(items: Any, **params: Any) -> dict[str, Any]:
    return spec(
        {
            "key": "spread",
            "task_type": "spread",
            "task_params": {
                "items": items,
                "mapping_params": {
                    "skeleton": {"task_type": "print", "task_params": {"msg": None}},
                    "wirings": ["ctx.item.value => ctx.skeleton.task_params.msg"],
                },
                **params,
            },
        }
    )


def test_spread_maps_items_into_a_child_flow(capsys: pytest.CaptureFixture[str]) -> None:
    engine = FlowEngine()
    flow = engine.run_flow(engine.flow_spec_to_flow(_spread(["item_0", "item_1", "item_2"])))
    assert capsys.readouterr().out == "item_0\nitem_1\nitem_2\n"
    assert flow.tasks["spread"]["data"]["flow_data"]["_tick_counter"] == 3


def test_spread_over_a_mapping(capsys: pytest.CaptureFixture[str]) -> None:
    engine = FlowEngine()
    engine.run_flow(engine.flow_spec_to_flow(_spread({"a": "first", "b": "second"})))
    assert capsys.readouterr().out == "first\nsecond\n"


def test_spread_rejects_bad_items() -> None:
    engine = FlowEngine()
    flow = engine.flow_spec_to_flow(_spread(5))
    engine.tick_flow(flow)
    assert "'items' must be a list or dict" in flow.tasks["spread"]["error"]


def test_inline_flow_runs_a_child_over_several_ticks() -> None:
    # MissionControl's inline_flow failed as soon as its child needed a second tick.
    engine = FlowEngine()
    child = spec(
        {"key": "c1", "task_type": "engineflows.MyCustomTask", "task_params": {"steps": 3}},
        {
            "key": "c2",
            "task_type": "wire",
            "task_params": {"wirings": [{"value": 42, "dest": "ctx.flow.data.result"}]},
        },
    )
    flow = engine.flow_spec_to_flow(
        spec(
            {"key": "inline", "task_type": "inline_flow", "task_params": {"flow_spec": child}},
            {
                "key": "after",
                "task_type": "wire",
                "task_params": {
                    "wirings": [
                        {
                            "src": "ctx.flow.tasks.inline.data.flow_data.result",
                            "dest": "ctx.flow.data.answer",
                        }
                    ]
                },
            },
        )
        | {"key": "flow:parent"}
    )
    engine.tick_flow(flow)
    assert flow.tasks["inline"]["status"] == "RUNNING"
    saved = json.loads(json.dumps(flow.to_flow_dict()))  # the child lives in the task's data
    flow = TaskFlow.from_flow_dict(saved)
    engine.run_flow(flow)
    assert flow.data["answer"] == 42
    child_dict = flow.tasks["inline"]["data"]["flow"]
    assert (child_dict["depth"], child_dict["parent_key"]) == (1, "flow:parent")


def test_child_specs_are_interpolated_in_the_childs_context(
    capsys: pytest.CaptureFixture[str],
) -> None:
    engine = FlowEngine()
    child = {
        "label": "child",
        "tasks": [{"task_type": "print", "task_params": {"msg": "$ctx.flow.label"}}],
    }
    flow = engine.flow_spec_to_flow(
        spec(
            {"task_type": "print", "task_params": {"msg": "$ctx.flow.label"}},
            {"task_type": "inline_flow", "task_params": {"flow_spec": child}},
        )
    )
    engine.run_flow(flow)
    assert capsys.readouterr().out == "test_flow\nchild\n"


def test_engine_conversion_wrappers() -> None:
    engine = FlowEngine()
    flow = engine.flow_spec_to_flow(TWO_PRINTS)
    again = engine.flow_dict_to_flow(flow.to_flow_dict())
    assert isinstance(again, TaskFlow) and again.to_flow_dict() == flow.to_flow_dict()


def test_inline_flow_child_failure_fails_the_task() -> None:
    engine = FlowEngine()
    child = spec({"task_type": "engineflows.raising_handler"})
    flow = engine.flow_spec_to_flow(
        spec({"key": "i", "task_type": "inline_flow", "task_params": {"flow_spec": child}})
    )
    engine.tick_flow(flow)
    assert flow.status == "FAILED" and "broke" in flow.tasks["i"]["error"]


def test_python_task() -> None:
    engine = FlowEngine()
    flow = engine.flow_spec_to_flow(
        spec(
            {
                "key": "add",
                "task_type": "python",
                "task_params": {"fn": "engineflows.add", "args": [2], "kwargs": {"b": 3}},
            },
            {
                "key": "ctx",
                "task_type": "python",
                "task_params": {"fn": "engineflows:task_key_and_flow_label", "args": ["p"]},
            },
            {
                "key": "uses_result",
                "task_type": "python",
                "task_params": {
                    "fn": "engineflows.add",
                    "args": ["$ctx.flow.tasks.add.data.result", 10],
                },
            },
        )
    )
    engine.run_flow(flow)
    assert flow.tasks["add"]["data"] == {"result": 5}
    assert flow.tasks["ctx"]["data"] == {"result": "p:ctx:test_flow"}
    assert flow.tasks["uses_result"]["data"] == {"result": 15}


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"fn": "engineflows.explode", "args": ["boom"]}, "ValueError: boom"),
        ({"fn": "engineflows.not_json"}, "not JSON-serializable"),
        ({"fn": "builtins.float", "args": ["nan"]}, "Out of range float values"),
        ({"fn": "engineflows.nothing_here"}, "nothing_here"),
        ({}, "needs 'fn'"),
        ({"fn": "engineflows.add", "args": "12"}, "'args' must be a list"),
    ],
)
def test_python_task_failures(params: dict[str, Any], message: str) -> None:
    engine = FlowEngine()
    flow = engine.flow_spec_to_flow(
        spec({"key": "py", "task_type": "python", "task_params": params})
    )
    engine.tick_flow(flow)
    assert flow.status == "FAILED"
    assert message in flow.tasks["py"]["error"]


def test_flow_and_call_tasks_need_their_collaborators() -> None:
    engine = FlowEngine()
    flow = engine.flow_spec_to_flow(
        spec(
            {
                "key": "f",
                "task_type": "flow",
                "task_params": {"flow_spec": {}},
                "precursors": ["ROOT"],
            },
            {
                "key": "c",
                "task_type": "call",
                "task_params": {"flow_endpoint": "x"},
                "precursors": ["ROOT"],
            },
            cfg={"fail_fast": False},
        )
    )
    engine.tick_flow(flow)
    assert "needs a store: FlowEngine(store=" in flow.tasks["f"]["error"]
    assert "needs a client of the serving runtime" in flow.tasks["c"]["error"]
    assert flow.status == "FAILED"


# -- public API ----------------------------------------------------------------------------------

EXPECTED_EXPORTS = [
    "BaseTaskHandler",
    "Claim",
    "ContextPathError",
    "EngineError",
    "FlowEngine",
    "FlowExistsError",
    "FlowFailedError",
    "FlowNotFoundError",
    "FlowRecord",
    "FlowRunner",
    "FlowSpecError",
    "FlowStore",
    "LeaseLostError",
    "MaxTicksError",
    "ROOT_KEY",
    "Status",
    "TaskContext",
    "TaskFlow",
    "TaskHandler",
]


def test_engine_exports_are_pinned_and_documented() -> None:
    assert sorted(flowplex.engine.__all__) == sorted(EXPECTED_EXPORTS)
    for name in flowplex.engine.__all__:
        obj = getattr(flowplex.engine, name)
        if isinstance(obj, type):
            assert obj.__doc__, f"flowplex.engine.{name} has no docstring"


def test_statuses_are_strings() -> None:
    assert [str(s) for s in flowplex.engine.Status] == ["PENDING", "RUNNING", "COMPLETED", "FAILED"]
    assert flowplex.engine.Status.COMPLETED == "COMPLETED"


def test_importing_the_engine_core_loads_no_database_library() -> None:
    import subprocess
    import sys

    code = (
        "import sys, flowplex.engine\n"
        "flowplex.engine.FlowEngine().run_flow(flowplex.engine.TaskFlow.from_flow_spec("
        "{'tasks': [{'task_type': 'noop'}]}))\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "{'sqlalchemy', 'psycopg', 'fastapi', 'httpx', 'typer'}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
