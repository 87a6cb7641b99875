"""Several users on one node (seed 001): cross-user mounts, isolation, identities, reopening.

User 0 serves the atomic ReverseNumber flow as a singleton; user 1 serves the sequential
composite whose subflows are user 0's. flowplex needs no get_instance worker: mounts across
users happen in the node's database.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

import flowplex
from flowplex import Client, FlowInstanceError, UnknownInstanceError, identity, serving
from flowplex.workers import run_dispatch_worker_thread, run_get_instance_worker_thread

ATOMIC = "flowplex.examples.ReverseNumberAtomicFlow"
SEQUENTIAL = "flowplex.examples.ReverseNumberSequentialFlow"
TIMEOUT = 10.0


@pytest.fixture
def users(tmp_path: Path, db_url: str) -> Iterator[list[Client]]:
    """Two users on a fresh node, each with a dispatch worker thread; closed after the test."""
    cls = flowplex.start_node_with_users(2, path=tmp_path, db=db_url)
    for cl in cls:
        run_dispatch_worker_thread(cl)
        run_get_instance_worker_thread(cl)  # accepted for aiflows scripts; a no-op
    yield cls
    cls[0].node.close()


def ask(proxy: flowplex.FlowProxy, data: dict[str, object]) -> dict[str, object]:
    """Send ``data`` to ``proxy`` and wait (bounded) for the reply data."""
    return proxy.get_reply_future(proxy.package_input_message(data)).get_data(timeout=TIMEOUT)


def subflows_at(user: Client) -> dict[str, object]:
    """Config overrides pointing both subflows of the sequential flow at ``user``."""
    return {
        "subflows_config": {
            "first_reverse_flow": {"user_id": user.get_user_id()},
            "second_reverse_flow": {"user_id": user.get_user_id()},
        }
    }


def test_user_ids_are_distinct_ed25519_public_keys(users: list[Client]) -> None:
    """A user id is the 64-hex raw Ed25519 public key of the user's private key (in its key
    file, never in the node's tables)."""
    ids = [cl.get_user_id() for cl in users]
    assert len(set(ids)) == 2
    records = {u.user_id: u for u in users[0].node.backend.list_users()}
    assert [u.user_id for u in users[0].node.backend.list_users()] == ids
    for user_id in ids:
        assert len(user_id) == 64
        assert int(user_id, 16) >= 0 and user_id == user_id.lower()
        assert identity.is_user_id(user_id)
        assert "private_key" not in records[user_id].__dataclass_fields__
        handle = next(cl for cl in users if cl.user_id == user_id)
        key = Ed25519PrivateKey.from_private_bytes(handle.key.private_key)
        public = key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        assert public.hex() == user_id


def test_seed_001_composite_over_another_users_singleton(users: list[Client]) -> None:
    """User 1's composite uses user 0's singleton for both subflows: 1234 gives 1234."""
    u0, u1 = users
    # In [4]: user 0 serves the atomic flow as a singleton.
    assert serving.serve_flow(u0, ATOMIC, "reverse_number_atomic", singleton=True) is True
    # In [6]: user 1 serves the composite.
    assert serving.serve_flow(u1, SEQUENTIAL, "reverse_number_sequential") is True

    # In [7]: user 1 mounts it with both subflows pointed at user 0.
    flow = serving.get_flow_instance(
        u1, "reverse_number_sequential", user_id="local", config_overrides=subflows_at(u0)
    )
    config = u1.node.backend.get_instance(flow.get_instance_id()).config
    first = config["subflows_config"]["first_reverse_flow"]["flow_id"]
    second = config["subflows_config"]["second_reverse_flow"]["flow_id"]
    assert first == second, "both subflows share user 0's singleton instance"

    # In [8]: the end-to-end reply.
    assert ask(flow, {"id": 0, "number": 1234}) == {"output_number": 1234}

    # The singleton belongs to user 0, mounted by user 1; the composite is user 1's own.
    assert serving.get_flow_instance_metadata(u0, first) == {
        "flow_endpoint": "reverse_number_atomic",
        "user_id": u1.get_user_id(),
    }
    assert serving.get_flow_instance_metadata(u1, flow.get_instance_id()) == {
        "flow_endpoint": "reverse_number_sequential",
        "user_id": "local",
    }
    # In [9]-[10]: user 1 mounts user 0's endpoint directly: the same singleton, reversed once.
    remote = serving.get_flow_instance(u1, "reverse_number_atomic", user_id=u0.get_user_id())
    assert remote.get_instance_id() == first
    assert remote.user_id == u0.get_user_id()
    assert ask(remote, {"id": 0, "number": 1234}) == {"output_number": 4321}

    # In [12]-[13]: user 0's tree shows mounts/<user 1 id>/<id>/; user 1's shows local/.
    tree0 = serving.format_served_flows(u0)
    assert (
        f"   mounts/\n     {u1.get_user_id()}/\n       {first}/\n"
        "         init\n         config_overrides\n         state"
    ) in tree0
    assert serving.format_flow_instances(u0).split() == [first]
    tree1 = serving.format_served_flows(u1)
    assert f"     local/\n       {flow.get_instance_id()}/\n" in tree1
    assert serving.format_flow_instances(u1).split() == [flow.get_instance_id()]
    assert "reverse_number_atomic" not in tree1


