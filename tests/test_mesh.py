"""The mesh's pure parts: records, the query language, listing, peering rules, the cache."""

from __future__ import annotations

import json
from collections import deque
from itertools import permutations
from pathlib import Path
from typing import Any

import pytest

from flowplex import mesh
from flowplex.errors import ConfigurationError, FlowplexError
from flowplex.mesh import (
    CacheError,
    FlowRecord,
    JsonCache,
    MeshInputError,
    MeshState,
    NodeRecord,
    QueryError,
    UnknownSenderError,
    compile_query,
    counts,
    list_rows,
    parse_by,
)
from flowplex.mesh._listing import MAX_ORDERS, RowSet
from flowplex.mesh._records import dedupe_flows, flows_from_json, nodes_from_json

EXPECTED_ALL = [
    "DEFAULT_BY",
    "FIELDS",
    "CacheError",
    "FlowRecord",
    "JsonCache",
    "MeshInputError",
    "MeshService",
    "MeshState",
    "NodeEndpoints",
    "NodeRecord",
    "Outgoing",
    "ProviderRecord",
    "QueryError",
    "SortError",
    "UnknownSenderError",
    "compile_query",
    "counts",
    "list_rows",
    "mesh_router",
    "parse_by",
    "resolve",
    "resolve_loader",
    "run_service",
]


def test_all_is_pinned_and_every_name_resolves() -> None:
    assert sorted(mesh.__all__) == sorted(EXPECTED_ALL)
    for name in mesh.__all__:
        assert getattr(mesh, name) is not None
    import flowplex.server

    assert flowplex.server.__all__ == [
        "Dashboard",
        "Lifespan",
        "NodeServer",
        "create_app",
        "start_dispatch_workers",
    ]


def test_errors_are_flowplex_errors() -> None:
    assert issubclass(MeshInputError, ConfigurationError)
    assert issubclass(QueryError, MeshInputError)
    assert issubclass(CacheError, ConfigurationError)
    assert issubclass(UnknownSenderError, FlowplexError)


# -- records ---------------------------------------------------------------------------------------


def test_flow_url_normalization_and_defaults() -> None:
    assert FlowRecord.from_json({"url": "test1/", "name": "T"}).url == "/test1"
    assert FlowRecord.from_json({"name": "My Flow"}).url == "/My-Flow"
    assert FlowRecord.from_json({"url": "/x"}).name == "x"
    assert FlowRecord.from_json({"url": "/x", "name": "x", "tags": "a, b"}).tags == ["a", "b"]
    assert [f.url for f in flows_from_json({"/a": {"name": "A"}, "b": {"name": "B"}})] == [
        "/a",
        "/b",
    ]
    with pytest.raises(MeshInputError, match="needs a url or a name"):
        FlowRecord.from_json({"description": "nothing else"})
    with pytest.raises(MeshInputError, match="tags must be a list"):
        FlowRecord.from_json({"name": "x", "tags": [1]})
    with pytest.raises(MeshInputError, match="whitespace"):
        FlowRecord.from_json({"url": "/a b", "name": "x"})


def test_duplicate_urls_last_one_wins() -> None:
    flows = flows_from_json(
        [{"url": "/t1", "name": "1"}, {"url": "/t2", "name": "2"}, {"url": "/t2", "name": "3"}]
    )
    deduped = dedupe_flows(flows)
    assert [(f.url, f.name) for f in deduped.values()] == [("/t1", "1"), ("/t2", "3")]


def test_service_urls_are_normalized_and_checked() -> None:
    assert NodeRecord.from_json({"url": "HTTP://LocalHost:3367/"}).url == "http://localhost:3367"
    for bad in ["localhost:3366", "ftp://x:1", "http://", "http://h:1/path", 3366, None]:
        with pytest.raises(MeshInputError):
            NodeRecord.from_json({"url": bad})
    with pytest.raises(MeshInputError, match="needs a port"):
        MeshState("http://localhost")
    with pytest.raises(MeshInputError, match="timestamp"):
        NodeRecord.from_json({"url": "http://h:1", "created": "yesterday"})


def test_node_json_round_trip() -> None:
    node = NodeRecord.from_json(
        {
            "url": "http://h:1",
            "organization": "o",
            "flows": [{"url": "/a", "name": "A", "tags": ["x"], "author": "me"}],
            "created": "2024-12-25T18:03:12.989989",
            "registry": "http://r:2",
        }
    )
    assert NodeRecord.from_json(json.loads(json.dumps(node.to_json()))) == node


