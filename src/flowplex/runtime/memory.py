"""``MemoryBackend``: the in-process, volatile twin of the SQL backends.

Same semantics as SQLite and PostgreSQL (the conformance suite checks), kept in dicts under one
lock; config and state are held as JSON text so callers never share mutable objects with it, and
a message keeps the dispatch point, user and parallelism of its instance from when it was queued
(as the SQL rows do), so a message whose instance was deleted is still claimed where it was sent.
Nothing survives the process.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from .._clock import SYSTEM_CLOCK, Clock
from .._json import dumps
from ..errors import DuplicateKeyError
from ..messages import new_id
from ._backend import (
    RECEIVED_KEEP,
    RECEIVED_PRUNE_EVERY,
    Backend,
    DeadLetter,
    Delivery,
    EndpointRecord,
    Envelope,
    InstanceRecord,
    InstanceStats,
    LogEntry,
    ReplyRecord,
    UserRecord,
    cut,
)
from ._signals import Signals

__all__ = ["MemoryBackend"]


@dataclass(slots=True)
class _Message:
    seq: int
    flow_id: str
    body: str
    dispatch_point: str
    user_id: str
    parallel: bool
    deliveries: int = 0
    lease: str | None = None
    lease_until: float = 0.0


@dataclass(slots=True)
class _Instance:
    record: InstanceRecord  # config/state inside are never handed out: see _public
    config_json: str
    state_json: str


class MemoryBackend(Backend):
    """Everything in this process's memory; see the module doc. Lease deadlines and creation
    times are read from ``clock`` (the system clock by default)."""

    volatile = True

    def __init__(self, url: str = "memory://", *, clock: Clock | None = None) -> None:
        self.url = url
        self.clock = clock or SYSTEM_CLOCK
        self._lock = threading.Lock()
        self._signals = Signals()
        self._users: list[UserRecord] = []
        self._endpoints: dict[tuple[str, str], EndpointRecord] = {}
        self._instances: dict[str, _Instance] = {}
        self._queues: dict[str, deque[_Message]] = {}
        self._replies: dict[str, str] = {}
        self._dead: list[DeadLetter] = []
        self._log: dict[str, deque[LogEntry]] = {}
        self._received: dict[str, float] = {}
        self._seq = 0

    # -- users ------------------------------------------------------------------------------

    def add_user(self, user: UserRecord) -> None:
        with self._lock:
            if any(u.user_id == user.user_id for u in self._users):
                raise DuplicateKeyError(f"user {user.user_id} exists already")
            self._users.append(user)

    def add_user_below(self, user: UserRecord, count: int) -> bool:
        with self._lock:
            if len(self._users) >= count:
                return False
            if any(u.user_id == user.user_id for u in self._users):
                raise DuplicateKeyError(f"user {user.user_id} exists already")
            self._users.append(user)
            return True

    def list_users(self) -> list[UserRecord]:
        with self._lock:
            return list(self._users)

    # -- endpoints --------------------------------------------------------------------------

    def serve_endpoint(self, endpoint: EndpointRecord) -> bool:
        key = (endpoint.user_id, endpoint.endpoint)
        with self._lock:
            current = self._endpoints.get(key)
            if current is not None and current.served:
                return False
            created = current.created_at if current else endpoint.created_at
            self._endpoints[key] = replace(endpoint, served=True, created_at=created)
            return True

    def get_endpoint(self, user_id: str, endpoint: str) -> EndpointRecord | None:
        with self._lock:
            return self._endpoints.get((user_id, endpoint))

    def list_endpoints(self, user_id: str) -> list[EndpointRecord]:
        with self._lock:
            return [e for (u, _), e in self._endpoints.items() if u == user_id]

    def set_served(self, user_id: str, endpoint: str, served: bool) -> bool:
        with self._lock:
            current = self._endpoints.get((user_id, endpoint))
            if current is None:
                return False
            self._endpoints[(user_id, endpoint)] = replace(current, served=served)
            return True

    def delete_endpoint(self, user_id: str, endpoint: str) -> list[str]:
        with self._lock:
            self._endpoints.pop((user_id, endpoint), None)
            ids = [
                fid
                for fid, inst in self._instances.items()
                if inst.record.user_id == user_id and inst.record.endpoint == endpoint
            ]
            for fid in ids:
                del self._instances[fid]
                self._log.pop(fid, None)
            return ids

    # -- instances --------------------------------------------------------------------------

    def add_instances(self, instances: Sequence[InstanceRecord]) -> None:
        rows = [
            _Instance(
                replace(record, config={}, state={}),
                dumps(record.config),
                dumps(record.state),
            )
            for record in instances
        ]
        with self._lock:
            for row in rows:
                if row.record.flow_id in self._instances:
                    raise DuplicateKeyError(f"instance {row.record.flow_id} exists already")
            for row in rows:
                self._instances[row.record.flow_id] = row

    def get_instance(self, flow_id: str) -> InstanceRecord | None:
        with self._lock:
            row = self._instances.get(flow_id)
        return None if row is None else _public(row)

    def list_instances(self, user_id: str, endpoint: str | None = None) -> list[InstanceRecord]:
        with self._lock:
            rows = [
                row
                for row in self._instances.values()
                if row.record.user_id == user_id
                and (endpoint is None or row.record.endpoint == endpoint)
            ]
        return [_public(row) for row in rows]

    def delete_instance(self, flow_id: str) -> bool:
        with self._lock:
            self._log.pop(flow_id, None)
            return self._instances.pop(flow_id, None) is not None

    # -- messages ---------------------------------------------------------------------------

    def enqueue(
        self, envelopes: Sequence[Envelope], replies: Sequence[ReplyRecord] = ()
    ) -> list[str]:
        points: set[str] = set()
        with self._lock:
            unknown = self._enqueue_locked(envelopes, replies, points)
        self._notify(points, replies)
        return unknown

    def enqueue_once(
        self,
        key: str,
        envelopes: Sequence[Envelope],
        replies: Sequence[ReplyRecord] = (),
        *,
        wake: bool = True,
    ) -> list[str] | None:
        points: set[str] = set()
        with self._lock:
            if key in self._received:
                return None
            now = self._received[key] = self.clock.time()
            if len(self._received) % RECEIVED_PRUNE_EVERY == 0:
                # Insertion order is time order: the expired keys come first.
                while next(iter(self._received.values())) < now - RECEIVED_KEEP:
                    del self._received[next(iter(self._received))]
            unknown = self._enqueue_locked(envelopes, replies, points)
        self._notify(points if wake else set(), replies)
        return unknown

    def _enqueue_locked(
        self, envelopes: Sequence[Envelope], replies: Sequence[ReplyRecord], points: set[str]
    ) -> list[str]:
        unknown = []
        for env in envelopes:
            row = self._instances.get(env.flow_id)
            if row is None:
                unknown.append(env.flow_id)
                continue
            rec = row.record
            self._seq += 1
            queue = self._queues.get(env.flow_id)
            if queue is None:
                queue = self._queues[env.flow_id] = deque()
            queue.append(
                _Message(
                    self._seq,
                    env.flow_id,
                    env.body,
                    rec.dispatch_point,
                    rec.user_id,
                    rec.parallel_dispatch,
                )
            )
            points.add(rec.dispatch_point)
        for reply in replies:
            self._replies.setdefault(reply.future_id, reply.body)  # the first reply wins
        return unknown

    def _notify(self, points: set[str], replies: Sequence[ReplyRecord]) -> None:
        if points:
            self._signals.messages(points)
        if replies:
            self._signals.replies([r.future_id for r in replies])

    def claim(
        self,
        dispatch_point: str,
        user_id: str | None,
        lease_seconds: float,
        limit: int,
    ) -> list[Delivery]:
        if limit <= 0:
            return []
        self._signals.remember(dispatch_point)
        now = self.clock.time()
        with self._lock:
            candidates: list[tuple[_Message, _Instance | None]] = []
            for flow_id, queue in self._queues.items():
                head = queue[0]
                if head.dispatch_point != dispatch_point or (
                    user_id is not None and head.user_id != user_id
                ):
                    continue
                row = self._instances.get(flow_id)
                parallel = head.parallel
                for msg in queue:
                    if msg.lease is None or msg.lease_until <= now:
                        candidates.append((msg, row))
                    elif not parallel:
                        break
                    if not parallel:
                        break
            candidates.sort(key=lambda c: c[0].seq)
            out = []
            for msg, row in candidates[:limit]:
                msg.lease = new_id()
                msg.lease_until = now + lease_seconds
                msg.deliveries += 1
                out.append(
                    Delivery(
                        seq=msg.seq,
                        flow_id=msg.flow_id,
                        body=msg.body,
                        deliveries=msg.deliveries,
                        lease=msg.lease,
                        instance=None if row is None else _public(row),
                    )
                )
            return out

    def complete(
        self,
        delivery: Delivery,
        *,
        state: dict[str, Any] | None,
        envelopes: Sequence[Envelope] = (),
        replies: Sequence[ReplyRecord] = (),
        dead_letter: DeadLetter | None = None,
        log: LogEntry | None = None,
    ) -> tuple[bool, list[str]]:
        state_json = None if state is None else dumps(state)
        points: set[str] = set()
        with self._lock:
            queue = self._queues.get(delivery.flow_id)
            msg = _find(queue, delivery.seq)
            if queue is None or msg is None or msg.lease != delivery.lease:
                return False, []
            queue.remove(msg)
            if not queue:
                del self._queues[delivery.flow_id]
            row = self._instances.get(delivery.flow_id)
            if state_json is not None and row is not None:
                row.state_json = state_json
                row.record = replace(row.record, state_version=row.record.state_version + 1)
            now = self.clock.time()
            if dead_letter is not None:
                self._dead.append(replace(dead_letter, created_at=now))
            if log is not None and self.log_limit > 0:
                self._add_log_locked(log, now)
            unknown = self._enqueue_locked(envelopes, replies, points)
            if queue:
                points.add(queue[0].dispatch_point)  # the next message became claimable
        self._notify(points, replies)
        return True, unknown

    def extend_lease(self, delivery: Delivery, lease_seconds: float) -> bool:
        now = self.clock.time()
        with self._lock:
            msg = _find(self._queues.get(delivery.flow_id), delivery.seq)
            if msg is None or msg.lease != delivery.lease:
                return False
            msg.lease_until = now + lease_seconds
            return True

    def take_queued(self, flow_id: str) -> list[str]:
        now = self.clock.time()
        with self._lock:
            queue = self._queues.get(flow_id)
            if not queue:
                return []
            taken = [m for m in queue if m.lease is None or m.lease_until <= now]
            for msg in taken:
                queue.remove(msg)
            if not queue:
                del self._queues[flow_id]
            return [m.body for m in taken]

    def release(self, delivery: Delivery) -> None:
        with self._lock:
            msg = _find(self._queues.get(delivery.flow_id), delivery.seq)
            if msg is None or msg.lease != delivery.lease:
                return
            msg.lease = None
            msg.lease_until = 0.0
            msg.deliveries = max(0, msg.deliveries - 1)
        self._signals.messages([msg.dispatch_point])

    def take_reply(self, future_id: str) -> str | None:
        with self._lock:
            return self._replies.pop(future_id, None)

    def peek_reply(self, future_id: str) -> str | None:
        with self._lock:
            return self._replies.get(future_id)

    def pending_count(self, flow_id: str | None = None) -> int:
        with self._lock:
            if flow_id is not None:
                return len(self._queues.get(flow_id, ()))
            return sum(len(q) for q in self._queues.values())

    def list_dead_letters(self, flow_id: str | None = None) -> list[DeadLetter]:
        with self._lock:
            return [d for d in self._dead if flow_id is None or d.flow_id == flow_id]

    def _add_log_locked(self, log: LogEntry, now: float) -> None:
        entries = self._log.get(log.flow_id)
        if entries is None or entries.maxlen != self.log_limit:
            entries = self._log[log.flow_id] = deque(entries or (), maxlen=self.log_limit)
        entry = replace(
            log,
            body=cut(log.body) or "",
            reply=cut(log.reply),
            error=cut(log.error),
            finished_at=now,
        )
        entries.append(entry)

    # -- inspection -------------------------------------------------------------------------

    def instance_stats(self, flow_ids: Sequence[str] | None = None) -> dict[str, InstanceStats]:
        now = self.clock.time()
        found: dict[str, dict[str, Any]] = {}
        with self._lock:
            for flow_id, queue in self._queues.items():
                leased = sum(1 for m in queue if m.lease_until > now)
                found[flow_id] = {"queued": len(queue), "in_flight": leased}
            for dead in self._dead:
                row = found.setdefault(dead.flow_id, {})
                row["dead_letters"] = row.get("dead_letters", 0) + 1
            for flow_id, entries in self._log.items():
                if not entries:
                    continue
                row = found.setdefault(flow_id, {})
                row["last_activity"] = max(e.finished_at for e in entries)
                for entry in reversed(entries):
                    if entry.outcome != "ok":
                        row.update(last_error=entry.error, last_error_at=entry.finished_at)
                        break
        wanted = found.keys() if flow_ids is None else flow_ids
        return {f: InstanceStats(f, **found.get(f, {})) for f in wanted}

    def message_log(self, flow_id: str, limit: int | None = None) -> list[LogEntry]:
        count = self.log_limit if limit is None else limit
        with self._lock:
            entries = list(self._log.get(flow_id, ()))
        return entries[::-1][: max(0, count)]

    # -- wake-ups ---------------------------------------------------------------------------

    def wait_for_messages(self, dispatch_point: str, timeout: float) -> None:
        token = self._signals.message_token(dispatch_point)
        self._signals.wait_messages(dispatch_point, token, time.monotonic() + max(0.0, timeout))

    def wait_for_reply(self, future_id: str, timeout: float) -> None:
        token = self._signals.everything_token()
        with self._lock:
            if future_id in self._replies:
                return
        self._signals.wait_reply(future_id, token, time.monotonic() + max(0.0, timeout))

    def wake(self) -> None:
        self._signals.everything()

    def close(self) -> None:
        self._signals.close()


def _find(queue: deque[_Message] | None, seq: int) -> _Message | None:
    if queue:
        for msg in queue:
            if msg.seq == seq:
                return msg
    return None


def _public(row: _Instance) -> InstanceRecord:
    return replace(row.record, config=json.loads(row.config_json), state=json.loads(row.state_json))