def test_mounting_another_users_endpoint_directly(users: list[Client]) -> None:
    """In [9]-[10]: user 1 mounts user 0's served singleton by user id: 1234 gives 4321."""
    u0, u1 = users
    serving.serve_flow(u0, ATOMIC, "reverse_number_atomic", singleton=True)
    composite_sub = serving.get_flow_instance(u0, "reverse_number_atomic")
    remote = serving.get_flow_instance(u1, "reverse_number_atomic", user_id=u0.get_user_id())
    assert remote.user_id == u0.get_user_id()
    assert remote.get_instance_id() == composite_sub.get_instance_id()
    assert ask(remote, {"id": 0, "number": 1234}) == {"output_number": 4321}
    # user 1 serves nothing at that endpoint.
    with pytest.raises(FlowInstanceError, match=r"Not serving at reverse_number_atomic\."):
        serving.get_flow_instance(u1, "reverse_number_atomic")


def test_non_singleton_remote_mount_is_recorded_under_the_client(users: list[Client]) -> None:
    """A user 1 mount of a non-singleton user 0 endpoint is user 0's instance, client user 1."""
    u0, u1 = users
    serving.serve_flow(u0, "testflows.CounterFlow", "counter")
    remote = serving.get_flow_instance(u1, "counter", user_id=u0.get_user_id())
    assert ask(remote, {"i": 5}) == {"count": 1}
    record = u0.node.backend.get_instance(remote.get_instance_id())
    assert (record.user_id, record.client_id) == (u0.get_user_id(), u1.get_user_id())
    assert serving.get_flow_state(u0, remote.get_instance_id()) == {"count": 1, "seen": [5]}


def test_subflow_with_an_invalid_user_id(users: list[Client]) -> None:
    """A subflow whose user_id is not a user id fails the mount with "Invalid participant id"."""
    u0, u1 = users
    serving.serve_flow(u1, SEQUENTIAL, "reverse_number_sequential")
    overrides = {"subflows_config": {"first_reverse_flow": {"user_id": "abc"}}}
    with pytest.raises(FlowInstanceError) as excinfo:
        serving.get_flow_instance(u1, "reverse_number_sequential", config_overrides=overrides)
    text = str(excinfo.value)
    assert "Failed to get instance of subflow first_reverse_flow." in text
    assert "Invalid participant id abc" in text
    assert u1.node.backend.list_instances(u1.get_user_id()) == []
    assert u1.node.backend.list_instances(u0.get_user_id()) == []


def test_remote_subflow_not_served_by_that_user(users: list[Client]) -> None:
    """Subflows at user 0, who serves nothing: the error names user 0 and the endpoint."""
    u0, u1 = users
    serving.serve_flow(u1, SEQUENTIAL, "reverse_number_sequential")
    serving.serve_flow(u1, ATOMIC, "reverse_number_atomic")  # user 1's own does not count
    with pytest.raises(FlowInstanceError) as excinfo:
        serving.get_flow_instance(u1, "reverse_number_sequential", config_overrides=subflows_at(u0))
    text = str(excinfo.value)
    assert (
        f"Failed to get flow instance at reverse_number_atomic served by user "
        f"{u0.get_user_id()}.\nMessage: Not serving at reverse_number_atomic." in text
    )
    assert u1.node.backend.list_instances(u1.get_user_id()) == []


