"""The node HTTP API in-process (the ASGI app, real SQLite node, signed requests): every route
answers client mistakes with 4xx JSON ``detail``, owners only read and delete, replies come
synchronously, by polling and as server-sent events."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import flowplex
from flowplex import serving
from flowplex.identity import KeyPair, generate_key_pair
from flowplex.messages import FlowMessage
from flowplex.runtime import Client, local_key
from flowplex.server import create_app, start_dispatch_workers
from flowplex.server._network import network_router
from mesh_helpers import AppClient

ATOMIC = "flowplex.examples.ReverseNumberAtomicFlow"


_OPEN: list[AppClient] = []


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Client]:
    cl = flowplex.start_node(path=tmp_path, db=f"sqlite:///{tmp_path}/node.db")
    serving.serve_flow(cl, ATOMIC, "reverse")
    start_dispatch_workers(cl.node, 1)
    yield cl
    while _OPEN:
        _OPEN.pop().__exit__(None, None, None)
    cl.node.close()


def client(cl: Client, key: KeyPair | None = None) -> AppClient:
    """A client of the node API of ``cl``'s node, signing as ``key`` (closed after the test)."""
    http = AppClient(create_app(routers=[network_router(cl.node)]), key).__enter__()
    _OPEN.append(http)
    return http


def message(data: dict[str, Any], **reply: Any) -> dict[str, Any]:
    return FlowMessage(data=data, reply_data=reply or {"mode": "no_reply"}).to_dict()


def mount(http: AppClient, **body: Any) -> str:
    answer = http.post("/endpoints/reverse/instances", json=body)
    assert answer.status_code == 201, answer.text
    return str(answer.json()["flow_id"])


def test_the_routes_are_in_openapi(node: Client) -> None:
    paths = client(node).get("/openapi.json").json()["paths"]
    for path in (
        "/endpoints/{endpoint}",
        "/endpoints/{endpoint}/instances",
        "/instances/{flow_id}/messages",
        "/instances/{flow_id}",
        "/replies/{future_id}",
        "/replies/{future_id}/events",
        "/replies",
    ):
        assert path in paths


def test_a_message_waits_for_its_reply_or_is_polled(node: Client) -> None:
    key = generate_key_pair()
    http = client(node, key)
    flow_id = mount(http)
    answer = http.post(
        f"/instances/{flow_id}/messages",
        params={"wait": 30},
        json={"message": message({"number": 12}, mode="future", future_id="one")},
    )
    assert answer.headers["content-type"] == "application/json"
    sent = answer.json()
    # The stored reply goes out as is, inside the same answer as a message without one.
    assert set(sent) == {"message_id", "accepted", "future_id", "reply"}
    assert sent["accepted"] is True and sent["future_id"] == "one"
    assert sent["reply"]["data"] == {"output_number": 21}
    # Answered, the reply is not kept for anyone to read again.
    assert http.get("/replies/one").json() == {"status": "pending", "reply": None}
    http.post(
        f"/instances/{flow_id}/messages",
        json={"message": message({"number": 345}, mode="future", future_id="two")},
    )
    polled = http.get("/replies/two", params={"wait": 30}).json()
    assert polled["status"] == "done" and polled["reply"]["data"] == {"output_number": 543}
    assert http.get("/replies/two").json() == {"status": "pending", "reply": None}
    # Another user cannot read a reply sent to this one, even knowing its future id.
    http.post(
        f"/instances/{flow_id}/messages",
        json={"message": message({"number": 6}, mode="future", future_id="three")},
    )
    other = client(node, generate_key_pair())
    assert other.get("/replies/three", params={"wait": 0.2}).json()["status"] == "pending"
    text = http.get("/replies/three/events", params={"wait": 30}).text
    assert "event: reply" in text and '"output_number":6' in text


def test_client_mistakes_answer_4xx_with_detail(node: Client) -> None:
    key = generate_key_pair()
    http = client(node, key)
    flow_id = mount(http)
    post = f"/instances/{flow_id}/messages"
    cases = [
        (http.post("/endpoints/nothing/instances", json={}), 404),
        (http.post("/endpoints/reverse/instances", json={"initial_state": 3}), 422),
        (http.post("/endpoints/reverse/instances", json={"user_id": "nobody"}), 422),
        (http.post("/endpoints/reverse/instances", json={"user_id": "ab" * 32}), 404),
        (http.get("/endpoints/nothing"), 404),
        (http.post("/instances/nope/messages", json={"message": message({})}), 404),
        (http.post(post, json={"message": {"no": "data"}}), 422),
        (http.post(post, json={"message": message({}, mode="push", flow_id="x")}), 422),
        (http.post(post, json={"message": message({}, mode="future")}), 422),
        (http.post(post, json={"message": message({}), "reply_to": "ftp://x"}), 422),
        (http.post(post, params={"wait": 1000}, json={"message": message({})}), 422),
        (http.post("/replies", json={"reply": message({})}), 422),
        (http.get("/instances/nope"), 404),
        (http.request("DELETE", "/instances/nope"), 404),
    ]
    push = FlowMessage(data={}, is_reply=True, reply_data={"mode": "push", "flow_id": "nope"})
    cases.append((http.post("/replies", json={"reply": push.to_dict()}), 404))
    # A reply pushed into an instance that has no subflow served by the signer.
    push = push.replace(reply_data={"mode": "push", "flow_id": flow_id})
    cases.append((http.post("/replies", json={"reply": push.to_dict()}), 403))
    for answer, status in cases:
        assert answer.status_code == status, (answer.request.url, answer.text)
        assert "detail" in answer.json()


