"""What a node or registry knows, and the peering rules: pure state, no I/O.

Every mutating method returns the requests it wants sent (:class:`Outgoing`); the service sends
them. That keeps the protocol testable without sockets and keeps all mutation on one thread
(the event loop) with no awaits in between.

Peering rules, safe in any topology (kodo had no loop protection):

- Each update carries an ``id`` and a ``visited`` list. A registry applies an update id at most
  once (a bounded memory of seen ids), and forwards it only to peers that are neither the
  sender nor in ``visited``; it adds itself and the peers it forwards to before sending, so in
  a triangle nobody forwards at all and in a ring a registry hears an update at most twice.
- Copies of a node are ordered by ``(modified, heartbeat)``; a copy that is not strictly newer
  than the one held changes nothing and is forwarded nowhere.
- A registry is authoritative for the nodes registered with it: copies of them coming back
  through the mesh are ignored.
"""

from __future__ import annotations

import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ..errors import FlowplexError
from ._listing import RowSet
from ._records import (
    MISSING_AUTHOR,
    MISSING_DESCRIPTION,
    FlowRecord,
    NodeRecord,
    ProviderRecord,
    nodes_from_json,
    normalize_service_url,
    parse_timestamp,
    utcnow,
)

__all__ = ["MeshState", "Outgoing", "UnknownSenderError"]

#: How many update ids a registry remembers (far more than can be in flight at once).
SEEN_IDS = 10_000


class UnknownSenderError(FlowplexError):
    """An update came from a registry that never connected (it must POST /connect first)."""


@dataclass(frozen=True, slots=True)
class Outgoing:
    """A request the state wants sent: POST ``body`` to ``peer`` + ``path``."""

    peer: str
    path: str
    body: dict[str, Any]


def _pretty(ts: str | None) -> str:
    if ts is None:
        return "never"
    try:
        return str(datetime.fromisoformat(ts))
    except ValueError:
        return ts


