"""The serving API (seed 000): endpoints, mounted instances, the served-flow tree, deletes.

``test_seed_000_walkthrough`` follows the aiflows notebook step by step ("In [n]" comments) with
the same observable results; the other tests pin down the details of each serving function.
Every test runs on the memory, SQLite and PostgreSQL backends through ``db_url``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

import flowplex
from flowplex import (
    ClassPathError,
    Client,
    FlowDefinitionError,
    FlowError,
    FlowInstanceError,
    FlowplexError,
    UnknownInstanceError,
    serving,
)
from flowplex.workers import run_dispatch_worker_thread

ATOMIC = "flowplex.examples.ReverseNumberAtomicFlow"
SEQUENTIAL = "flowplex.examples.ReverseNumberSequentialFlow"
TIMEOUT = 10.0  # every wait is bounded: a bug fails the test instead of hanging it


@pytest.fixture
def cl(tmp_path: Path, db_url: str) -> Iterator[Client]:
    """A fresh node with one user on the backend under test; closed after the test."""
    client = flowplex.start_node(path=tmp_path, db=db_url)
    yield client
    client.node.close()


def tree_paths(text: str) -> dict[str, str | None]:
    """Parse a printed served-flow tree into ``{path: value}``.

    Folders end with ``/`` and map to None; leaves map to their printed value (None when values
    are not printed). ``" ep/\\n   init: true"`` gives ``{"ep/": None, "ep/init": "true"}``.
    """
    paths: dict[str, str | None] = {}
    stack: list[tuple[int, str]] = []
    for line in text.splitlines():
        if not line.strip():
            continue
        indent = len(line) - len(line.lstrip(" "))
        name = line.strip()
        while stack and stack[-1][0] >= indent:
            stack.pop()
        prefix = "".join(folder for _, folder in stack)
        if name.endswith("/"):
            stack.append((indent, name))
            paths[prefix + name] = None
        else:
            key, sep, value = name.partition(": ")
            paths[prefix + key] = value if sep else None
    return paths


def ask(proxy: flowplex.FlowProxy, data: dict[str, object]) -> dict[str, object]:
    """Send ``data`` to ``proxy`` and wait (bounded) for the reply data."""
    return proxy.get_reply_future(proxy.package_input_message(data)).get_data(timeout=TIMEOUT)


def instance_ids(cl: Client, endpoint: str | None = None) -> list[str]:
    """Ids of the instances ``cl`` serves (on ``endpoint``), in mount order."""
    return [r.flow_id for r in cl.node.backend.list_instances(cl.get_user_id(), endpoint)]


# -- the notebook ------------------------------------------------------------------------------


def test_seed_000_walkthrough(cl: Client, caplog: pytest.LogCaptureFixture) -> None:
    """Seed 000 end to end: serve, print, mount, metadata, unserve, the failing mount, deletes.

    Each step is a helper below, named after the notebook cells it reproduces.
    """
    # In [3]: one dispatch worker thread is enough (flowplex needs no second one).
    run_dispatch_worker_thread(cl)
    _serve_and_print(cl)  # In [4]-[5]
    flow, atomic_ids = _mount_the_composite(cl)  # In [6]-[8]
    _unserve_the_atomic_endpoint(cl, flow, atomic_ids)  # In [9]-[12]
    caplog.clear()
    caplog.set_level(logging.INFO)
    _delete_everything(cl, flow, atomic_ids)  # In [13]-[18]
    # aiflows logged RPC errors ("Key name not found") while deleting; flowplex logs none.
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == []
    assert any("deleted flow instance" in r.getMessage() for r in caplog.records)


def _serve_and_print(cl: Client) -> None:
    """In [4]-[5]: serving both flows returns True; the tree shows their settings."""
    assert serving.serve_flow(cl, ATOMIC, "reverse_number_atomic") is True
    assert serving.serve_flow(cl, SEQUENTIAL, "reverse_number_sequential") is True
    # Booleans print as true/false, never as bytes.
    text = serving.format_served_flows(cl, print_values=True)
    assert "b'" not in text and "\\x00" not in text
    assert tree_paths(text) == {
        "reverse_number_atomic/": None,
        "reverse_number_atomic/init": "true",
        "reverse_number_atomic/singleton": "false",
        "reverse_number_atomic/parallel_dispatch": "false",
        "reverse_number_atomic/flow_class_name": ATOMIC,
        "reverse_number_atomic/default_dispatch_point": "default",
        "reverse_number_sequential/": None,
        "reverse_number_sequential/init": "true",
        "reverse_number_sequential/singleton": "false",
        "reverse_number_sequential/parallel_dispatch": "false",
        "reverse_number_sequential/flow_class_name": SEQUENTIAL,
        "reverse_number_sequential/default_dispatch_point": "default",
    }


def _mount_the_composite(cl: Client) -> tuple[flowplex.FlowProxy, list[str]]:
    """In [6]-[8]: mounting the composite mounts 3 instances, subflows first.

    The atomic endpoint was served non-singleton, so the YAML's ``singleton: true`` on
    first_reverse_flow does not apply (it matters only to recursive_serve_flow): two atomic
    instances, then the composite. Returns the composite's proxy and the atomic ids.
    """
    flow = serving.get_flow_instance(cl, flow_endpoint="reverse_number_sequential")
    seq_id = flow.get_instance_id()
    all_ids = instance_ids(cl)
    atomic_ids = instance_ids(cl, "reverse_number_atomic")
    assert len(all_ids) == 3
    assert len(set(atomic_ids)) == 2
    assert instance_ids(cl, "reverse_number_sequential") == [seq_id]
    assert all_ids[-1] == seq_id, "subflows are mounted before the composite"
    subflows = cl.node.backend.get_instance(seq_id).config["subflows_config"]
    assert {
        subflows["first_reverse_flow"]["flow_id"],
        subflows["second_reverse_flow"]["flow_id"],
    } == set(atomic_ids)

    # In [7]: the tree shows every instance under mounts/local/<id>/ with its entries.
    paths = tree_paths(serving.format_served_flows(cl))
    mounted = [("reverse_number_atomic", i) for i in atomic_ids]
    mounted.append(("reverse_number_sequential", seq_id))
    for endpoint, flow_id in mounted:
        for entry in ("init", "config_overrides", "state"):
            assert f"{endpoint}/mounts/local/{flow_id}/{entry}" in paths
    assert serving.format_flow_instances(cl).split() == all_ids

    # In [8]: the instance's metadata (also under its aiflows name).
    expected = {"flow_endpoint": "reverse_number_sequential", "user_id": "local"}
    assert serving.get_flow_instance_metadata(cl, seq_id) == expected
    assert serving._get_local_flow_instance_metadata(cl, flow_id=seq_id) == expected
    # Reversed twice (seed 001, In [8]).
    assert ask(flow, {"id": 0, "number": 1234}) == {"output_number": 1234}
    return flow, atomic_ids


def _unserve_the_atomic_endpoint(
    cl: Client, flow: flowplex.FlowProxy, atomic_ids: list[str]
) -> None:
    """In [9]-[12]: unserving keeps entries and instances working; new mounts fail."""
    user = cl.get_user_id()
    all_ids = instance_ids(cl)
    assert serving.unserve_flow(cl, flow_endpoint="reverse_number_atomic") is True
    assert serving.is_flow_served(cl, flow_endpoint="reverse_number_atomic") is False
    values = tree_paths(serving.format_served_flows(cl, print_values=True))
    assert values["reverse_number_atomic/init"] == "false"
    for flow_id in atomic_ids:
        assert f"reverse_number_atomic/mounts/local/{flow_id}/" in values
    assert serving.format_flow_instances(cl).split() == all_ids
    # Existing proxies still get replies (through the unserved subflows too).
    assert ask(flow, {"id": 1, "number": 1200}) == {"output_number": 12}

    # A new mount of the unserved endpoint fails.
    with pytest.raises(FlowInstanceError) as excinfo:
        serving.get_flow_instance(cl, "reverse_number_atomic")
    assert str(excinfo.value) == (
        f"Failed to get flow instance at reverse_number_atomic served by user {user}.\n"
        "Message: Not serving at reverse_number_atomic."
    )

    # In [12]: mounting the composite fails on its first subflow, with the nested reason, and
    # mounts nothing (not even the subflows before the failure).
    with pytest.raises(FlowInstanceError) as excinfo:
        serving.get_flow_instance(cl, flow_endpoint="reverse_number_sequential")
    assert str(excinfo.value) == (
        f"Failed to get flow instance at reverse_number_sequential served by user {user}.\n"
        "Message: Failed to get instance of subflow first_reverse_flow.\n"
        f"Failed to get flow instance at reverse_number_atomic served by user {user}.\n"
        "Message: Not serving at reverse_number_atomic."
    )
    assert instance_ids(cl) == all_ids


def _delete_everything(cl: Client, flow: flowplex.FlowProxy, atomic_ids: list[str]) -> None:
    """In [13]-[18]: delete the atomic endpoint, then the composite instance, then all."""
    seq_id = flow.get_instance_id()
    # In [13]-[14]: the endpoint and its instances are gone, leaving nothing behind.
    deleted = serving.delete_flow_endpoint(cl, flow_endpoint="reverse_number_atomic")
    assert sorted(deleted) == sorted(atomic_ids)
    paths = tree_paths(serving.format_served_flows(cl))
    assert not [p for p in paths if p.startswith("reverse_number_atomic")]
    assert f"reverse_number_sequential/mounts/local/{seq_id}/state" in paths
    assert serving.format_flow_instances(cl).split() == [seq_id]
    for flow_id in atomic_ids:
        assert cl.node.backend.get_instance(flow_id) is None
        assert serving.get_flow_instance_metadata(cl, flow_id) is None
    assert serving.is_flow_served(cl, "reverse_number_atomic") is False

    # In [15]-[16]: deleting one instance removes it, and no empty mounts/ folder remains.
    assert serving.delete_flow_instance(cl, flow_id=seq_id) is True
    assert set(tree_paths(serving.format_served_flows(cl))) == {
        "reverse_number_sequential/",
        "reverse_number_sequential/init",
        "reverse_number_sequential/singleton",
        "reverse_number_sequential/parallel_dispatch",
        "reverse_number_sequential/flow_class_name",
        "reverse_number_sequential/default_dispatch_point",
    }
    assert serving.format_flow_instances(cl) == ""
    assert serving.get_flow_instance_metadata(cl, seq_id) is None
    assert serving.delete_flow_instance(cl, flow_id=seq_id) is False

    # A message to the deleted instance gets an error reply naming it (aiflows: "Unknown flow
    # instance!"), instead of hanging.
    with pytest.raises(FlowError) as excinfo:
        ask(flow, {"id": 2, "number": 1234})
    assert excinfo.value.remote_type == "UnknownInstanceError"
    assert seq_id in excinfo.value.remote_message
    assert seq_id in str(excinfo.value)

    # In [17]-[18]: deleting every endpoint leaves an empty tree (aiflows left empty folders).
    serving.delete_all_flow_endpoints(cl)
    assert serving.format_served_flows(cl) == ""
    assert serving.format_flow_instances(cl) == ""
    assert cl.node.backend.list_endpoints(cl.get_user_id()) == []


def test_print_functions_print_the_formatted_trees(
    cl: Client, capsys: pytest.CaptureFixture[str]
) -> None:
    """print_served_flows / print_flow_instances print what the format_* functions return."""
    serving.serve_flow(cl, ATOMIC, "reverse_number_atomic")
    proxy = serving.get_flow_instance(cl, "reverse_number_atomic")
    serving.print_served_flows(cl, print_values=True)
    serving.print_flow_instances(cl)
    out = capsys.readouterr().out
    assert out == (
        serving.format_served_flows(cl, print_values=True)
        + "\n"
        + serving.format_flow_instances(cl)
        + "\n"
    )
    assert f" {proxy.get_instance_id()}\n" in out


# -- serve_flow ----------------------------------------------------------------------------------


def test_serving_twice_returns_false_and_changes_nothing(cl: Client) -> None:
    """A second serve_flow at a served endpoint, even with other settings, is a no-op."""
    assert serving.serve_flow(cl, ATOMIC, "reverse_number_atomic") is True
    before = serving.format_served_flows(cl, print_values=True)
    assert (
        serving.serve_flow(
            cl,
            SEQUENTIAL,
            "reverse_number_atomic",
            dispatch_point="gpu",
            parallel_dispatch=True,
            singleton=True,
        )
        is False
    )
    assert serving.format_served_flows(cl, print_values=True) == before
    record = cl.node.backend.get_endpoint(cl.get_user_id(), "reverse_number_atomic")
    assert (record.flow_class_name, record.singleton, record.parallel_dispatch) == (
        ATOMIC,
        False,
        False,
    )
    assert record.dispatch_point == "default"


def test_serve_flow_settings_show_in_the_tree(cl: Client) -> None:
    """dispatch_point, parallel_dispatch, singleton and a dispatch_point_override are shown."""
    assert serving.serve_flow(
        cl, ATOMIC, "rev", dispatch_point="gpu", parallel_dispatch=True, singleton=True
    )
    proxy = serving.get_flow_instance(cl, "rev", dispatch_point_override="cpu-2")
    values = tree_paths(serving.format_served_flows(cl, print_values=True))
    assert values["rev/singleton"] == "true"
    assert values["rev/parallel_dispatch"] == "true"
    assert values["rev/default_dispatch_point"] == "gpu"
    flow_id = proxy.get_instance_id()
    assert values[f"rev/mounts/local/{flow_id}/dispatch_point_override"] == "cpu-2"
    assert values[f"rev/mounts/local/{flow_id}/init"] == "true"
    assert values[f"rev/mounts/local/{flow_id}/state"] == "{}"


def test_serving_an_unserved_endpoint_again_keeps_its_instances(cl: Client) -> None:
    """unserve_flow then serve_flow: served again (True), the old instances still exist."""
    serving.serve_flow(cl, ATOMIC, "reverse_number_atomic")
    proxy = serving.get_flow_instance(cl, "reverse_number_atomic")
    serving.unserve_flow(cl, "reverse_number_atomic")
    assert serving.serve_flow(cl, ATOMIC, "reverse_number_atomic") is True
    assert serving.is_flow_served(cl, "reverse_number_atomic") is True
    assert instance_ids(cl) == [proxy.get_instance_id()]
    again = serving.get_flow_instance(cl, "reverse_number_atomic")
    assert again.get_instance_id() != proxy.get_instance_id()


@pytest.mark.parametrize(
    ("class_path", "error", "named"),
    [
        ("no_such_module.Flow", ClassPathError, "no_such_module"),
        ("flowplex.examples.NoSuchFlow", ClassPathError, "NoSuchFlow"),
        ("nodots", ClassPathError, "nodots"),
        ("flowplex.messages.FlowMessage", FlowDefinitionError, "flowplex.messages.FlowMessage"),
        ("flowplex.examples.reverse_digits", FlowDefinitionError, "reverse_digits"),
    ],
)
def test_serve_flow_rejects_class_paths_that_are_not_flows(
    cl: Client, class_path: str, error: type[Exception], named: str
) -> None:
    """A class path that does not import, or is not a Flow, fails at once; nothing is stored."""
    with pytest.raises(error) as excinfo:
        serving.serve_flow(cl, class_path, "broken")
    assert named in str(excinfo.value)
    assert serving.is_flow_served(cl, "broken") is False
    assert cl.node.backend.list_endpoints(cl.get_user_id()) == []
    assert serving.format_served_flows(cl) == ""


@pytest.mark.parametrize("endpoint", ["", "bad name", "a/b", "a:b", "x" * 201, None, 5])
def test_invalid_endpoint_names_are_rejected_everywhere(cl: Client, endpoint: object) -> None:
    """Every serving function refuses an endpoint name that is not 1-200 of [A-Za-z0-9_.-]."""
    calls = [
        lambda: serving.serve_flow(cl, ATOMIC, endpoint),
        lambda: serving.is_flow_served(cl, endpoint),
        lambda: serving.unserve_flow(cl, endpoint),
        lambda: serving.delete_flow_endpoint(cl, endpoint),
        lambda: serving.get_flow_instance(cl, endpoint),
    ]
    for call in calls:
        with pytest.raises(FlowplexError, match="invalid flow endpoint"):
            call()
    assert cl.node.backend.list_endpoints(cl.get_user_id()) == []


def test_bad_arguments_get_clear_errors_and_store_nothing(cl: Client) -> None:
    """Wrong types and values are refused with an error naming the argument."""
    with pytest.raises(TypeError, match="client handle"):
        serving.serve_flow(object(), ATOMIC, "rev")  # type: ignore[arg-type]
    with pytest.raises(FlowplexError, match="flow_class_name"):
        serving.serve_flow(cl, 123, "rev")  # type: ignore[arg-type]
    for point in ("", "a b", None):
        with pytest.raises(FlowplexError, match="invalid dispatch_point"):
            serving.serve_flow(cl, ATOMIC, "rev", dispatch_point=point)  # type: ignore[arg-type]
    assert cl.node.backend.list_endpoints(cl.get_user_id()) == []

    serving.serve_flow(cl, "testflows.CounterFlow", "counter")
    with pytest.raises(FlowplexError, match="config_overrides must be a mapping"):
        serving.get_flow_instance(cl, "counter", config_overrides=[("name", "x")])  # type: ignore[arg-type]
    with pytest.raises(FlowplexError, match="initial_state must be a mapping"):
        serving.get_flow_instance(cl, "counter", initial_state="count=1")  # type: ignore[arg-type]
    with pytest.raises(FlowplexError, match="invalid dispatch_point_override"):
        serving.get_flow_instance(cl, "counter", dispatch_point_override="a b")
    # Values the flow itself rejects: the reason is the flow's, wrapped in the serving error.
    with pytest.raises(FlowInstanceError, match="not JSON-serializable"):
        serving.get_flow_instance(cl, "counter", initial_state={"seen": {1, 2}})
    with pytest.raises(FlowInstanceError, match="private_keys must be a list"):
        serving.get_flow_instance(cl, "counter", config_overrides={"private_keys": "secret"})
    with pytest.raises(FlowInstanceError, match="'name'"):
        serving.get_flow_instance(cl, "counter", config_overrides={"name": None})
    with pytest.raises(FlowInstanceError, match=r"Not serving at nowhere\."):
        serving.get_flow_instance(cl, "nowhere")
    with pytest.raises(FlowInstanceError, match="Invalid participant id abc"):
        serving.get_flow_instance(cl, "counter", user_id="abc")
    stranger = "f" * 64
    with pytest.raises(FlowInstanceError, match=f"No user {stranger} on this node"):
        serving.get_flow_instance(cl, "counter", user_id=stranger)
    assert instance_ids(cl) == []


@pytest.mark.parametrize(
    "bad_value", [{1, 2}, float("nan"), object()], ids=["set", "nan", "object"]
)
def test_config_overrides_that_are_not_json_get_a_flowplex_error(
    cl: Client, bad_value: object
) -> None:
    """A config override that cannot be stored as JSON is refused on every backend with a
    FlowplexError naming the key (as a non-JSON initial_state is), and nothing is mounted."""
    serving.serve_flow(cl, "testflows.CounterFlow", "counter")
    with pytest.raises(FlowplexError, match="extra"):
        serving.get_flow_instance(cl, "counter", config_overrides={"extra": bad_value})
    assert instance_ids(cl) == []


def test_unknown_ids_and_endpoints_are_answered_not_raised(cl: Client) -> None:
    """Lookups and deletes of things that do not exist return False / None / [] quietly."""
    assert serving.is_flow_served(cl, "nothing") is False
    assert serving.unserve_flow(cl, "nothing") is False
    assert serving.delete_flow_endpoint(cl, "nothing") == []
    assert serving.delete_all_flow_endpoints(cl) == []
    assert serving.delete_flow_instance(cl, "no-such-id") is False
    assert serving.get_flow_instance_metadata(cl, "no-such-id") is None
    with pytest.raises(UnknownInstanceError, match="no-such-id"):
        serving.get_flow_state(cl, "no-such-id")


# -- recursive_serve_flow ------------------------------------------------------------------------


def test_recursive_serve_flow_serves_local_subflows(
    cl: Client, caplog: pytest.LogCaptureFixture
) -> None:
    """The composite's subflow endpoint is served with the subflow's YAML settings.

    ``first_reverse_flow`` says ``singleton: true``, so reverse_number_atomic is served as a
    singleton and both subflows of a mounted composite share its one instance; the second entry
    finds the endpoint already served.
    """
    caplog.set_level(logging.INFO)
    run_dispatch_worker_thread(cl)
    assert serving.recursive_serve_flow(cl, SEQUENTIAL, "reverse_number_sequential") is True
    assert serving.is_flow_served(cl, "reverse_number_sequential")
    assert serving.is_flow_served(cl, "reverse_number_atomic")
    atomic = cl.node.backend.get_endpoint(cl.get_user_id(), "reverse_number_atomic")
    assert (atomic.flow_class_name, atomic.singleton) == (ATOMIC, True)
    assert "Subflow second_reverse_flow already served." in caplog.messages

    flow = serving.get_flow_instance(cl, "reverse_number_sequential")
    subflows = cl.node.backend.get_instance(flow.get_instance_id()).config["subflows_config"]
    shared = subflows["first_reverse_flow"]["flow_id"]
    assert subflows["second_reverse_flow"]["flow_id"] == shared
    assert instance_ids(cl, "reverse_number_atomic") == [shared]
    assert ask(flow, {"id": 0, "number": 1234}) == {"output_number": 1234}
    # Serving it all again: the top endpoint is already served.
    assert serving.recursive_serve_flow(cl, SEQUENTIAL, "reverse_number_sequential") is False


def test_recursive_serve_flow_returns_false_when_a_subflow_has_no_class(cl: Client) -> None:
    """A local subflow without flow_class_name cannot be served: False, and nothing is served."""
    served = serving.recursive_serve_flow(cl, "servingflows.NoClassNameCompositeFlow", "top")
    assert served is False
    assert serving.is_flow_served(cl, "top") is False
    assert serving.is_flow_served(cl, "echo_without_class") is False


# -- get_flow_instance -------------------------------------------------------------------------


def test_singleton_endpoint_gives_everybody_one_instance(cl: Client) -> None:
    """Two mounts of a singleton endpoint return the same id; the second's overrides and
    initial state are ignored."""
    serving.serve_flow(cl, "testflows.CounterFlow", "counter", singleton=True)
    first = serving.get_flow_instance(cl, "counter", config_overrides={"name": "First"})
    second = serving.get_flow_instance(
        cl, "counter", config_overrides={"name": "Second"}, initial_state={"count": 7}
    )
    assert second.get_instance_id() == first.get_instance_id()
    assert instance_ids(cl) == [first.get_instance_id()]
    record = cl.node.backend.get_instance(first.get_instance_id())
    assert record.config["name"] == "First"
    assert record.state == {"count": 0, "seen": []}


def mount_concurrently(
    cl: Client, endpoint: str, overrides: dict[str, object], threads_n: int
) -> list[str]:
    """Mount ``endpoint`` from ``threads_n`` threads released together; the instance ids."""
    barrier = threading.Barrier(threads_n, timeout=TIMEOUT)
    ids: list[str] = []
    failures: list[BaseException] = []

    def mount() -> None:
        try:
            barrier.wait()
            proxy = serving.get_flow_instance(cl, endpoint, config_overrides=overrides)
            ids.append(proxy.get_instance_id())
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=mount) for _ in range(threads_n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(TIMEOUT)
    assert failures == []
    return ids


def test_concurrent_mounts_of_a_singleton_share_one_instance(cl: Client) -> None:
    """Threads mount the composite at once; its subflows' endpoint is a singleton, so all the
    composites share one atomic instance (at most one instance per singleton endpoint).

    No lock in the process serializes mounts: the database arbitrates (as it must between
    processes), so the threads race for real. A race needs luck to show, so this runs several
    rounds, each on a fresh singleton endpoint.
    """
    assert serving.serve_flow(cl, SEQUENTIAL, "reverse_number_sequential")
    rounds, threads_n = 20, 12
    for round_no in range(rounds):
        endpoint = f"singleton_{round_no}"
        assert serving.serve_flow(cl, ATOMIC, endpoint, singleton=True)
        at_endpoint = {"flow_endpoint": endpoint}
        overrides: dict[str, object] = {
            "subflows_config": {
                "first_reverse_flow": at_endpoint,
                "second_reverse_flow": at_endpoint,
            }
        }
        ids = mount_concurrently(cl, "reverse_number_sequential", overrides, threads_n)
        assert len(set(ids)) == threads_n
        singletons = instance_ids(cl, endpoint)
        assert len(singletons) == 1, (
            f"round {round_no}: {len(singletons)} instances of a singleton endpoint"
        )


def test_non_singleton_endpoint_mounts_a_new_instance_per_call(cl: Client) -> None:
    """Each mount of a non-singleton endpoint is its own instance with its own state."""
    run_dispatch_worker_thread(cl)
    serving.serve_flow(cl, "testflows.CounterFlow", "counter")
    a = serving.get_flow_instance(cl, "counter")
    b = serving.get_flow_instance(cl, "counter")
    assert a.get_instance_id() != b.get_instance_id()
    assert instance_ids(cl) == [a.get_instance_id(), b.get_instance_id()]
    assert ask(a, {"i": 1}) == {"count": 1}
    assert ask(a, {"i": 2}) == {"count": 2}
    assert ask(b, {"i": 1}) == {"count": 1}


def test_proxy_addresses_the_mounted_instance(cl: Client) -> None:
    """The proxy is named after the endpoint and points at the serving user and a uuid id."""
    serving.serve_flow(cl, ATOMIC, "reverse_number")
    proxy = serving.get_flow_instance(cl, "reverse_number")
    assert proxy.name == "Proxy_reverse_number"
    assert proxy.user_id == cl.get_user_id()
    flow_id = proxy.get_instance_id()
    assert len(flow_id) == 36 and flow_id.count("-") == 4
    assert cl.node.backend.get_instance(flow_id).client_id == "local"


def test_config_overrides_are_deep_merged_and_stored_with_flow_id(cl: Client) -> None:
    """Overrides are merged over the YAML defaults; the stored config is the full merged one
    with flow_id (subflow ids included); the worker builds the flow from it."""
    run_dispatch_worker_thread(cl)
    serving.serve_flow(cl, ATOMIC, "reverse_number_atomic")
    serving.serve_flow(cl, SEQUENTIAL, "reverse_number_sequential")

    atomic = serving.get_flow_instance(cl, "reverse_number_atomic", config_overrides={"name": "X"})
    config = cl.node.backend.get_instance(atomic.get_instance_id()).config
    assert config["name"] == "X"
    assert config["description"] == "A flow that takes in a number and reverses it."
    assert config["flow_id"] == atomic.get_instance_id()
    # The worker built the flow with the overridden name: the reply comes from "X".
    reply = atomic.get_reply_future(atomic.package_input_message({"number": 12})).get_message(
        timeout=TIMEOUT
    )
    assert reply.src_flow == "X"
    assert reply.data == {"output_number": 21}

    composite = serving.get_flow_instance(
        cl,
        "reverse_number_sequential",
        config_overrides={"subflows_config": {"second_reverse_flow": {"name": "Second-X"}}},
    )
    config = cl.node.backend.get_instance(composite.get_instance_id()).config
    assert config["flow_id"] == composite.get_instance_id()
    assert config["name"] == "ReverseNumberTwice"
    second = config["subflows_config"]["second_reverse_flow"]
    assert second["name"] == "Second-X"
    assert second["description"] == "A flow that takes in a number and reverses it AGAIN."
    assert second["flow_endpoint"] == "reverse_number_atomic"
    first = config["subflows_config"]["first_reverse_flow"]
    assert first["name"] == "ReverseNumberFirst"
    # Subflow entries' non-routing keys become the subflow instance's config overrides.
    assert cl.node.backend.get_instance(second["flow_id"]).config["name"] == "Second-X"
    assert cl.node.backend.get_instance(first["flow_id"]).config["name"] == "ReverseNumberFirst"
    assert ask(composite, {"number": 1234}) == {"output_number": 1234}


def test_initial_state_is_stored_and_used(cl: Client) -> None:
    """initial_state is merged over the flow's own initial state, stored, and run from."""
    run_dispatch_worker_thread(cl)
    serving.serve_flow(cl, "testflows.CounterFlow", "counter")
    counter = serving.get_flow_instance(cl, "counter", initial_state={"count": 100})
    flow_id = counter.get_instance_id()
    assert cl.node.backend.get_instance(flow_id).state == {"count": 100, "seen": []}
    assert serving.get_flow_state(cl, flow_id) == {"count": 100, "seen": []}
    assert ask(counter, {"i": 0}) == {"count": 101}
    assert serving.get_flow_state(cl, flow_id) == {"count": 101, "seen": [0]}
    paths = tree_paths(serving.format_served_flows(cl, print_values=True))
    assert paths[f"counter/mounts/local/{flow_id}/state"] == '{"count": 101, "seen": [0]}'
