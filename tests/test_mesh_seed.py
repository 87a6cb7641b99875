"""Seed 002 end to end: registries and nodes in real processes on loopback ports."""

from __future__ import annotations

import multiprocessing
from pathlib import Path
from typing import Any

import httpx

from flowplex._httpsign import SigningAuth
from mesh_helpers import (
    OPERATOR,
    free_url,
    get,
    html_rows,
    is_idle,
    loader1,
    loader2,
    loader3,
    services,
    start,
    stop,
    wait_idle,
    wait_until,
)

SIMULATED = {
    "url": "http://localhost:3380",
    "flows": [
        {"url": "/test1", "name": "Test 1"},
        {"url": "/test2", "name": "Test 2"},
        {"url": "/test2", "name": "Test 3"},
        {"url": "/test4", "name": "Test 4"},
    ],
}

SIGNED = SigningAuth(OPERATOR)


def items(url: str) -> list[dict[str, Any]]:
    return get(url, "/flows", pp=100)["items"]  # type: ignore[no-any-return]


def without_registry(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in row.items() if k != "registry"} for row in rows]


def test_seed_002_narrative(tmp_path: Path) -> None:  # noqa: PLR0915 - the seed, in order
    registry1, node1, registry2, node2 = (free_url() for _ in range(4))
    registry1kw: dict[str, Any] = {
        "url": registry1,
        "organization": "registry1",
        "node": False,
        "registry": True,
        "cache": str(tmp_path / "registry1.json"),
        "reset": True,
    }
    node1kw: dict[str, Any] = {
        "url": node1,
        "connect": [registry1],
        "organization": "node1",
        "node": True,
        "registry": False,
        "provider": False,
        "reload": False,
        "loader": loader1,
    }
    with services() as procs:
        # -- registry1 startup: empty, idle, nothing connected ----------------------------------
        procs.append(start(**registry1kw))
        status = get(registry1)
        assert status["registry"] is True and status["node"] is False
        assert status["connection"] == {} and status["idle"] is True
        assert get(registry1, "/flows") == {
            "total": 0,
            "filtered": 0,
            "p": 0,
            "pp": 10,
            "items": [],
            "by": "name, node, url",
            "q": None,
        }
        page = httpx.get(f"{registry1}/flows?format=html").text
        assert html_rows(page) == [["no flows"]]
        assert get(registry1, "/_cache") == {
            "url": registry1,
            "organization": "registry1",
            "feed": True,
            "nodes": {},
            "providers": {},
            "peers": {},
            "keys": {},
        }
        assert get(registry1, "/counts") == {
            "total": 0,
            "node": {},
            "organization": {},
            "tags": {},
        }

        # -- a simulated node with duplicate URLs: the last one wins -----------------------------
        resp = httpx.post(f"{registry1}/register", json=SIMULATED, auth=SIGNED)
        assert resp.status_code == 200
        assert resp.json()["message"] == [
            "registered node http://localhost:3380 (first visit)",
            "received 4 flows, registered 3 flows",
        ]
        rows = items(registry1)
        assert [(r["url"], r["name"]) for r in rows] == [
            ("/test1", "Test 1"),
            ("/test2", "Test 3"),
            ("/test4", "Test 4"),
        ]
        assert rows[0]["author"] == "missing author"
        assert rows[0]["description"] == "missing description"
        assert rows[0]["tags"] == []
        assert rows[0]["created"] == rows[0]["modified"] == rows[0]["heartbeat"]

        # -- node1 registers with registry1 -----------------------------------------------------
        n1 = start(**node1kw)
        procs.append(n1)
        wait_idle(node1)
        assert get(node1)["connection"][registry1] is not None
        assert httpx.get(f"{node1}/_cache").status_code == 404
        assert httpx.post(f"{node1}/register", json=SIMULATED, auth=SIGNED).status_code == 404
        own = items(node1)
        assert len(own) == 1
        assert own[0]["registry"] == own[0]["node"] == node1
        assert own[0]["created"] is own[0]["modified"] is own[0]["heartbeat"] is None
        assert get(node1, "/counts") == {
            "total": 1,
            "node": {node1: 1},
            "organization": {"node1": 1},
            "tags": {},
        }
        mine = [r for r in items(registry1) if r["node"] == node1]
        assert [r["url"] for r in mine] == ["/mytest"]
        assert mine[0]["registry"] == registry1
        assert mine[0]["created"] == mine[0]["modified"] == mine[0]["heartbeat"]
        first = mine[0]

        # -- node1 restart: created kept, modified and heartbeat advance --------------------------
        stop(n1)
        n1 = start(**node1kw)
        procs.append(n1)
        wait_idle(node1)
        again = next(r for r in items(registry1) if r["node"] == node1)
        assert again["created"] == first["created"]
        assert again["modified"] > first["modified"]
        assert again["heartbeat"] == again["modified"]

        # -- registry1 restart from its cache: the same listing, timestamps included ---------------
        before = items(registry1)
        stop(procs[0])
        registry1kw["reset"] = False
        procs.append(start(**registry1kw))
        assert items(registry1) == before

        # -- registry2 connects to registry1: both list the same flows -----------------------------
        registry2kw: dict[str, Any] = {
            "url": registry2,
            "connect": [registry1],
            "organization": "registry2",
            "node": False,
            "registry": True,
            "cache": str(tmp_path / "registry2.json"),
            "reset": True,
        }
        procs.append(start(**registry2kw))
        wait_idle(registry1, registry2)
        assert get(registry2)["connection"][registry1] is not None
        rows1, rows2 = items(registry1), items(registry2)
        assert len(rows1) == 4
        assert without_registry(rows1) == without_registry(rows2)
        assert {r["registry"] for r in rows2} == {registry2}

        # -- node2 joins registry2 and is fed forward to registry1 ---------------------------------
        node2kw = {**node1kw, "url": node2, "connect": [registry2], "organization": "node2"}
        node2kw["loader"] = loader2
        procs.append(start(**node2kw))
        wait_until(lambda: is_idle(node2, registry2, registry1), what="node2 fed forward")
        rows1, rows2 = items(registry1), items(registry2)
        assert len(rows1) == 5
        assert without_registry(rows1) == without_registry(rows2)
        assert get(registry1, "/_stats")["updates_received"] == 1  # one update, no echo
        assert get(registry2, "/_stats")["updates_received"] == 0
        assert get(registry1, "/flows", q="organization=='node2'")["filtered"] == 1

        # -- node1 restarts with changed flows: both registries show the change --------------------
        created = next(r for r in rows1 if r["node"] == node1)["created"]
        stop(n1)
        node1kw["loader"] = loader3
        n1 = start(**node1kw)
        procs.append(n1)
        wait_until(lambda: is_idle(node1, registry1, registry2), what="node1 change broadcast")
        for registry in (registry1, registry2):
            rows = [r for r in items(registry) if r["node"] == node1]
            assert [(r["url"], r["description"], r["author"]) for r in rows] == [
                ("/mytest2", "This is a testing flow", "michi.rau@gmail.com")
            ]
            assert rows[0]["created"] == created
        assert without_registry(items(registry1)) == without_registry(items(registry2))

        # -- HTML on both: the same rows, apart from the registry column ---------------------------
        html1 = html_rows(
            httpx.get(f"{registry1}/flows", params={"pp": 100, "format": "html"}).text
        )
        html2 = html_rows(
            httpx.get(
                f"{registry2}/flows", params={"pp": 100}, headers={"Accept": "text/html"}
            ).text
        )
        assert len(html1) == 5
        assert [r[1:] for r in html1] == [r[1:] for r in html2]
        assert {r[0] for r in html1} == {registry1} and {r[0] for r in html2} == {registry2}

        # -- maps ----------------------------------------------------------------------------------
        map1, map2 = get(registry1, "/map"), get(registry2, "/map")
        assert node1 in map1["nodes"] and registry2 in map1["providers"]
        assert registry1 in map2["providers"]
        assert node1 in map2["providers"][registry1]["nodes"]
        assert node2 in map1["providers"][registry2]["nodes"]

    # -- everything terminates cleanly ------------------------------------------------------------
    assert all(not p.is_alive() for p in procs)
    assert multiprocessing.active_children() == []