# -- query -----------------------------------------------------------------------------------------

ROWS: list[dict[str, Any]] = [
    {
        "registry": "http://r:1",
        "node": "http://n1:1",
        "organization": "node1",
        "created": "2024-01-01T00:00:00+00:00",
        "modified": "2024-01-01T00:00:00+00:00",
        "heartbeat": None,
        "url": "/a",
        "name": "Alpha",
        "author": "ada",
        "description": "Reverses numbers",
        "tags": ["a", "x"],
        "status": "online",
    },
    {
        "registry": "http://r:1",
        "node": "http://n2:1",
        "organization": "node2",
        "created": "2024-02-01T00:00:00+00:00",
        "modified": "2024-02-01T00:00:00+00:00",
        "heartbeat": None,
        "url": "/b",
        "name": "Beta",
        "author": "bob",
        "description": None,
        "tags": ["b"],
        "status": "offline",
    },
    {
        "registry": "http://r:1",
        "node": "http://n2:1",
        "organization": None,
        "created": "2024-03-01T00:00:00+00:00",
        "modified": "2024-03-01T00:00:00+00:00",
        "heartbeat": None,
        "url": "/c",
        "name": "Gamma",
        "author": "ada",
        "description": "Says hello",
        "tags": [],
        "status": "online",
    },
]


@pytest.mark.parametrize(
    ("q", "names"),
    [
        ("organization=='node2'", ["Beta"]),
        ('organization == "node1" or name == "Gamma"', ["Alpha", "Gamma"]),
        ("author == 'ada' and not tag('x')", ["Gamma"]),
        ('@tag("a")|@tag("b")', ["Alpha", "Beta"]),
        ("~(status == 'online')", ["Beta"]),
        ("'REVERSE' in description", ["Alpha"]),
        ("'x' in tags", ["Alpha"]),
        ("'rev' not in description", ["Beta", "Gamma"]),
        ("organization == null", ["Gamma"]),
        ("organization != null & (name == 'Alpha' | name == 'Beta')", ["Alpha", "Beta"]),
        ("created >= '2024-02-01'", ["Beta", "Gamma"]),
        ('name == "Al\\"pha"', []),
        ("tags == 'a, x'", ["Alpha"]),
        ("NOT name == 'Alpha' AND status == 'online'", ["Gamma"]),
        # field ~ "text": contains, ignoring case; a prefix ~ is still "not"
        ('description ~ "HELLO"', ["Gamma"]),
        ("name ~ 'ta'", ["Beta"]),
        ("tags ~ 'X'", ["Alpha"]),
        ('~ name ~ "a" or name ~ "gam"', ["Gamma"]),
        ('~tag("a") & ~ name ~ "mm"', ["Beta"]),
        # field in [...]: equals one of them (tags: one of the tags does)
        ('organization in ["node1", "node2"]', ["Alpha", "Beta"]),
        ("organization not in ['node1']", ["Beta", "Gamma"]),
        ("tags in ['b', 'x']", ["Alpha", "Beta"]),
        ("name in []", []),
        # no value is the empty text; the listing's placeholder is not a value
        ('description == ""', ["Beta"]),
        ("description == null", ["Beta"]),
        ('description != ""', ["Alpha", "Gamma"]),
        ("description == 'missing description'", []),
        ("organization == ''", ["Gamma"]),
        ("description < 'z'", ["Alpha", "Gamma"]),
    ],
)
def test_query_language(q: str, names: list[str]) -> None:
    predicate = compile_query(q)
    assert [r["name"] for r in ROWS if predicate(r)] == names


@pytest.mark.parametrize(
    ("q", "message"),
    [
        ("a==1", "unexpected '1' at column 4"),
        ("a=='1'", "unknown field 'a' at column 1"),
        ("name ==", "expected a field name or a quoted value at column 8, found end of query"),
        ("name", "expected a comparison"),
        ("(name == 'x'", "expected ')'"),
        ("name == 'x' name", "expected 'and', 'or' or the end of the query"),
        ("size('x')", "unknown function 'size'"),
        ("tag(name)", "expected a quoted tag"),
        ("name in ['a' 'b']", "expected ','"),
        ("name ~", "expected a field name or a quoted value"),
        ("__import__('os')", "unknown function '__import__'"),
        ("", "the query is empty"),
        ("name == 'x", "unexpected"),
        ("(" * 60 + "name == 'x'" + ")" * 60, "nests deeper than 50 levels"),
        ("not " * 60 + "name == 'x'", "nests deeper than 50 levels"),
        ("name == 'x' or " * 200 + "name == 'y'", "longer than 2000 characters"),
    ],
)
def test_invalid_queries_name_the_problem(q: str, message: str) -> None:
    with pytest.raises(QueryError, match=message.replace("(", r"\(").replace(")", r"\)")):
        compile_query(q)


