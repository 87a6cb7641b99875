"""Flows over the network, with real processes: each node its own ``flowplex up`` on 127.0.0.1.

User B serves flows on node Y; user A, on node X, finds them through a registry and composes
them (blocking and non-blocking styles), mounts them directly, and keeps getting exactly one
reply per message while node Y is killed and restarted. Unsigned and forged calls are refused.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import flowplex
from flowplex import FlowInstanceError, FlowProxy, serving
from flowplex.identity import generate_key_pair, sign_request
from flowplex.mesh import resolve
from flowplex.runtime import LINK_CLASS, Client, local_key
from netnodes import Service, node, registry
from waiting import wait_for

TESTS = Path(__file__).resolve().parent
ATOMIC = "flowplex.examples.ReverseNumberAtomicFlow"
BLOCKING = "flowplex.examples.ReverseNumberBlockingSequentialFlow"
NON_BLOCKING = "flowplex.examples.ReverseNumberSequentialFlow"
COUNTING = "netflows.CountingReverseFlow"
#: Bound on every wait for a reply (the tests never assert timings).
REPLY_TIMEOUT = 120.0


def _user(home: Path, db: str | None = None) -> Client:
    return flowplex.start_node(path=home, db=db)


def _remote_subflows(where: dict[str, str], user_id: str) -> dict[str, Any]:
    """Config overrides pointing both subflows of the ReverseNumber composites elsewhere."""
    keys = ("first_reverse_flow", "second_reverse_flow")
    return {"subflows_config": {k: {**where, "user_id": user_id} for k in keys}}


def _wait_listed(registry_url: str, endpoint: str) -> dict[str, Any]:
    def listed() -> dict[str, Any] | None:
        items = httpx.get(f"{registry_url}/flows", params={"pp": 100}, trust_env=False).json()
        rows = items["items"]
        url = f"/endpoints/{endpoint}"
        return next((dict(r) for r in rows if r["url"] == url and r["status"] == "online"), None)

    found: dict[str, Any] = wait_for(listed, f"{endpoint} listed at {registry_url}", 60)
    return found


def _ask(proxy: FlowProxy, number: int) -> int:
    future = proxy.get_reply_future(proxy.package_input_message({"number": number}))
    return int(future.get_data(timeout=REPLY_TIMEOUT)["output_number"])


@pytest.fixture
def mesh(tmp_path: Path, pg_url: str) -> Iterator[dict[str, Any]]:
    """A registry; node Y (SQLite) where user B serves; node X (PostgreSQL) where user A
    serves the two ReverseNumber composites. Both nodes register with the registry."""
    hub = registry(tmp_path / "registry")
    y = node(tmp_path / "y", connect=hub.url)
    y.args += ["--path", str(TESTS)]
    user_b = _user(y.home)
    serving.serve_flow(user_b, ATOMIC, "reverse_number_atomic", singleton=True)
    serving.serve_flow(user_b, COUNTING, "counting")
    x = node(tmp_path / "x", pg_url, connect=hub.url)
    hub.args += ["--peer", y.url, "--peer", x.url]  # the nodes' registries may connect
    hub.start()
    user_a = _user(x.home, pg_url)
    serving.serve_flow(user_a, BLOCKING, "twice_blocking")
    serving.serve_flow(user_a, NON_BLOCKING, "twice")
    started: list[Service] = [hub]
    try:
        started.append(y.start())
        started.append(x.start())
        yield {"registry": hub, "x": x, "y": y, "a": user_a, "b": user_b}
    finally:
        for service in reversed(started):
            service.stop()
        user_a.node.close()
        user_b.node.close()


def test_a_registry_listing_url_answers_for_its_flow(mesh: dict[str, Any]) -> None:
    row = _wait_listed(mesh["registry"].url, "reverse_number_atomic")
    with flowplex.connect(row["node"], local_key(mesh["a"].node, mesh["a"].get_user_id())) as cl:
        assert cl.url == mesh["y"].url.replace("127.0.0.1", "localhost")
    key = local_key(mesh["a"].node, mesh["a"].get_user_id())
    from flowplex.runtime import node_api

    answer = node_api(row["node"], key).request("GET", row["url"])
    assert answer["servers"] == [mesh["b"].get_user_id()]
    assert answer["flow_class_name"] == ATOMIC
    assert resolve("reverse_number_atomic", mesh["registry"].url) == (
        row["node"],
        "reverse_number_atomic",
    )


@pytest.mark.parametrize("endpoint", ["twice_blocking", "twice"])
def test_user_a_composes_user_b_flows_found_through_the_registry(
    mesh: dict[str, Any], endpoint: str
) -> None:
    _wait_listed(mesh["registry"].url, "reverse_number_atomic")
    where = {"registry": mesh["registry"].url, "flow_endpoint": "reverse_number_atomic"}
    user_a = mesh["a"]
    flow = serving.get_flow_instance(
        user_a, endpoint, config_overrides=_remote_subflows(where, mesh["b"].get_user_id())
    )
    assert [_ask(flow, n) for n in (1234, 5678, 91)] == [1234, 5678, 91]
    # The subflows are links to one singleton instance on node Y.
    config = user_a.node.backend.get_instance(flow.get_instance_id()).config
    links = [
        user_a.node.backend.get_instance(s["flow_id"]) for s in config["subflows_config"].values()
    ]
    assert all(link.flow_class_name == LINK_CLASS for link in links)
    remote_ids = {link.config["remote_flow_id"] for link in links}
    assert len(remote_ids) == 1


def test_a_listed_flow_mounts_by_name_at_registry(mesh: dict[str, Any]) -> None:
    _wait_listed(mesh["registry"].url, "counting")
    proxy = serving.get_flow_instance(mesh["a"], f"counting@{mesh['registry'].url}")
    assert [_ask(proxy, n) for n in (12, 345)] == [21, 543]
    send = proxy.package_input_message({"number": 6})
    proxy.send_message(send)  # fire and forget
    remote = flowplex.connect(mesh["y"].url, local_key(mesh["a"].node, mesh["a"].get_user_id()))
    wait_for(
        lambda: remote.get_instance(proxy.get_instance_id())["state"]["seen"] == [12, 345, 6],
        "the fire-and-forget message seen",
        REPLY_TIMEOUT,
    )
    with pytest.raises(FlowInstanceError, match="lists no flow"):
        serving.get_flow_instance(mesh["a"], f"nothing_here@{mesh['registry'].url}")


def test_connect_gives_the_local_proxy_api(mesh: dict[str, Any]) -> None:
    key = local_key(mesh["a"].node, mesh["a"].get_user_id())
    with flowplex.connect(mesh["y"].url, key) as cl:
        proxy = cl.get_flow_instance("counting", initial_state={"seen": [0]})
        future = proxy.get_reply_future(proxy.package_input_message({"number": 120}))
        assert future.get_data(timeout=REPLY_TIMEOUT) == {"output_number": 21}
        info = cl.get_instance(proxy.get_instance_id())
        assert info["state"] == {"seen": [0, 120]}
        assert info["client_id"] == key.user_id
        cl.delete_instance(proxy.get_instance_id())
        with pytest.raises(flowplex.RemoteError, match="404"):
            cl.get_instance(proxy.get_instance_id())
        with pytest.raises(FlowInstanceError, match="nobody serves"):
            cl.get_flow_instance("not_served")


def test_other_users_and_unsigned_calls_are_refused(mesh: dict[str, Any]) -> None:
    key = local_key(mesh["a"].node, mesh["a"].get_user_id())
    with flowplex.connect(mesh["y"].url, key) as cl:
        proxy = cl.get_flow_instance("counting")
    flow_id = proxy.get_instance_id()
    stranger = flowplex.connect(mesh["y"].url, generate_key_pair())
    with pytest.raises(flowplex.RemoteError, match="403"):
        stranger.get_instance(flow_id)
    with pytest.raises(flowplex.RemoteError, match="403"):
        stranger.delete_instance(flow_id)
    body = {"message": proxy.package_input_message({"number": 1}).to_dict()}
    unsigned = httpx.post(
        f"{mesh['y'].url}/instances/{flow_id}/messages", json=body, trust_env=False
    )
    assert unsigned.status_code == 401
    assert "detail" in unsigned.json()
    # Signed by a stranger who claims to be user A: the signature does not match A's key.
    path = f"/instances/{flow_id}/messages"
    raw = json.dumps(body).encode()
    forged = sign_request(stranger.key, "POST", path, raw)
    forged = {k: v.replace(stranger.user_id, key.user_id) for k, v in forged.items()}
    answer = httpx.post(
        f"{mesh['y'].url}{path}",
        content=raw,
        headers={**forged, "content-type": "application/json"},
        trust_env=False,
    )
    assert answer.status_code == 401, answer.text
    # A's own signature over another body does not carry this one.
    signed = sign_request(key, "POST", path, b'{"message": {"data": {}}}')
    answer = httpx.post(
        f"{mesh['y'].url}{path}",
        content=raw,
        headers={**signed, "content-type": "application/json"},
        trust_env=False,
    )
    assert answer.status_code == 401, answer.text


def test_node_y_killed_mid_stream_every_message_gets_one_reply(tmp_path: Path) -> None:
    """Node Y dies (SIGKILL) and comes back while messages flow: each gets exactly one reply,
    and each reaches Y's flow exactly once (its state lists every number once, in order)."""
    y = node(tmp_path / "y")
    y.args += ["--path", str(TESTS), "--lease", "3"]
    user_b = _user(y.home)
    serving.serve_flow(user_b, COUNTING, "counting")
    x = node(tmp_path / "x")
    x.args += ["--lease", "3"]
    user_a = _user(x.home)
    serving.serve_flow(user_a, NON_BLOCKING, "twice")
    try:
        y.start()
        x.start()
        where = {"node_url": y.url, "flow_endpoint": "counting"}
        flow = serving.get_flow_instance(
            user_a, "twice", config_overrides=_remote_subflows(where, user_b.get_user_id())
        )
        numbers = [100 * i + 17 for i in range(12)]
        futures = []
        for i, n in enumerate(numbers):
            if i == 4:
                y.kill()
            if i == 8:
                y.start()
            futures.append(flow.get_reply_future(flow.package_input_message({"number": n})))
            time.sleep(0.05)
        replies = [f.get_data(timeout=REPLY_TIMEOUT)["output_number"] for f in futures]
        assert replies == numbers
        config = user_a.node.backend.get_instance(flow.get_instance_id()).config
        key = local_key(user_a.node, user_a.get_user_id())
        with flowplex.connect(y.url, key) as cl:
            for sub, expected in (
                ("first_reverse_flow", numbers),
                ("second_reverse_flow", [int(str(n)[::-1]) for n in numbers]),
            ):
                link = user_a.node.backend.get_instance(config["subflows_config"][sub]["flow_id"])
                state = cl.get_instance(link.config["remote_flow_id"])["state"]
                assert state["seen"] == expected, sub
    finally:
        x.stop()
        y.stop()
        user_a.node.close()
        user_b.node.close()