def test_registry2_restart_keeps_peer_data(tmp_path: Path) -> None:
    registry1, registry2, node1 = free_url(), free_url(), free_url()
    r2kw: dict[str, Any] = {
        "url": registry2,
        "node": False,
        "registry": True,
        "connect": [registry1],
        "cache": str(tmp_path / "r2.json"),
        "reset": True,
    }
    with services() as procs:
        procs.append(start(url=registry1, node=False, registry=True))
        procs.append(start(url=node1, connect=[registry1], loader=loader1))
        r2 = start(**r2kw)
        procs.append(r2)
        wait_idle(node1, registry1, registry2)
        before = items(registry2)
        assert [r["node"] for r in before] == [node1]
        stop(r2)
        r2kw["reset"] = False
        procs.append(start(**r2kw))
        wait_idle(registry2)
        assert items(registry2) == before
        # With reset the listing starts empty, until registry1 feeds it again on connect.
        stop(procs[-1])
        r2kw["reset"] = True
        r2kw["connect"] = []
        procs.append(start(**r2kw))
        assert items(registry2) == []


def test_cycle_of_three_registries_applies_one_update_once_each() -> None:
    a, b, c = free_url(), free_url(), free_url()
    with services() as procs:
        # a -> b -> c -> a: every registry is a peer of the two others.
        for url, target in ((a, b), (b, c), (c, a)):
            procs.append(start(url=url, node=False, registry=True, connect=[target]))
        wait_idle(a, b, c)
        assert all(len(get(u, "/_stats")["peers"]) == 2 for u in (a, b, c))
        before = {u: get(u, "/_stats") for u in (a, b, c)}
        node = {"url": "http://127.0.0.1:9", "flows": [{"name": "only one"}]}
        resp = httpx.post(f"{a}/register", json=node, auth=SIGNED)
        assert sorted(resp.json()["message"][1:]) == sorted(
            [f"feed forward node to {b}", f"feed forward node to {c}"]
        )
        wait_idle(a, b, c)
        after = {u: get(u, "/_stats") for u in (a, b, c)}
        delta = {
            u: {
                k: after[u][k] - before[u][k]
                for k in ("updates_received", "updates_applied", "updates_sent")
            }
            for u in (a, b, c)
        }
        assert delta[a] == {"updates_received": 0, "updates_applied": 0, "updates_sent": 2}
        assert delta[b] == {"updates_received": 1, "updates_applied": 1, "updates_sent": 0}
        assert delta[c] == {"updates_received": 1, "updates_applied": 1, "updates_sent": 0}
        for u in (a, b, c):
            assert [r["url"] for r in items(u)] == ["/only-one"]