# -- listing ---------------------------------------------------------------------------------------


def test_invalid_query_falls_back_to_fulltext_and_reports_the_error() -> None:
    page = list_rows(ROWS, q="a==1")
    assert page["filtered"] == 0 and page["total"] == 3
    assert page["q"] == "QueryError: unexpected '1' at column 4, fulltext: a==1"
    page = list_rows(ROWS, q="HELLO")
    assert [r["name"] for r in page["items"]] == ["Gamma"]
    assert page["q"].startswith("QueryError: ") and page["q"].endswith("fulltext: HELLO")
    assert [r["name"] for r in list_rows(ROWS, q="bob")["items"]] == ["Beta"]
    assert list_rows(ROWS, q="missing")["filtered"] == 0  # a placeholder is not searched


def test_a_missing_author_or_description_is_listed_as_a_placeholder_but_sorts_as_one() -> None:
    page = list_rows(ROWS, q="name == 'Beta'")
    assert page["items"][0]["description"] == "missing description"
    assert ROWS[1]["description"] is None  # the rows themselves are left as they are
    page = list_rows(ROWS, by="description")
    assert [r["description"] for r in page["items"]] == [
        "missing description",
        "Reverses numbers",
        "Says hello",
    ]


def test_sort_keys_and_directions() -> None:
    assert parse_by("author, name:d") == [("author", False), ("name", True)]
    assert parse_by("tags:desc,name:asc") == [("tags", True), ("name", False)]
    assert parse_by(None) == [("name", False), ("node", False), ("url", False)]
    page = list_rows(ROWS, by="author,name:d")
    assert [r["name"] for r in page["items"]] == ["Gamma", "Alpha", "Beta"]
    assert page["by"] == "author, name:desc"
    page = list_rows(ROWS, by="tags:desc,name:asc")
    assert [r["tags"] for r in page["items"]] == [["b"], ["a", "x"], []]
    page = list_rows(ROWS, by="size")
    assert [r["name"] for r in page["items"]] == ["Alpha", "Beta", "Gamma"]
    assert page["by"].startswith("SortError: unknown sort field 'size'")
    assert page["by"].endswith("default: name, node, url")
    assert list_rows(ROWS, by="name:sideways")["by"].startswith("SortError: unknown sort direction")


def test_sort_order_memos_are_bounded() -> None:
    # Each distinct `by` memoizes one order (a list as long as the rows) until the rows change;
    # on a quiet registry, requests with ever new `by` values must not grow memory without end.
    rowset = RowSet(ROWS)
    pairs = list(permutations(mesh.FIELDS, 2))
    for first, second in pairs:
        for direction in ("asc", "desc"):
            page = list_rows(rowset, by=f"{first}:{direction}, {second}")
            assert page["filtered"] == 3 and not page["by"].startswith("SortError")
    assert len(pairs) * 2 > MAX_ORDERS >= len(rowset._orders)


def test_a_repeated_sort_field_counts_once() -> None:
    # Only its first occurrence can order anything; thousands of repeats in `by` used to cost a
    # sort key each (a quarter of a second per request over 10,000 flows).
    assert parse_by("name, name:desc, url, NAME") == [("name", False), ("url", False)]
    assert list_rows(ROWS, by="author:d, name, author")["by"] == "author:desc, name"


def test_paging_fifty_flows_fifteen_per_page() -> None:
    rows = [{**ROWS[0], "name": f"flow {i:02d}", "url": f"/f{i}"} for i in reversed(range(50))]
    pages = [list_rows(rows, pp=15, p=p) for p in range(5)]
    assert [len(page["items"]) for page in pages] == [15, 15, 15, 5, 0]
    names = [r["name"] for page in pages for r in page["items"]]
    assert names == [f"flow {i:02d}" for i in range(50)]
    assert all(page["total"] == page["filtered"] == 50 for page in pages)
    with pytest.raises(ValueError, match="pp >= 1"):
        list_rows(rows, pp=0)


def test_counts_per_node_organization_and_tag() -> None:
    assert counts(ROWS) == {
        "total": 3,
        "node": {"http://n1:1": 1, "http://n2:1": 2},
        "organization": {"node1": 1, "node2": 1, "": 1},
        "tags": {"a": 1, "x": 1, "b": 1},
    }
    assert sum(counts(ROWS)["organization"].values()) == 3