def test_a_failed_mount_deletes_what_it_mounted_on_another_node(mesh: dict[str, Any]) -> None:
    """The first subflow mounts on node Y, the second cannot: the composite is not mounted,
    and the instance mounted for it on Y is deleted again."""
    user_b = mesh["b"]
    y_url = mesh["y"].url
    before = len(user_b.node.backend.list_instances(user_b.get_user_id(), "counting"))
    overrides = {
        "subflows_config": {
            "first_reverse_flow": {"node_url": y_url, "flow_endpoint": "counting"},
            "second_reverse_flow": {"node_url": y_url, "flow_endpoint": "served_nowhere"},
        }
    }
    with pytest.raises(FlowInstanceError, match="served_nowhere"):
        serving.get_flow_instance(mesh["a"], "twice_blocking", config_overrides=overrides)
    after = user_b.node.backend.list_instances(user_b.get_user_id(), "counting")
    assert len(after) == before


def test_a_retried_delivery_is_taken_once(mesh: dict[str, Any]) -> None:
    key = local_key(mesh["a"].node, mesh["a"].get_user_id())
    from flowplex.runtime import node_api

    api = node_api(mesh["y"].url, key)
    with flowplex.connect(mesh["y"].url, key) as cl:
        proxy = cl.get_flow_instance("counting")
    message = proxy.package_input_message({"number": 5})
    answers = []

    def send() -> None:
        answers.append(api.send(proxy.get_instance_id(), message)["accepted"])

    threads = [threading.Thread(target=send) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(answers) == [False, False, False, True]
    second = proxy.package_input_message({"number": 6})
    api.send(
        proxy.get_instance_id(), second.replace(reply_data={"mode": "future", "future_id": "f"})
    )
    assert api.reply("f", 30.0) is not None
    assert cl.get_instance(proxy.get_instance_id())["state"]["seen"] == [5, 6]


def test_an_engine_call_task_targets_a_flow_on_another_node(mesh: dict[str, Any]) -> None:
    from flowplex.engine import FlowEngine

    _wait_listed(mesh["registry"].url, "counting")
    spec = {
        "label": "caller",
        "tasks": [
            {
                "key": "call",
                "task_type": "call",
                "task_params": {
                    "flow_endpoint": "counting",
                    "registry": mesh["registry"].url,
                    "data": {"number": 2024},
                    "timeout": REPLY_TIMEOUT,
                },
            }
        ],
    }
    engine = FlowEngine(client=mesh["a"])
    flow = engine.flow_spec_to_flow(spec)
    deadline = time.monotonic() + REPLY_TIMEOUT
    while flow.status != "COMPLETED":
        assert time.monotonic() < deadline and flow.status != "FAILED", flow.tasks["call"]
        engine.tick_flow(flow)
        time.sleep(0.05)
    assert flow.tasks["call"]["data"]["reply"] == {"output_number": 4202}


def test_flows_command_lists_a_registry(mesh: dict[str, Any]) -> None:
    from typer.testing import CliRunner

    from flowplex.cli import app

    row = _wait_listed(mesh["registry"].url, "counting")
    runner = CliRunner()
    result = runner.invoke(
        app, ["flows", "--registry", mesh["registry"].url], env={"COLUMNS": "300"}
    )
    assert result.exit_code == 0, result.output
    assert f"{row['node']}/endpoints/counting" in result.output
    assert f"{row['node']}/endpoints/reverse_number_atomic" in result.output
    only = runner.invoke(
        app,
        ["flows", "--registry", mesh["registry"].url, "-q", 'name == "CountingReverse"'],
        env={"COLUMNS": "300"},
    )
    assert "/endpoints/counting" in only.output
    assert "reverse_number_atomic" not in only.output
    down = runner.invoke(app, ["flows", "--registry", "http://127.0.0.1:9"])
    assert isinstance(down.exception, flowplex.RemoteError)  # main() prints it as one line
    assert "did not answer" in str(down.exception)


def test_the_readme_scenario_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The README's two users on two nodes, found through a registry, as the page shows it
    (its folders and ports swapped for this test's)."""
    from docsnippets import README, python_blocks

    serve, compose = python_blocks("Flows over the network", README)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("FLOWPLEX_DB", raising=False)
    namespace: dict[str, Any] = {}
    exec(serve, namespace)
    y = node(tmp_path / "node-y")
    x = node(tmp_path / "node-x", peers=(y.url,))
    y.args += ["--connect", x.url]
    try:
        x.start()
        y.start()
        _wait_listed(x.url, "reverse_number_atomic")
        lines = compose.replace("http://127.0.0.1:8000", x.url).splitlines()
        # Each "# {...}" comment line is what the expression just above it gives.
        for i, line in enumerate(lines):
            if line.startswith("# {"):
                lines[i - 1] = f"results.append({lines[i - 1]})"
        namespace["results"] = results = []
        exec("\n".join(lines), namespace)
        assert results == [{"output_number": 1234}, {"output_number": 4321}]
    finally:
        y.stop()
        x.stop()
        namespace["a"].node.close()
        namespace["b"].node.close()