def test_node_started_before_its_registry_registers_once_it_is_up() -> None:
    registry, node = free_url(), free_url()
    with services() as procs:
        procs.append(start(url=node, connect=[registry], loader=loader1))
        status = get(node)
        assert status["idle"] is False and status["connection"] == {registry: None}
        procs.append(start(url=registry, node=False, registry=True))
        wait_idle(node)
        assert get(node)["connection"][registry] is not None
        assert [r["url"] for r in items(registry)] == ["/mytest"]


def test_connecting_to_a_service_that_is_no_registry_gives_up() -> None:
    other, node = free_url(), free_url()
    with services() as procs:
        procs.append(start(url=other, loader=loader1))  # a node: its /register is 404
        procs.append(start(url=node, connect=[other], loader=loader2))
        # A 404 stops the retries (kodo's rule): the node settles, unconnected.
        wait_idle(node)
        assert get(node)["connection"] == {other: None}


def test_node_re_registers_with_a_registry_that_started_afresh() -> None:
    registry, node = free_url(), free_url()
    with services() as procs:
        reg = start(url=registry, node=False, registry=True)
        procs.append(reg)
        procs.append(start(url=node, connect=[registry], loader=loader1, heartbeat_interval=0.1))
        wait_until(lambda: items(registry), what="node1 registered")
        stop(reg)
        procs.append(start(url=registry, node=False, registry=True))
        # The registry answers the node's next heartbeat with 404; the node registers again.
        wait_until(lambda: items(registry), what="node1 registered again")


