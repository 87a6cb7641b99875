"""What a node or registry knows, and the peering rules: pure state, no I/O.

Every mutating method returns the requests it wants sent (:class:`Outgoing`); the service sends
them. That keeps the protocol testable without sockets and keeps all mutation on one thread
(the event loop) with no awaits in between. Time comes from ``clock`` (seconds since the
epoch), so tests can move it.

Peering rules, safe in any topology:

- Each update carries an ``id`` and a ``visited`` list. A registry applies an update id at most
  once (a bounded memory of seen ids), and forwards it only to peers that are neither the
  sender nor in ``visited``; it adds itself and the peers it forwards to before sending, so in
  a triangle nobody forwards at all and in a ring a registry hears an update at most twice.
- A copy of a node that changes nothing is forwarded nowhere.

Who may say what about a node (the rules that keep a peer from poisoning listings):

- A node's *home* is the registry it registered with (``registry`` in its record). The home is
  authoritative: copies of a node registered here, or claiming this registry as their home,
  are ignored when relayed back, and a node registering (again) replaces any relayed copy.
- A relayed copy's ``created``/``modified``/``heartbeat`` are clamped to this registry's clock
  plus ``clock_skew`` seconds, so a copy dated in the future cannot stay newest (or online).
- A copy heard *first hand* (its sender is its home) outranks one relayed by another peer: a
  relayed copy never replaces a live first-hand copy, and a first-hand copy replaces a relayed
  one. A copy claiming another home never replaces a live copy (one whose heartbeat is within
  ``offline_after``): a node moves to another registry once its old home stops vouching for it.
  Otherwise the copy with the later ``(modified, heartbeat)`` wins.
- Copies are filed under the peer that sent them (``providers[peer].nodes``), so ``/map`` shows
  the direct peers and what each one relayed.
- A node silent for ``offline_remove_after`` seconds is removed (:meth:`MeshState.sweep`); each
  registry ages its own copies, so no removal needs to travel.
"""

from __future__ import annotations

