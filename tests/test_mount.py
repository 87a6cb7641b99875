"""Every way a mount can fail is a FlowInstanceError with the reason, served or in-process.

The message follows the serving contract: "Failed to get flow instance at {endpoint} served by
user {user}.\\nMessage: {reason}", and a failing subflow adds "Failed to get instance of subflow
{key}." above its own error. Nothing is stored by a failed mount, and a flow's own exception is
never mistaken for the race between two mounts of a singleton (which alone is retried).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import flowplex
import testflows
from flowplex import Client, FlowInstanceError, LocalRuntime, serving
from flowplex.runtime import EndpointRecord
from flowplex.workers import run_dispatch_worker_thread

PREFIX = "Failed to get flow instance at {endpoint} served by user {user}.\nMessage: "


@pytest.fixture
def cl(tmp_path: Path, db_url: str) -> Iterator[Client]:
    client = flowplex.start_node(path=tmp_path, db=db_url)
    yield client
    client.node.close()


@pytest.fixture(autouse=True)
def _no_set_up_calls() -> None:
    testflows.SET_UP_CALLS.clear()


def mount_error(cl: Client, class_path: str, endpoint: str, **overrides: object) -> str:
    """Serve ``class_path`` (and its subflows) at ``endpoint``, mount it, return the error."""
    serving.recursive_serve_flow(cl, class_path, endpoint)
    with pytest.raises(FlowInstanceError) as info:
        serving.get_flow_instance(cl, endpoint, config_overrides=overrides or None)
    assert cl.node.instances(cl.get_user_id()) == []  # a failed mount stores nothing
    text = str(info.value)
    assert text.startswith(PREFIX.format(endpoint=endpoint, user=cl.get_user_id()))
    assert text.endswith(info.value.reason)
    return info.value.reason


def local_error(class_path: str, **overrides: object) -> str:
    rt = LocalRuntime()
    with pytest.raises(FlowInstanceError) as info:
        rt.get_flow_instance(class_path, config_overrides=overrides or None)
    assert rt.instance_ids == []
    assert str(info.value).startswith(PREFIX.format(endpoint=class_path, user=rt.user_id))
    return info.value.reason


def test_a_class_that_no_longer_imports(cl: Client) -> None:
    """An endpoint whose class cannot be imported any more (the code changed since it was
    served, maybe by another process) fails the mount with the import error."""
    cl.node.backend.serve_endpoint(
        EndpointRecord(
            user_id=cl.get_user_id(),
            endpoint="gone",
            flow_class_name="vanished_module.GoneFlow",
            singleton=False,
            parallel_dispatch=False,
            dispatch_point="default",
            served=True,
            created_at=time.time(),
        )
    )
    with pytest.raises(FlowInstanceError) as info:
        serving.get_flow_instance(cl, "gone")
    assert info.value.reason == (
        "module 'vanished_module' not found (class path 'vanished_module.GoneFlow')."
    )


def test_a_subflow_class_that_does_not_import_in_process() -> None:
    reason = local_error(
        "flowplex.examples.ReverseNumberSequentialFlow",
        subflows_config={"first_reverse_flow": {"flow_class_name": "nowhere.Flow"}},
    )
    assert reason.startswith("Failed to get instance of subflow first_reverse_flow.\n")
    assert "module 'nowhere' not found" in reason


def test_a_constructor_with_the_wrong_signature(cl: Client) -> None:
    for reason in (
        mount_error(cl, "testflows.WrongInitFlow", "wrong"),
        local_error("testflows.WrongInitFlow"),
    ):
        assert "WrongInitFlow cannot be built as WrongInitFlow(flow_config, flow_state)" in reason
        assert "missing a required argument" in reason


@pytest.mark.parametrize("where", ["served", "local"])
def test_set_up_flow_state_raising_anything_is_reported_once(cl: Client, where: str) -> None:
    """A plain ValueError from the flow's own set-up is the reason; it is not retried."""
    if where == "served":
        reason = mount_error(cl, "testflows.SetUpFailsFlow", "fails")
    else:
        reason = local_error("testflows.SetUpFailsFlow")
    assert reason == "ValueError: no state for you"
    assert len(testflows.SET_UP_CALLS) == 1


@pytest.mark.parametrize("where", ["served", "local"])
def test_a_failing_subflow_next_to_a_singleton_is_not_retried_as_a_race(
    cl: Client, where: str
) -> None:
    class_path = "testflows.SingletonBesideFailingFlow"
    served = where == "served"
    reason = mount_error(cl, class_path, "beside") if served else local_error(class_path)
    assert reason.startswith("Failed to get instance of subflow broken.\n")
    assert reason.endswith("Message: ValueError: no state for you")
    assert "race" not in reason
    assert len(testflows.SET_UP_CALLS) == 1


def test_invalid_config(cl: Client) -> None:
    for reason in (
        mount_error(cl, "testflows.EchoFlow", "echo", name=None),
        local_error("testflows.EchoFlow", name=None),
    ):
        assert reason == "flow config of EchoFlow is missing required config key(s): 'name'."
    for reason in (
        mount_error(cl, "testflows.EchoFlow", "echo", private_keys="x"),
        local_error("testflows.EchoFlow", private_keys="x"),
    ):
        assert reason == "Echo: private_keys must be a list of key names, got 'x'."


def test_a_subflow_that_cannot_be_mounted(cl: Client) -> None:
    """Its error is nested under the composite's, naming the subflow key."""
    serving.serve_flow(cl, "flowplex.examples.ReverseNumberSequentialFlow", "seq")
    with pytest.raises(FlowInstanceError) as info:
        serving.get_flow_instance(cl, "seq")
    user = cl.get_user_id()
    assert info.value.reason == (
        "Failed to get instance of subflow first_reverse_flow.\n"
        + PREFIX.format(endpoint="reverse_number_atomic", user=user)
        + "Not serving at reverse_number_atomic."
    )
    # In-process, a subflow that names no class is reported the same way.
    reason = local_error(
        "flowplex.examples.ReverseNumberSequentialFlow",
        subflows_config={"first_reverse_flow": {"flow_class_name": None}},
    )
    assert reason.startswith("Failed to get instance of subflow first_reverse_flow.\n")
    assert reason.endswith(
        "subflow 'first_reverse_flow' has no flow_class_name, and nothing here serves endpoint "
        "'reverse_number_atomic'."
    )


def test_a_constructor_taking_exactly_config_and_state_mounts_and_runs(cl: Client) -> None:
    """The signature a mount checks is the one a worker calls."""
    run_dispatch_worker_thread(cl)
    serving.serve_flow(cl, "testflows.BothArgumentsFlow", "both")
    proxy = serving.get_flow_instance(cl, "both")
    future = proxy.get_reply_future(proxy.package_input_message({}))
    assert future.get_data(timeout=30) == {"ok": True}
    assert flowplex.run_local("testflows.BothArgumentsFlow", {}) == {"ok": True}