def test_a_peer_that_forgot_us_is_resynced_by_connecting_again() -> None:
    registry1, registry2 = free_url(), free_url()
    with services() as procs:
        r1 = start(url=registry1, node=False, registry=True)
        procs.append(r1)
        procs.append(start(url=registry2, node=False, registry=True, connect=[registry1]))
        wait_idle(registry1, registry2)
        httpx.post(
            f"{registry2}/register",
            json={"url": "http://n:1", "flows": [{"name": "a"}]},
            auth=SIGNED,
        )
        wait_idle(registry2)
        assert [r["url"] for r in items(registry1)] == ["/a"]
        stop(r1)
        procs.append(start(url=registry1, node=False, registry=True))  # afresh: no peers
        assert items(registry1) == []
        # registry2's next update is refused (403: unknown sender); it connects again, and its
        # offer brings registry1 everything, not only the update.
        httpx.post(
            f"{registry2}/register",
            json={"url": "http://m:1", "flows": [{"name": "b"}]},
            auth=SIGNED,
        )
        wait_until(lambda: len(items(registry1)) == 2, what="registry1 resynced")
        wait_idle(registry1, registry2)
        assert [r["url"] for r in items(registry1)] == ["/a", "/b"]


def test_liveness_online_then_offline_then_online_again_across_the_mesh() -> None:
    registry, peer, node = free_url(), free_url(), free_url()
    fast = {"heartbeat_interval": 0.1, "offline_after": 0.6}
    with services() as procs:
        procs.append(start(url=registry, node=False, registry=True, **fast))
        procs.append(start(url=peer, node=False, registry=True, connect=[registry], **fast))
        n = start(url=node, connect=[registry], loader=loader1, **fast)
        procs.append(n)

        def status(at: str) -> str | None:
            rows = items(at)
            return rows[0]["status"] if rows else None

        for at in (registry, peer):  # the peer hears the heartbeats through the registry
            wait_until(lambda a=at: status(a) == "online", what=f"online at {at}")
            beat = items(at)[0]["heartbeat"]
            wait_until(lambda a=at, b=beat: items(a)[0]["heartbeat"] > b, what="a later beat")
        stop(n)
        for at in (registry, peer):
            wait_until(lambda a=at: status(a) == "offline", what=f"offline at {at}")
        assert get(registry, "/map")["nodes"][node]["status"] == "offline"
        procs.append(start(url=node, connect=[registry], loader=loader1, **fast))
        for at in (registry, peer):
            wait_until(lambda a=at: status(a) == "online", what=f"online again at {at}")


def test_the_map_lists_each_registry_s_direct_peers() -> None:
    # i connects to j and h, k to i; a node registers with h. Every /map lists the registries
    # it exchanges updates with, each with the nodes it sent; k hears of h only through i.
    j, h, i, k, node = (free_url() for _ in range(5))
    with services() as procs:
        procs.append(start(url=j, node=False, registry=True))
        procs.append(start(url=h, node=False, registry=True))
        procs.append(start(url=i, node=False, registry=True, connect=[j, h]))
        procs.append(start(url=k, node=False, registry=True, connect=[i]))
        procs.append(start(url=node, connect=[h], loader=loader1))
        registries = (h, i, j, k)
        wait_until(lambda: all(len(items(u)) == 1 for u in registries), what="node everywhere")
        maps = {u: get(u, "/map") for u in registries}
        assert list(maps[h]["providers"]) == [i]
        assert sorted(maps[i]["providers"]) == sorted([h, j, k])
        assert list(maps[j]["providers"]) == [i]
        assert list(maps[k]["providers"]) == [i]
        assert list(maps[h]["nodes"]) == [node]
        assert maps[k]["providers"][i]["nodes"][node]["registry"] == h
        listed = [without_registry(items(u)) for u in registries]
        assert all(rows == listed[0] for rows in listed)