import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from ..errors import FlowplexError
from ..identity import is_user_id
from ._listing import RowSet
from ._records import (
    FlowRecord,
    NodeRecord,
    ProviderRecord,
    iso,
    nodes_from_json,
    normalize_service_url,
    parse_timestamp,
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


@dataclass(frozen=True, slots=True)
class Frame:
    """A consistent view of the durable state for the cache writer, taken in O(nodes): the
    records are immutable, and each provider's node table is copied."""

    url: str
    organization: str | None
    feed: bool
    nodes: dict[str, NodeRecord]
    providers: list[ProviderRecord]
    peers: dict[str, bool]
    keys: dict[str, str]


def _pretty(ts: str | None) -> str:
    if ts is None:
        return "never"
    try:
        return str(datetime.fromisoformat(ts))
    except ValueError:
        return ts


def _last_seen(node: NodeRecord) -> float | None:
    """When a node last showed a sign of life (heartbeat, else modified, else created)."""
    for ts in (node.heartbeat, node.modified, node.created):
        seconds = parse_timestamp(ts)
        if seconds is not None:
            return seconds
    return None


class MeshState:
    """A service's view of the mesh: its own flows, registered nodes, peers and providers."""

    def __init__(
        self,
        url: Any,
        organization: str | None = None,
        *,
        node: bool = True,
        registry: bool = False,
        provider: bool = False,
        offline_after: float = 30.0,
        offline_remove_after: float | None = None,
        clock_skew: float = 5.0,
        max_peers: int = 64,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.url = normalize_service_url(url, "url", require_port=True)
        self.organization = organization
        self.node = node
        self.registry = registry or provider
        self.provider = provider
        self.offline_after = offline_after
        self.offline_remove_after = offline_remove_after
        self.clock_skew = clock_skew
        self.max_peers = max_peers
        self.clock = clock
        self.started_at = self.now()
        #: Called after every change (the service schedules a cache write).
        self.on_change: Callable[[], None] | None = None
        #: This service's own flows (node role).
        self.own_flows: dict[str, FlowRecord] = {}
        #: Nodes registered with this registry (their home), by URL.
        self.nodes: dict[str, NodeRecord] = {}
        #: The direct peers and the node copies each one sent.
        self.providers: dict[str, ProviderRecord] = {}
        #: Peers this registry exchanges updates with: url -> whether it wants them forwarded.
        self.peers: dict[str, bool] = {}
        #: The key (user id) each node and peer registry proved first: url -> key (pinned).
        self.keys: dict[str, str] = {}
        #: Where this service registers / connects: url -> time of the last success (or None).
        self.connection: dict[str, str | None] = {}
        #: Counters: updates received, applied, ignored, sent; registers; connects; removals.
        self.stats: dict[str, int] = {
            "updates_received": 0,
            "updates_applied": 0,
            "updates_ignored": 0,
            "updates_sent": 0,
            "registers": 0,
            "connects": 0,
            "nodes_removed": 0,
            "peers_dropped": 0,
        }
        self.version = 0
        self._remote: dict[str, str] = {}  # node url -> the peer its copy is filed under
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._beats: set[str] = set()  # local nodes whose heartbeat peers have not heard yet
        self._rowset: tuple[int, int, RowSet, list[tuple[float | None, int, int]]] | None = None

    @property
    def feed(self) -> bool:
        """Whether this service wants its peers' catalogs (a provider only offers its own)."""
        return self.registry and not self.provider

    def now(self) -> str:
        """The clock's time as an ISO 8601 UTC timestamp."""
        return iso(self.clock())

    def _changed(self) -> None:
        self.version += 1
        if self.on_change is not None:
            self.on_change()

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
        """A node (re-)registers: its flows are replaced, ``created`` kept, the rest refreshed.

        What the node says of itself wins over any copy of it relayed by a peer.
        """
        now = self.now()
        existing = self.nodes.get(node.url)
        via = self._remote.pop(node.url, None)
        if via is not None:  # a copy a peer relayed: this registration replaces it
            del self.providers[via].nodes[node.url]
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
        self.nodes[url] = record.with_(heartbeat=self.now())
        self._beats.add(url)
        self._changed()
        return True

    def flush_heartbeats(self) -> list[Outgoing]:
        """Forward the heartbeats received since the last flush, as one update."""
        beats = [self.nodes[u] for u in sorted(self._beats) if u in self.nodes]
        self._beats.clear()
        return self._flood(beats)

    def sweep(self) -> list[str]:
        """Remove the nodes silent for longer than ``offline_remove_after``; their URLs."""
        if self.offline_remove_after is None:
            return []
        limit = self.clock() - self.offline_remove_after
        gone = [u for u, n in self.nodes.items() if u != self.url and self._expired(n, limit)]
        for url in gone:
            del self.nodes[url]
            self._beats.discard(url)
        for url, via in list(self._remote.items()):
            if self._expired(self.providers[via].nodes[url], limit):
                del self.providers[via].nodes[url]
                del self._remote[url]
                gone.append(url)
        if gone:
            self.stats["nodes_removed"] += len(gone)
            self._changed()
        return gone

    @staticmethod
    def _expired(node: NodeRecord, limit: float) -> bool:
        seen = _last_seen(node)
        return seen is not None and seen < limit

    # -- registry: peers ------------------------------------------------------------------------

    def offer(self, to: str | None = None) -> dict[str, Any]:
        """What this registry offers a peer: every node it knows, except those the peer ``to``
        sent or is home to (no echo)."""
        return {
            "url": self.url,
            "organization": self.organization,
            "feed": self.feed,
            "nodes": {
                n.url: n.to_json()
                for n in self._all_nodes()
                if to is None or (n.registry != to and self._remote.get(n.url) != to)
            },
        }

    def can_add_peer(self, url: str) -> bool:
        """Whether ``url`` is a peer already or there is room for one more (``max_peers``)."""
        return url in self.peers or len(self.peers) < self.max_peers

    def accept_connect(
        self, sender: str, organization: str | None, feed: bool, nodes: Iterable[NodeRecord]
    ) -> tuple[dict[str, Any], list[Outgoing]]:
        """A peer connects with its offer; reply with ours when it asks for the feed."""
        now = self.now()
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
        changed = self._merge_all(nodes, sender)
        self._changed()
        out = self._flood(changed, exclude={sender})
        reply: dict[str, Any] = {"message": [message]}
        if feed:
            reply["providers"] = self.offer(to=sender)
        return reply, out

    def connected(self, peer: str, reply: dict[str, Any]) -> list[Outgoing]:
        """Our POST /connect to ``peer`` succeeded; merge the offer it replied with."""
        now = self.now()
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
            changed = self._merge_all(nodes_from_json(offer.get("nodes")), peer)
        self._changed()
        return self._flood(changed, exclude={peer})

    def pin(self, url: str, key: str) -> bool:
        """Pin ``key`` as the one that speaks for ``url`` unless another is pinned; True if
        ``key`` is (now) the pinned one."""
        pinned = self.keys.get(url)
        if pinned is None:
            self.keys[url] = key
            self._changed()
            return True
        return pinned == key

    def drop_peer(self, peer: str) -> bool:
        """Forget a peer and the node copies it sent (it failed too often); True if known."""
        if peer not in self.peers and peer not in self.providers:
            return False
        self.peers.pop(peer, None)
        provider = self.providers.pop(peer, None)
        if provider is not None:
            for url in provider.nodes:
                self._remote.pop(url, None)
        self.stats["peers_dropped"] += 1
        self._changed()
        return True

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
        uid = update_id or uuid.uuid4().hex  # a peer may send no id: the copy rules still hold
        if uid in self._seen:
            self.stats["updates_ignored"] += 1
            return [f"update {uid} already applied (ignored)"], []
        self._remember(uid)
        self.stats["updates_applied"] += 1
        provider = self.providers.get(sender)
        if provider is not None:
            provider.heartbeat = self.now()
        messages = []
        changed = []
        for node in nodes:
            existed = node.url in self._remote
            merged = self._merge(node, sender)
            if merged is not None:
                changed.append(merged)
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

    def _merge_all(self, nodes: Iterable[NodeRecord], via: str) -> list[NodeRecord]:
        return [m for m in (self._merge(n, via) for n in nodes) if m is not None]

    def _clamp(self, node: NodeRecord, now: float) -> NodeRecord:
        """The copy with no timestamp later than ``now`` + ``clock_skew`` (and created <=
        modified <= ... as they were, when already in order)."""
        limit = now + self.clock_skew
        changes = {}
        for name in ("created", "modified", "heartbeat"):
            seconds = parse_timestamp(getattr(node, name))
            if seconds is not None and seconds > limit:
                changes[name] = iso(limit)
        return node.with_(**changes) if changes else node

    def _live(self, node: NodeRecord, now: float) -> bool:
        beat = parse_timestamp(node.heartbeat)
        return beat is not None and now - beat <= self.offline_after

    def _merge(self, node: NodeRecord, via: str) -> NodeRecord | None:
        """File a copy of a node sent by the peer ``via``; the filed copy if it was news."""
        home = node.registry or via  # a peer that sends no home is the node's home
        if self.url in (home, node.url) or node.url in self.nodes:
            return None  # ours: what the node told us itself stands
        now = self.clock()
        node = self._clamp(node, now).with_(registry=home)
        if self.offline_remove_after is not None and self._expired(
            node, now - self.offline_remove_after
        ):
            return None  # silent for so long it would be removed at once
        where = self._remote.get(node.url)
        if where is not None:
            current = self.providers[where].nodes[node.url]
            first_hand, current_first_hand = via == home, where == current.registry
            live = self._live(current, now)
            if live and current.registry != home:
                return None  # a peer cannot move a live node to another home
            if live and current_first_hand and not first_hand:
                return None  # a relayed copy never overrides what the home said
            outranks = first_hand and not current_first_hand
            if not outranks and node.freshness() <= current.freshness():
                return None
            del self.providers[where].nodes[node.url]
        provider = self.providers.get(via)
        if provider is None:  # a connect target whose offer came in before the reply
            provider = self.providers[via] = ProviderRecord(via, None, True, created=self.now())
        provider.nodes[node.url] = node
        self._remote[node.url] = via
        return node

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

    def _all_nodes(self) -> list[NodeRecord]:
        """Every node known: those registered here, then one copy of each heard from peers."""
        nodes = list(self.nodes.values())
        nodes.extend(self.providers[via].nodes[url] for url, via in self._remote.items())
        return nodes

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
                for node in self._all_nodes():
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
        # author and description stay None when missing: the listing shows its placeholders,
        # queries see no value (see flowplex.mesh._listing).
        return {
            "registry": self.url,
            "node": node.url,
            "organization": node.organization,
            "created": node.created,
            "modified": node.modified,
            "heartbeat": node.heartbeat,
            "url": flow.url,
            "name": flow.name,
            "author": flow.author or None,
            "description": flow.description or None,
            "tags": sorted(flow.tags or []),
            "status": status,
        }

    def map(self) -> dict[str, Any]:
        """``{url, organization, feed, nodes, providers}``: the nodes registered here, and each
        direct peer with the nodes it sent."""
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

    def frame(self) -> Frame:
        """What the cache writer serializes, in O(nodes) (see :class:`Frame`)."""
        return Frame(
            url=self.url,
            organization=self.organization,
            feed=self.feed,
            nodes=dict(self.nodes),
            providers=[replace(p, nodes=dict(p.nodes)) for p in self.providers.values()],
            peers=dict(self.peers),
            keys=dict(self.keys),
        )

    def snapshot(self) -> dict[str, Any]:
        """The cache: ``{url, organization, feed, nodes, providers}`` plus ``peers`` and the
        pinned ``keys``."""
        return {
            "url": self.url,
            "organization": self.organization,
            "feed": self.feed,
            "nodes": {u: n.to_json() for u, n in self.nodes.items()},
            "providers": {u: p.to_json() for u, p in self.providers.items()},
            "peers": dict(self.peers),
            "keys": dict(self.keys),
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
            for url in list(provider.nodes):
                if url in self.nodes or url in self._remote:
                    del provider.nodes[url]  # one copy per node, a registered one first
                else:
                    self._remote[url] = provider.url
        peers = data.get("peers") or {}
        if not isinstance(peers, dict):
            raise ValueError("peers must be an object of url: bool")
        self.peers = {normalize_service_url(p, "peer"): bool(w) for p, w in peers.items()}
        keys = data.get("keys") or {}
        if not isinstance(keys, dict) or not all(is_user_id(k) for k in keys.values()):
            raise ValueError("keys must be an object of url: user id")
        self.keys = {normalize_service_url(u, "keys url"): k for u, k in keys.items()}
        self._changed()