def test_users_cannot_touch_each_others_endpoints_or_state(users: list[Client]) -> None:
    """User 1 can neither delete nor unserve user 0's endpoint, nor read its instance."""
    u0, u1 = users
    serving.serve_flow(u0, "testflows.CounterFlow", "counter")
    proxy = serving.get_flow_instance(u0, "counter", initial_state={"count": 3})
    flow_id = proxy.get_instance_id()

    assert serving.unserve_flow(u1, "counter") is False
    assert serving.delete_flow_endpoint(u1, "counter") == []
    assert serving.delete_all_flow_endpoints(u1) == []
    assert serving.delete_flow_instance(u1, flow_id) is False
    assert serving.get_flow_instance_metadata(u1, flow_id) is None
    with pytest.raises(UnknownInstanceError):
        serving.get_flow_state(u1, flow_id)
    assert serving.is_flow_served(u1, "counter") is False
    assert serving.format_served_flows(u1) == ""
    assert serving.format_flow_instances(u1) == ""

    # Everything of user 0 is intact.
    assert serving.is_flow_served(u0, "counter") is True
    assert serving.get_flow_state(u0, flow_id) == {"count": 3, "seen": []}
    assert serving.get_flow_instance_metadata(u0, flow_id) == {
        "flow_endpoint": "counter",
        "user_id": "local",
    }
    assert ask(proxy, {"i": 1}) == {"count": 4}


def test_same_endpoint_name_for_two_users_is_two_endpoints(users: list[Client]) -> None:
    """Endpoints are per user: both users can serve "rev", and deleting one keeps the other."""
    u0, u1 = users
    assert serving.serve_flow(u0, ATOMIC, "rev") is True
    assert serving.serve_flow(u1, "testflows.EchoFlow", "rev") is True
    p0 = serving.get_flow_instance(u0, "rev")
    p1 = serving.get_flow_instance(u1, "rev")
    assert ask(p0, {"number": 12}) == {"output_number": 21}
    assert ask(p1, {"number": 12}) == {"number": 12}
    assert serving.delete_flow_endpoint(u1, "rev") == [p1.get_instance_id()]
    assert serving.is_flow_served(u0, "rev") is True
    assert ask(p0, {"number": 34}) == {"output_number": 43}


def test_reopening_the_node_returns_the_same_users_in_order(
    tmp_path: Path, durable_db: str
) -> None:
    """start_node_with_users on the same path/db after closing gives the same users, first."""
    cls = flowplex.start_node_with_users(2, path=tmp_path, db=durable_db)
    ids = [cl.get_user_id() for cl in cls]
    serving.serve_flow(cls[0], ATOMIC, "reverse_number_atomic", singleton=True)
    cls[0].node.close()

    again = flowplex.start_node_with_users(2, path=tmp_path, db=durable_db)
    try:
        assert [cl.get_user_id() for cl in again] == ids
        assert flowplex.start_node(path=tmp_path, db=durable_db).get_user_id() == ids[0]
        assert serving.is_flow_served(again[0], "reverse_number_atomic")
        # Asking for more users keeps the existing ones first and adds a new one.
        three = flowplex.start_node_with_users(3, path=tmp_path, db=durable_db)
        assert [cl.get_user_id() for cl in three[:2]] == ids
        assert three[2].get_user_id() not in ids
    finally:
        again[0].node.close()


def test_start_node_with_users_rejects_bad_counts(tmp_path: Path, db_url: str) -> None:
    """num_users must be a positive integer."""
    for bad in (0, -1, True, 1.5, "2"):
        with pytest.raises(ValueError, match="num_users"):
            flowplex.start_node_with_users(bad, path=tmp_path, db=db_url)  # type: ignore[arg-type]


def test_sign_and_verify_round_trip(users: list[Client]) -> None:
    """A signature by a user's key verifies for that user and payload only."""
    u0, u1 = users
    keys = {u.user_id: u.key.private_key for u in users}
    payload = b'{"flow_endpoint": "reverse_number_atomic"}'
    signature = identity.sign(keys[u0.get_user_id()], payload)
    assert identity.verify(u0.get_user_id(), payload, signature) is True
    assert identity.verify(u0.get_user_id(), payload + b" ", signature) is False
    assert identity.verify(u0.get_user_id(), payload.replace(b"atomic", b"atomik"), signature) is (
        False
    )
    assert identity.verify(u1.get_user_id(), payload, signature) is False
    assert identity.verify("abc", payload, signature) is False
    tampered = bytes([signature[0] ^ 1]) + signature[1:]
    assert identity.verify(u0.get_user_id(), payload, tampered) is False
    with pytest.raises(flowplex.ConfigurationError):
        identity.sign(b"short", payload)