def test_the_message_route_checks_its_query_and_body_as_documented(node: Client) -> None:
    """The message route reads its query and body itself: mistakes are answered as FastAPI
    answers them elsewhere (422, each problem located), and the signature is checked first."""
    http = client(node, generate_key_pair())
    post = f"/instances/{mount(http)}/messages"
    body = {"message": message({})}
    where = {
        "query wait": http.post(post, params={"wait": "soon"}, json=body),
        "query wait (negative)": http.post(post, params={"wait": -1}, json=body),
        "body": http.post(post, content=b"{not json", headers={"content-type": "application/json"}),
        "body message": http.post(post, json={"reply_to": None}),
        "body reply_to": http.post(post, json={"message": message({}), "reply_to": 3}),
    }
    for expected, answer in where.items():
        assert answer.status_code == 422, (expected, answer.text)
        located = [" ".join(str(part) for part in e["loc"][:2]) for e in answer.json()["detail"]]
        assert expected.split(" (")[0] in located, (expected, located)
    unsigned = client(node).post(post, params={"wait": "soon"}, json={})
    assert unsigned.status_code == 401 and "sign" in unsigned.json()["detail"]


def test_two_servers_of_an_endpoint_are_told_apart(node: Client) -> None:
    other = node.node.add_user()
    serving.serve_flow(other, ATOMIC, "reverse")
    http = client(node, generate_key_pair())
    assert http.post("/endpoints/reverse/instances", json={}).status_code == 409
    chosen = http.post("/endpoints/reverse/instances", json={"user_id": other.get_user_id()})
    assert chosen.json()["user_id"] == other.get_user_id()
    assert sorted(http.get("/endpoints/reverse").json()["servers"]) == sorted(
        [node.get_user_id(), other.get_user_id()]
    )


def test_owners_only_read_and_delete(node: Client) -> None:
    mounter = generate_key_pair()
    http = client(node, mounter)
    flow_id = mount(http, initial_state={"note": "mine"})
    stranger = client(node, generate_key_pair())
    assert stranger.get(f"/instances/{flow_id}").status_code == 403
    assert stranger.request("DELETE", f"/instances/{flow_id}").status_code == 403
    body = {"message": message({"number": 1})}
    assert stranger.post(f"/instances/{flow_id}/messages", json=body).status_code == 403
    info = http.get(f"/instances/{flow_id}").json()
    assert info["state"]["note"] == "mine" and info["client_id"] == mounter.user_id
    # The user serving it reads it too, signing with the node's key for that user.
    server = client(node, local_key(node.node, node.get_user_id()))
    assert server.get(f"/instances/{flow_id}").status_code == 200
    assert http.post(f"/instances/{flow_id}/messages", json=body).status_code == 200
    assert http.request("DELETE", f"/instances/{flow_id}").status_code == 204
    assert http.get(f"/instances/{flow_id}").status_code == 404
    # The route knew the instance (it had messaged it): it finds out it is gone all the same.
    again = {"message": message({"number": 2})}
    assert http.post(f"/instances/{flow_id}/messages", json=again).status_code == 404


def test_unsigned_calls_are_refused(node: Client) -> None:
    http = client(node)
    assert http.post("/endpoints/reverse/instances", json={}).status_code == 401
    assert http.get("/endpoints/reverse").status_code == 401


FINITE = st.floats(allow_nan=False, allow_infinity=False)
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | FINITE | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)
MODES = st.sampled_from(["future", "push", "no_reply", "storage", "bogus"])
REPLY_DATA = st.fixed_dictionaries(
    {"mode": MODES}, optional={"future_id": JSON | st.text(max_size=40), "flow_id": JSON}
)
FIELDS = st.fixed_dictionaries(
    {"data": st.dictionaries(st.text(max_size=5), JSON, max_size=3)},
    optional={
        "reply_data": REPLY_DATA | JSON,
        "message_id": JSON,
        "created_at": JSON | st.text(max_size=30),
        "is_reply": JSON,
        "src_flow_id": JSON,
        "private_keys": JSON,
        "error": JSON,
    },
)


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(message=FIELDS, state=JSON, reply_to=st.none() | st.text(max_size=12))
def test_signed_nonsense_never_gets_a_5xx(
    tmp_path_factory: pytest.TempPathFactory, message: dict[str, Any], state: Any, reply_to: Any
) -> None:
    tmp = tmp_path_factory.mktemp("fuzz")
    cl = flowplex.start_node(path=tmp, db=f"sqlite:///{tmp}/node.db")
    serving.serve_flow(cl, ATOMIC, "reverse")
    try:
        http = client(cl, generate_key_pair())
        mounted = http.post("/endpoints/reverse/instances", json={"initial_state": state})
        assert mounted.status_code < 500, mounted.text
        flow_id = mount(http)
        answers = [
            http.post(
                f"/instances/{flow_id}/messages",
                json={"message": message, "reply_to": reply_to},
            ),
            http.post("/replies", json={"reply": message}),
            http.post("/endpoints/reverse/instances", json={"config_overrides": {"x": state}}),
        ]
        for answer in answers:
            assert answer.status_code < 500, (answer.request.url, answer.text)
            assert "detail" in answer.json() or answer.status_code < 300
    finally:
        while _OPEN:
            _OPEN.pop().__exit__(None, None, None)
        cl.node.close()