# -- peering rules, on the pure state --------------------------------------------------------------


class Mesh:
    """Registries wired in memory: every Outgoing is delivered through the state's own methods."""

    def __init__(self, n: int) -> None:
        self.urls = [f"http://r{i}:1" for i in range(n)]
        self.states = {u: MeshState(u, u[7:9], node=False, registry=True) for u in self.urls}
        self.queue: deque[Any] = deque()
        self.deliveries: dict[str, int] = dict.fromkeys(self.urls, 0)

    def connect(self, i: int, j: int) -> None:
        a, b = self.states[self.urls[i]], self.states[self.urls[j]]
        offer = a.offer()
        reply, out = b.accept_connect(a.url, a.organization, True, nodes_from_json(offer["nodes"]))
        self.queue.extend(out)
        self.queue.extend(a.connected(b.url, reply))
        self.run()

    def run(self) -> None:
        while self.queue:
            out = self.queue.popleft()
            self.deliveries[out.peer] += 1
            body = out.body
            _, more = self.states[out.peer].apply_update(
                body["url"], body["id"], body["visited"], nodes_from_json(body["nodes"])
            )
            self.queue.extend(more)

    def register(self, i: int, node: dict[str, Any]) -> None:
        _, out = self.states[self.urls[i]].register(NodeRecord.from_json(node))
        self.queue.extend(out)
        self.run()

    def stat(self, key: str) -> list[int]:
        return [self.states[u].stats[key] for u in self.urls]

    def listed(self) -> list[list[tuple[str, str]]]:
        return [sorted((r["node"], r["url"]) for r in self.states[u].rows()) for u in self.urls]


NODE = {"url": "http://node:1", "flows": [{"url": "/f", "name": "F"}]}


@pytest.mark.parametrize(
    ("edges", "received", "ignored"),
    [
        ([(0, 1), (1, 2)], [0, 1, 1], [0, 0, 0]),  # a chain: forwarded along it
        ([(0, 1), (1, 2), (2, 0)], [0, 1, 1], [0, 0, 0]),  # a triangle (cycle of three)
        ([(0, 1), (1, 2), (2, 3), (3, 0)], [0, 1, 2, 1], [0, 0, 1, 0]),  # a ring of four
        ([(i, j) for i in range(5) for j in range(i + 1, 5)], [0, 1, 1, 1, 1], [0] * 5),
    ],
    ids=["chain", "triangle", "ring-of-four", "complete-five"],
)
def test_an_update_is_applied_once_per_registry_in_any_topology(
    edges: list[tuple[int, int]], received: list[int], ignored: list[int]
) -> None:
    m = Mesh(max(max(e) for e in edges) + 1)
    for i, j in edges:
        m.connect(i, j)
    before = m.stat("updates_received")
    assert before == [0] * len(m.urls)  # connecting empty registries sends no updates
    m.register(0, NODE)
    assert m.stat("updates_received") == received
    assert m.stat("updates_ignored") == ignored
    applied = [r - i for r, i in zip(received, ignored, strict=True)]
    assert m.stat("updates_applied") == applied
    assert applied[1:] == [1] * (len(m.urls) - 1)  # every other registry applied it once
    assert m.listed() == [[("http://node:1", "/f")]] * len(m.urls)
    # Re-registering with other flows replaces them everywhere, again once per registry.
    m.register(0, {**NODE, "flows": [{"url": "/g", "name": "G"}]})
    assert m.listed() == [[("http://node:1", "/g")]] * len(m.urls)


def test_updates_are_never_sent_back_to_their_sender() -> None:
    m = Mesh(2)
    m.connect(0, 1)
    m.register(1, NODE)  # r1 -> r0; r0 must not echo it back to r1
    assert m.deliveries == {m.urls[0]: 1, m.urls[1]: 0}


def test_a_peer_joining_late_gets_the_catalog_and_spreads_it() -> None:
    m = Mesh(3)
    m.connect(0, 1)
    m.register(0, NODE)
    m.connect(2, 1)  # r2 connects to r1: it gets r0's node in r1's offer, with r0 as its home
    assert m.listed()[2] == [("http://node:1", "/f")]
    # The map lists direct peers only, each with the nodes it sent (and their home registry).
    mapped = m.states[m.urls[2]].map()["providers"]
    assert list(mapped) == [m.urls[1]]
    assert mapped[m.urls[1]]["nodes"]["http://node:1"]["registry"] == m.urls[0]


