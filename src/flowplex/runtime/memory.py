"""``MemoryBackend``: the in-process, volatile twin of the SQL backends.

Same semantics as SQLite and PostgreSQL (the conformance suite checks), kept in dicts under one
lock; config and state are held as JSON text so callers never share mutable objects with it.
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

from ..messages import new_id
from ._backend import (
    Backend,
    DeadLetter,
    Delivery,
    EndpointRecord,
    Envelope,
    InstanceRecord,
    ReplyRecord,
    UserRecord,
)

__all__ = ["MemoryBackend"]


@dataclass(slots=True)
class _Message:
    seq: int
    flow_id: str
    body: str
    deliveries: int = 0
    lease: str | None = None
    lease_until: float = 0.0


@dataclass(slots=True)
class _Instance:
    record: InstanceRecord  # config/state inside are never handed out: see _public
    config_json: str
    state_json: str


class MemoryBackend(Backend):
    """Everything in this process's memory; see the module doc."""

    def __init__(self, url: str = "memory://") -> None:
        self.url = url
        self._cond = threading.Condition(threading.Lock())
        self._users: list[UserRecord] = []
        self._endpoints: dict[tuple[str, str], EndpointRecord] = {}
        self._instances: dict[str, _Instance] = {}
        self._queues: dict[str, deque[_Message]] = {}
        self._replies: dict[str, str] = {}
        self._dead: list[DeadLetter] = []
        self._seq = 0
        self._closed = False

    # -- users ------------------------------------------------------------------------------

    def add_user(self, user: UserRecord) -> None:
        with self._cond:
            self._users.append(user)

    def list_users(self) -> list[UserRecord]:
        with self._cond:
            return list(self._users)

    # -- endpoints --------------------------------------------------------------------------

    def serve_endpoint(self, endpoint: EndpointRecord) -> bool:
        key = (endpoint.user_id, endpoint.endpoint)
        with self._cond:
            current = self._endpoints.get(key)
            if current is not None and current.served:
                return False
            created = current.created_at if current else endpoint.created_at
            self._endpoints[key] = replace(endpoint, served=True, created_at=created)
            return True

    def get_endpoint(self, user_id: str, endpoint: str) -> EndpointRecord | None:
        with self._cond:
            return self._endpoints.get((user_id, endpoint))

    def list_endpoints(self, user_id: str) -> list[EndpointRecord]:
        with self._cond:
            return [e for (u, _), e in self._endpoints.items() if u == user_id]

    def set_served(self, user_id: str, endpoint: str, served: bool) -> bool:
        with self._cond:
            current = self._endpoints.get((user_id, endpoint))
            if current is None:
                return False
            self._endpoints[(user_id, endpoint)] = replace(current, served=served)
            return True

    def delete_endpoint(self, user_id: str, endpoint: str) -> list[str]:
        with self._cond:
            self._endpoints.pop((user_id, endpoint), None)
            ids = [
                fid
                for fid, inst in self._instances.items()
                if inst.record.user_id == user_id and inst.record.endpoint == endpoint
            ]
            for fid in ids:
                del self._instances[fid]
            return ids

    # -- instances --------------------------------------------------------------------------

    def add_instances(self, instances: Sequence[InstanceRecord]) -> None:
        rows = [
            _Instance(
                replace(record, config={}, state={}),
                json.dumps(record.config),
                json.dumps(record.state),
            )
            for record in instances
        ]
        with self._cond:
            for row in rows:
                if row.record.flow_id in self._instances:
                    raise ValueError(f"instance {row.record.flow_id} exists already")
            for row in rows:
                self._instances[row.record.flow_id] = row

    def get_instance(self, flow_id: str) -> InstanceRecord | None:
        with self._cond:
            row = self._instances.get(flow_id)
        return None if row is None else _public(row)

    def list_instances(self, user_id: str, endpoint: str | None = None) -> list[InstanceRecord]:
        with self._cond:
            rows = [
                row
                for row in self._instances.values()
                if row.record.user_id == user_id
                and (endpoint is None or row.record.endpoint == endpoint)
            ]
        return [_public(row) for row in rows]

    def delete_instance(self, flow_id: str) -> bool:
        with self._cond:
            return self._instances.pop(flow_id, None) is not None

    # -- messages ---------------------------------------------------------------------------

    def enqueue(
        self, envelopes: Sequence[Envelope], replies: Sequence[ReplyRecord] = ()
    ) -> list[str]:
        with self._cond:
            unknown = self._enqueue_locked(envelopes, replies)
            self._cond.notify_all()
        return unknown

    def _enqueue_locked(
        self, envelopes: Sequence[Envelope], replies: Sequence[ReplyRecord]
    ) -> list[str]:
        unknown = []
        for env in envelopes:
            if env.flow_id not in self._instances:
                unknown.append(env.flow_id)
                continue
            self._seq += 1
            queue = self._queues.get(env.flow_id)
            if queue is None:
                queue = self._queues[env.flow_id] = deque()
            queue.append(_Message(self._seq, env.flow_id, env.body))
        for reply in replies:
            self._replies[reply.future_id] = reply.body
        return unknown

    def claim(
        self,
        dispatch_point: str,
        user_id: str | None,
        lease_seconds: float,
        limit: int,
    ) -> list[Delivery]:
        now = time.time()
        with self._cond:
            candidates: list[tuple[_Message, _Instance | None]] = []
            for flow_id, queue in self._queues.items():
                row = self._instances.get(flow_id)
                if row is not None:
                    rec = row.record
                    if rec.dispatch_point != dispatch_point:
                        continue
                    if user_id is not None and rec.user_id != user_id:
                        continue
                    parallel = rec.parallel_dispatch
                else:
                    # Deleted instance: any worker may claim its messages to answer them.
                    parallel = False
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
    ) -> tuple[bool, list[str]]:
        state_json = None if state is None else json.dumps(state)
        with self._cond:
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
            if dead_letter is not None:
                self._dead.append(replace(dead_letter, created_at=time.time()))
            unknown = self._enqueue_locked(envelopes, replies)
            self._cond.notify_all()
        return True, unknown

    def release(self, delivery: Delivery) -> None:
        with self._cond:
            msg = _find(self._queues.get(delivery.flow_id), delivery.seq)
            if msg is not None and msg.lease == delivery.lease:
                msg.lease = None
                msg.lease_until = 0.0
                msg.deliveries = max(0, msg.deliveries - 1)
                self._cond.notify_all()

    def take_reply(self, future_id: str) -> str | None:
        with self._cond:
            return self._replies.pop(future_id, None)

    def pending_count(self, flow_id: str | None = None) -> int:
        with self._cond:
            if flow_id is not None:
                return len(self._queues.get(flow_id, ()))
            return sum(len(q) for q in self._queues.values())

    def list_dead_letters(self, flow_id: str | None = None) -> list[DeadLetter]:
        with self._cond:
            return [d for d in self._dead if flow_id is None or d.flow_id == flow_id]

    # -- wake-ups ---------------------------------------------------------------------------

    def wait_for_messages(self, dispatch_point: str, timeout: float) -> None:
        with self._cond:
            if not self._closed:
                self._cond.wait(timeout)

    def wait_for_reply(self, future_id: str, timeout: float) -> None:
        with self._cond:
            if not self._closed and future_id not in self._replies:
                self._cond.wait(timeout)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()


def _find(queue: deque[_Message] | None, seq: int) -> _Message | None:
    if queue:
        for msg in queue:
            if msg.seq == seq:
                return msg
    return None


def _public(row: _Instance) -> InstanceRecord:
    return replace(row.record, config=json.loads(row.config_json), state=json.loads(row.state_json))
