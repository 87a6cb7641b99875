"""The composition root: ``NodeServer`` builds what ``flowplex up`` runs, in one app."""

from __future__ import annotations

from pathlib import Path

import pytest

import flowplex
from flowplex import serving
from flowplex.artifacts import Version
from flowplex.errors import ConfigurationError
from flowplex.server import NodeServer, start_dispatch_workers
from mesh_helpers import OPERATOR, AppClient
from waiting import wait_for

ATOMIC = "flowplex.examples.ReverseNumberAtomicFlow"
# Advertised only: requests go through the app in-process. Loopback is listed as localhost.
URL = "http://127.0.0.1:3399"
LISTED = "http://localhost:3399"


def test_the_app_serves_listing_op_store_and_workers(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path}/node.db"
    cl = flowplex.start_node(path=tmp_path, db=db)
    serving.serve_flow(cl, ATOMIC, "reverse")
    with (
        NodeServer(URL, db, tmp_path, workers=2) as server,
        AppClient(server.app, OPERATOR) as client,
    ):
        assert len(server.dispatch_workers) == 2
        assert all(w.is_alive() for w in server.dispatch_workers)
        rows = wait_for(lambda: client.get("/flows").json()["items"], "the node's flows listed")
        assert [(r["node"], r["url"], r["name"]) for r in rows] == [
            (LISTED, "/endpoints/reverse", "ReverseNumber")
        ]
        status = client.get("/").json()
        assert (status["node"], status["registry"]) == (True, True)
        # The node's workers run a message sent by this process, which runs none itself.
        flow = serving.get_flow_instance(cl, "reverse")
        future = flow.get_reply_future(flow.package_input_message({"number": 12}))
        assert future.get_data(timeout=30) == {"output_number": 21}
        # The op store answers under /opstore, its bytes in the home.
        version = str(Version())
        registered = client.post(
            "/opstore/v1/register_valid_link",
            json={"upstream_op_name": "model", "upstream_op_version": version},
        )
        assert registered.status_code == 200, registered.text
        listed = client.post(
            "/opstore/v1/get_all_versions_of_op", json={"desired_op_name": "model"}
        )
        assert listed.status_code == 200, listed.text
        assert version in listed.text
        workers = list(server.dispatch_workers)
    # Leaving the lifespan stopped the workers; leaving the block closed the node.
    assert not any(w.is_alive() for w in workers)
    assert server.node.closed


def test_a_bad_database_fails_before_anything_runs(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="mysql"):
        NodeServer(URL, "mysql://nowhere/db", tmp_path)
    with pytest.raises(ConfigurationError, match="workers must be 0 or more"):
        NodeServer(URL, f"sqlite:///{tmp_path}/n.db", tmp_path, workers=-1)


def test_start_dispatch_workers_registers_them_with_the_node(tmp_path: Path) -> None:
    cl = flowplex.start_node(path=tmp_path, db=f"sqlite:///{tmp_path}/n.db")
    serving.serve_flow(cl, ATOMIC, "reverse")
    workers = start_dispatch_workers(cl.node, 2)
    assert set(workers) <= set(cl.node.workers)
    flow = serving.get_flow_instance(cl, "reverse")
    future = flow.get_reply_future(flow.package_input_message({"number": 34}))
    assert future.get_data(timeout=30) == {"output_number": 43}
    cl.node.close()
    assert not any(w.is_alive() for w in workers)
    with pytest.raises(ConfigurationError, match="0 or more"):
        start_dispatch_workers(cl.node, -1)


def test_the_dashboard_sends_test_messages_for_this_machine_only(tmp_path: Path) -> None:
    import re

    db = f"sqlite:///{tmp_path}/node.db"
    cl = flowplex.start_node(path=tmp_path, db=db)
    serving.serve_flow(cl, ATOMIC, "reverse")
    flow_id = serving.get_flow_instance(cl, "reverse").get_instance_id()
    page = f"/ui/instances/{flow_id}"
    html = {"Accept": "text/html"}
    with NodeServer(URL, db, tmp_path, workers=1) as server:
        with AppClient(server.app, client=("10.1.2.3", 40000)) as remote:
            shown = remote.get(page, headers=html)
            assert shown.status_code == 200  # looking is fine from anywhere
            token = re.search(r'name="token" value="([^"]+)"', shown.text)
            assert token is not None
            form = {"data": '{"number": 12}', "timeout": "20", "token": token[1]}
            refused = remote.post(page + "/send", data=form)
            assert refused.status_code == 403
            assert "this machine only" in refused.json()["detail"]
        with AppClient(server.app, client=("::1", 40001)) as local:
            sent = local.post(page + "/send", data=form)
            assert sent.status_code == 200, sent.text
            assert "21" in sent.text