def test_unknown_sender_is_refused_and_duplicates_are_ignored() -> None:
    state = MeshState("http://r:1", node=False, registry=True)
    node = NodeRecord.from_json({**NODE, "modified": "2025-01-01T00:00:00+00:00"})
    with pytest.raises(UnknownSenderError, match="POST /connect first"):
        state.apply_update("http://stranger:1", "u1", [], [node])
    state.accept_connect("http://p:1", None, True, [])
    messages, _ = state.apply_update("http://p:1", "u1", [], [node])
    assert messages == ["created node http://node:1 (from http://p:1)"]
    messages, _ = state.apply_update("http://p:1", "u1", [], [node])
    assert messages == ["update u1 already applied (ignored)"]
    # An older copy under a new id changes nothing either.
    old = node.with_(modified="2024-01-01T00:00:00+00:00")
    messages, out = state.apply_update("http://p:1", "u2", [], [old])
    assert messages == ["update u2 changed nothing"] and out == []


def test_a_provider_offers_its_nodes_but_takes_no_feed() -> None:
    registry = MeshState("http://r:1", node=False, registry=True)
    provider = MeshState("http://p:1", node=False, provider=True)
    assert provider.registry and not provider.feed
    provider.register(NodeRecord.from_json(NODE))
    offer = provider.offer()
    reply, _ = registry.accept_connect(
        provider.url, None, offer["feed"], nodes_from_json(offer["nodes"])
    )
    assert "providers" not in reply  # no catalog back
    assert [r["node"] for r in registry.rows()] == ["http://node:1"]
    provider.connected(registry.url, reply)
    # The registry accepts the provider's updates but forwards it none of its own.
    _, out = registry.register(NodeRecord.from_json({**NODE, "url": "http://other:1"}))
    assert out == []
    _, out = provider.register(NodeRecord.from_json({**NODE, "flows": [{"name": "G"}]}))
    assert [o.peer for o in out] == [registry.url]


def test_register_keeps_created_and_refreshes_modified_and_heartbeat() -> None:
    state = MeshState("http://r:1", node=False, registry=True)
    node = NodeRecord.from_json(NODE)
    messages, _ = state.register(node)
    first = state.nodes[node.url]
    assert messages == ["registered node http://node:1 (first visit)"]
    messages, _ = state.register(node)
    second = state.nodes[node.url]
    assert messages[0].startswith("registered node http://node:1 (seen previously 20")
    assert second.created == first.created
    assert second.modified is not None and first.modified is not None
    assert second.modified >= first.modified and second.heartbeat == second.modified


def test_status_goes_offline_after_the_timeout() -> None:
    now = [1_000_000.0]
    state = MeshState(
        "http://r:1", node=False, registry=True, offline_after=30, clock=lambda: now[0]
    )
    assert state.status_of("1970-01-12T13:46:40+00:00", now[0]) == "online"  # 1e6 s
    assert state.status_of("1970-01-12T13:46:09+00:00", now[0]) == "offline"
    assert state.status_of(None, now[0]) == "unknown"


def test_snapshot_restore_round_trip() -> None:
    m = Mesh(2)
    m.connect(0, 1)
    m.register(0, NODE)
    snap = json.loads(json.dumps(m.states[m.urls[1]].snapshot()))
    fresh = MeshState(m.urls[1], node=False, registry=True)
    fresh.restore(snap)
    assert fresh.snapshot() == snap
    assert fresh.rows() == m.states[m.urls[1]].rows()
    assert fresh.organization == "r1"


def test_backoff_doubles_up_to_the_cap() -> None:
    from itertools import islice

    from flowplex.mesh._service import backoff

    assert list(islice(backoff(0.5, 8.0), 7)) == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0, 8.0]


# -- cache -----------------------------------------------------------------------------------------


def test_cache_is_written_atomically_and_read_back(tmp_path: Path) -> None:
    cache = JsonCache(tmp_path / "sub" / "reg.json")
    assert cache.load() is None
    cache.save({"nodes": {"a": 1}})
    cache.save({"nodes": {"b": 2}})
    assert cache.load() == {"nodes": {"b": 2}}
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["reg.json"]  # no temp files left
    (tmp_path / "sub" / "reg.json").write_text("{not json")
    with pytest.raises(CacheError, match=r"not valid JSON.*reset=True"):
        cache.load()
    (tmp_path / "sub" / "reg.json").write_text("[1, 2]")
    with pytest.raises(CacheError, match="JSON object"):
        cache.load()