class MeshState:
    """A service's view of the mesh: its own flows, registered nodes, peers and providers."""

    def __init__(
        self,
        url: str,
        organization: str | None = None,
        *,
        node: bool = True,
        registry: bool = False,
        provider: bool = False,
        offline_after: float = 30.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.url = normalize_service_url(url, "url", require_port=True)
        self.organization = organization
        self.node = node
        self.registry = registry or provider
        self.provider = provider
        self.offline_after = offline_after
        self.clock = clock
        self.started_at = utcnow()
        #: This service's own flows (node role).
        self.own_flows: dict[str, FlowRecord] = {}
        #: Nodes registered with this registry, by URL.
        self.nodes: dict[str, NodeRecord] = {}
        #: Registries (peers and those known through them) and the nodes filed under each.
        self.providers: dict[str, ProviderRecord] = {}
        #: Peers this registry exchanges updates with: url -> whether it wants them forwarded.
        self.peers: dict[str, bool] = {}
        #: Where this service registers / connects: url -> time of the last success (or None).
        self.connection: dict[str, str | None] = {}
        #: Counters: updates received, applied, ignored, sent; registers; connects.
        self.stats: dict[str, int] = {
            "updates_received": 0,
            "updates_applied": 0,
            "updates_ignored": 0,
            "updates_sent": 0,
            "registers": 0,
            "connects": 0,
        }
        self.version = 0
        self._remote: dict[str, str] = {}  # node url -> the provider it is filed under
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._beats: set[str] = set()  # local nodes whose heartbeat peers have not heard yet
        self._rowset: tuple[int, int, RowSet, list[tuple[float | None, int, int]]] | None = None

    @property
    def feed(self) -> bool:
        """Whether this service wants its peers' catalogs (a provider only offers its own)."""
        return self.registry and not self.provider

    def _changed(self) -> None:
        self.version += 1

    # -- own flows ----------------------------------------------------------------------------

    def own_record(self) -> NodeRecord:
        """This node's record as it registers it (registries set the timestamps)."""
        return NodeRecord(self.url, self.organization, dict(self.own_flows))

    def set_own_flows(self, flows: dict[str, FlowRecord]) -> list[Outgoing]:
        """Replace this node's flows; a registry that is a node too registers itself."""
        self.own_flows = dict(flows)
        self._changed()
        if self.registry and self.node:
            _, out = self.register(self.own_record())
            return out
        return []

    # -- registry: nodes ------------------------------------------------------------------------

    def register(
        self, node: NodeRecord, received: int | None = None
    ) -> tuple[list[str], list[Outgoing]]:
        """A node (re-)registers: its flows are replaced, ``created`` kept, the rest refreshed."""
        now = utcnow()
        existing = self.nodes.get(node.url)
        messages = []
        if existing is None:
            created = now
            messages.append(f"registered node {node.url} (first visit)")
        else:
            created = existing.created or now
            messages.append(f"registered node {node.url} (seen previously {_pretty(created)})")
        if received is not None and received != len(node.flows):
            messages.append(f"received {received} flows, registered {len(node.flows)} flows")
        record = node.with_(created=created, modified=now, heartbeat=now, registry=self.url)
        self.nodes[node.url] = record
        self._beats.discard(node.url)
        self.stats["registers"] += 1
        self._changed()
        out = self._flood([record])
        messages.extend(f"feed forward node to {o.peer}" for o in out)
        return messages, out

    def heartbeat(self, url: str) -> bool:
        """A registered node is alive; False if this registry does not know it."""
        record = self.nodes.get(url)
        if record is None:
            return False
        self.nodes[url] = record.with_(heartbeat=utcnow())
        self._beats.add(url)
        self._changed()
        return True

    def flush_heartbeats(self) -> list[Outgoing]:
        """Forward the heartbeats received since the last flush, as one update."""
        beats = [self.nodes[u] for u in sorted(self._beats) if u in self.nodes]
        self._beats.clear()
        return self._flood(beats)

    # -- registry: peers ------------------------------------------------------------------------

    def offer(self, to: str | None = None) -> dict[str, Any]:
        """What this registry offers a peer: every node it knows (the freshest copy of each),
        except those filed under the peer ``to`` itself (no echo)."""
        return {
            "url": self.url,
            "organization": self.organization,
            "feed": self.feed,
            "nodes": {n.url: n.to_json() for n in self._best_nodes() if n.registry != to},
        }

    def accept_connect(
        self, sender: str, organization: str | None, feed: bool, nodes: Iterable[NodeRecord]
    ) -> tuple[dict[str, Any], list[Outgoing]]:
        """A peer connects with its offer; reply with ours when it asks for the feed."""
        now = utcnow()
        provider = self.providers.get(sender)
        if provider is None:
            provider = self.providers[sender] = ProviderRecord(sender, organization, feed)
            provider.created = now
            message = f"registry {sender} connected (first visit)"
        else:
            message = f"registry {sender} connected (seen previously {_pretty(provider.created)})"
        provider.organization, provider.feed = organization, feed
        provider.modified = provider.heartbeat = now
        self.peers[sender] = feed
        self.stats["connects"] += 1
        changed = [n for n in nodes if self._merge(n, sender)]
        self._changed()
        out = self._flood(changed, exclude={sender})
        reply: dict[str, Any] = {"message": [message]}
        if feed:
            reply["providers"] = self.offer(to=sender)
        return reply, out

    def connected(self, peer: str, reply: dict[str, Any]) -> list[Outgoing]:
        """Our POST /connect to ``peer`` succeeded; merge the offer it replied with."""
        now = utcnow()
        self.connection[peer] = now
        self.peers[peer] = True
        offer = reply.get("providers")
        changed: list[NodeRecord] = []
        if isinstance(offer, dict):
            provider = self.providers.get(peer)
            if provider is None:
                provider = self.providers[peer] = ProviderRecord(peer, None, True, created=now)
            organization = offer.get("organization")
            provider.organization = organization if isinstance(organization, str) else None
            provider.feed = bool(offer.get("feed", True))
            provider.modified = provider.heartbeat = now
            changed = [n for n in nodes_from_json(offer.get("nodes")) if self._merge(n, peer)]
        self._changed()
        return self._flood(changed, exclude={peer})

    def apply_update(
        self,
        sender: str,
        update_id: str | None,
        visited: Iterable[str],
        nodes: Iterable[NodeRecord],
    ) -> tuple[list[str], list[Outgoing]]:
        """A peer forwards node changes: apply once, forward once, never back to the sender."""
        if sender not in self.peers:
            raise UnknownSenderError(
                f"unknown sender {sender}: it is not a peer of {self.url} (POST /connect first)."
            )
        self.stats["updates_received"] += 1
        uid = update_id or uuid.uuid4().hex  # a kodo peer sends no id: the LWW rule still holds
        if uid in self._seen:
            self.stats["updates_ignored"] += 1
            return [f"update {uid} already applied (ignored)"], []
        self._remember(uid)
        self.stats["updates_applied"] += 1
        provider = self.providers.get(sender)
        if provider is not None:
            provider.heartbeat = utcnow()
        messages = []
        changed = []
        for node in nodes:
            existed = node.url in self._remote
            if self._merge(node, sender):
                changed.append(node)
                verb = "updated" if existed else "created"
                messages.append(f"{verb} node {node.url} (from {sender})")
        if not changed:
            messages.append(f"update {uid} changed nothing")
        self._changed()
        out = self._flood(changed, exclude={sender}, update_id=uid, visited=visited)
        messages.extend(f"feed forward node to {o.peer}" for o in out)
        return messages, out

    def _remember(self, uid: str) -> None:
        self._seen[uid] = None
        while len(self._seen) > SEEN_IDS:
            self._seen.popitem(last=False)

    def _merge(self, node: NodeRecord, sender: str) -> bool:
        """File a copy of a node heard from ``sender``; True if it was news."""
        home = node.registry or sender
        if self.url in (home, node.url):
            return False  # ours: we are authoritative for our own nodes
        where = self._remote.get(node.url)
        if where is not None:
            current = self.providers[where].nodes[node.url]
            if node.freshness() <= current.freshness():
                return False
            del self.providers[where].nodes[node.url]
        provider = self.providers.get(home)
        if provider is None:  # a registry known only through a peer
            provider = self.providers[home] = ProviderRecord(home, None, True, created=utcnow())
        provider.nodes[node.url] = node.with_(registry=home)
        self._remote[node.url] = home
        return True

    def _flood(
        self,
        nodes: list[NodeRecord],
        exclude: set[str] | None = None,
        update_id: str | None = None,
        visited: Iterable[str] = (),
    ) -> list[Outgoing]:
        if not nodes or not self.registry:
            return []
        seen = set(visited) | (exclude or set()) | {self.url}
        targets = sorted(p for p, wants in self.peers.items() if wants and p not in seen)
        uid = update_id or uuid.uuid4().hex
        self._remember(uid)
        if not targets:
            return []
        body = {
            "url": self.url,
            "organization": self.organization,
            "feed": False,
            "id": uid,
            "visited": sorted(seen | set(targets)),
            "nodes": {n.url: n.to_json() for n in nodes},
        }
        self.stats["updates_sent"] += len(targets)
        return [Outgoing(peer, "/update/node", body) for peer in targets]

    # -- views ------------------------------------------------------------------------------------

    def _best_nodes(self) -> list[NodeRecord]:
        best = dict(self.nodes)
        for url, home in self._remote.items():
            copy = self.providers[home].nodes[url]
            mine = best.get(url)
            if mine is None or copy.freshness() > mine.freshness():
                best[url] = copy
        return list(best.values())

    def status_of(self, heartbeat: str | None, now: float) -> str:
        """``"online"`` while the last heartbeat is within ``offline_after``, else offline."""
        beat = parse_timestamp(heartbeat)
        if beat is None:
            return "unknown"
        return "online" if now - beat <= self.offline_after else "offline"

    def rows(self) -> list[dict[str, Any]]:
        """One listing row per flow (see :meth:`rowset`)."""
        return self.rowset().rows  # type: ignore[return-value]

    def rowset(self) -> RowSet:
        """The listing rows, memoized: rebuilt when the state changes; ``status`` is brought up
        to date in place (at most once a second), so a page costs no rebuild."""
        now = self.clock()
        cached = self._rowset
        if cached is None or cached[0] != self.version:
            rows: list[dict[str, Any]] = []
            groups: list[tuple[float | None, int, int]] = []
            if self.registry:
                for node in self._best_nodes():
                    status = self.status_of(node.heartbeat, now)
                    start = len(rows)
                    rows.extend(self._row(node, f, status) for f in node.flows.values())
                    groups.append((parse_timestamp(node.heartbeat), start, len(rows)))
            elif self.node:
                own = self.own_record()
                rows.extend(self._row(own, f, "online") for f in own.flows.values())
            rowset = RowSet(rows)
            self._rowset = (self.version, int(now), rowset, groups)
            return rowset
        version, second, rowset, groups = cached
        if int(now) != second:
            changed = False
            for beat, start, end in groups:
                if beat is None or start == end:
                    continue
                status = "online" if now - beat <= self.offline_after else "offline"
                if rowset.rows[start]["status"] != status:
                    changed = True
                    for i in range(start, end):
                        rowset.rows[i]["status"] = status  # type: ignore[index]
            if changed:
                rowset.invalidate("status")
            self._rowset = (version, int(now), rowset, groups)
        return rowset

    def _row(self, node: NodeRecord, flow: FlowRecord, status: str) -> dict[str, Any]:
        return {
            "registry": self.url,
            "node": node.url,
            "organization": node.organization,
            "created": node.created,
            "modified": node.modified,
            "heartbeat": node.heartbeat,
            "url": flow.url,
            "name": flow.name,
            "author": flow.author or MISSING_AUTHOR,
            "description": flow.description or MISSING_DESCRIPTION,
            "tags": sorted(flow.tags or []),
            "status": status,
        }

    def map(self) -> dict[str, Any]:
        """``{url, organization, feed, nodes, providers}``: what this service knows, by source."""
        now = self.clock()
        if self.registry:
            nodes = {u: self._with_status(n, now) for u, n in self.nodes.items()}
        else:
            nodes = {self.url: {**self.own_record().to_json(), "status": "online"}}
        providers = {}
        for url, provider in self.providers.items():
            data = provider.to_json()
            data["nodes"] = {u: self._with_status(n, now) for u, n in provider.nodes.items()}
            providers[url] = data
        return {
            "url": self.url,
            "organization": self.organization,
            "feed": self.feed,
            "nodes": nodes,
            "providers": providers,
        }

    def _with_status(self, node: NodeRecord, now: float) -> dict[str, Any]:
        return {**node.to_json(), "status": self.status_of(node.heartbeat, now)}

    # -- persistence ------------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """The cache: the seed's ``{url, organization, feed, nodes, providers}`` plus ``peers``."""
        return {
            "url": self.url,
            "organization": self.organization,
            "feed": self.feed,
            "nodes": {u: n.to_json() for u, n in self.nodes.items()},
            "providers": {u: p.to_json() for u, p in self.providers.items()},
            "peers": dict(self.peers),
        }

    def restore(self, data: dict[str, Any]) -> None:
        """Load a cache written by :meth:`snapshot` (timestamps kept as they were)."""
        if self.organization is None and isinstance(data.get("organization"), str):
            self.organization = data["organization"]
        self.nodes = {n.url: n for n in nodes_from_json(data.get("nodes"))}
        providers = data.get("providers") or {}
        if not isinstance(providers, dict):
            raise ValueError("providers must be an object keyed by url")
        self.providers = {}
        self._remote = {}
        for key, value in providers.items():
            provider = ProviderRecord.from_json(value, key)
            self.providers[provider.url] = provider
            for url in provider.nodes:
                self._remote[url] = provider.url
        peers = data.get("peers") or {}
        if not isinstance(peers, dict):
            raise ValueError("peers must be an object of url: bool")
        self.peers = {normalize_service_url(p, "peer"): bool(w) for p, w in peers.items()}
        self._changed()
