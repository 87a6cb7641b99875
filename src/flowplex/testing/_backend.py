"""The conformance kit for :class:`flowplex.runtime.Backend` implementations.

Every ``check_*`` function takes an *opener*: a callable returning a new backend object, that
accepts a ``clock=`` keyword (``MemoryBackend`` itself, or
``functools.partial(open_backend, url)``). The checks in :data:`CHECKS` need a fresh store
each and call the opener once (apart from the lease checks, which pass a :class:`FakeClock`);
the checks in :data:`SHARED_STORE_CHECKS` call it several times and need every object to
open the same store (a SQLite file, a PostgreSQL schema): they cover restarts, wake-ups
across backend objects (as across processes) and concurrent workers. :func:`check_backend`
runs them all. Each check opens its own backends and closes them.

The checks fail with :class:`AssertionError` (plain ``assert`` statements: do not run them
under ``python -O``), so they run under any test runner; pytest is not needed.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Protocol

from .._clock import Clock
from ..errors import DuplicateKeyError
from ..runtime import (
    LOG_PRUNE_EVERY,
    LOG_TEXT_LIMIT,
    RECEIVED_KEEP,
    RECEIVED_PRUNE_EVERY,
    Backend,
    Completion,
    DeadLetter,
    Delivery,
    EndpointRecord,
    Envelope,
    InstanceRecord,
    LogEntry,
    ReplyRecord,
    UserRecord,
)
from ._clock import FakeClock
from ._raises import raises

__all__ = [
    "CHECKS",
    "SHARED_STORE_CHECKS",
    "Check",
    "Opener",
    "check_backend",
    "endpoint_record",
    "instance",
]


class Opener(Protocol):
    """Opens a new backend object (on the store under test), on ``clock`` if one is given."""

    def __call__(self, *, clock: Clock | None = None) -> Backend:
        """A new, open backend object."""
        ...


#: A conformance check: raises AssertionError (or the backend's error) if the backend fails it.
Check = Callable[[Opener], None]

DP = "default"
U1 = "a1" * 32
U2 = "b2" * 32
# Generous bounds for liveness checks: a waiter must return well before its own timeout.
WAIT_TIMEOUT = 5.0
PROMPT = 2.0

_clock = itertools.count(1)


def _t() -> float:
    """Increasing creation times, so "oldest first" is well defined."""
    return 1_700_000_000.0 + next(_clock)


def instance(
    flow_id: str,
    *,
    user_id: str = U1,
    endpoint: str = "ep",
    dispatch_point: str = DP,
    parallel: bool = False,
    config: dict[str, Any] | None = None,
    state: dict[str, Any] | None = None,
) -> InstanceRecord:
    """An instance record with sensible defaults."""
    return InstanceRecord(
        flow_id=flow_id,
        user_id=user_id,
        endpoint=endpoint,
        client_id="local",
        flow_class_name="tests.testflows.Echo",
        config={"flow_id": flow_id, "name": "Echo", "nested": {"k": [1, 2]}}
        if config is None
        else config,
        state={"n": 0} if state is None else state,
        dispatch_point=dispatch_point,
        dispatch_point_override=None if dispatch_point == DP else dispatch_point,
        parallel_dispatch=parallel,
        created_at=_t(),
    )


def endpoint_record(
    name: str, *, user_id: str = U1, dispatch_point: str = DP, singleton: bool = False
) -> EndpointRecord:
    """A served endpoint record."""
    return EndpointRecord(
        user_id=user_id,
        endpoint=name,
        flow_class_name="tests.testflows.Echo",
        singleton=singleton,
        parallel_dispatch=False,
        dispatch_point=dispatch_point,
        served=True,
        created_at=_t(),
    )


@contextmanager
def opened(open_backend: Opener, clock: Clock | None = None) -> Iterator[Backend]:
    """A backend (on ``clock`` if given) closed at the end of the block."""
    backend = open_backend() if clock is None else open_backend(clock=clock)
    try:
        yield backend
    finally:
        backend.close()


def claim_one(backend: Backend, lease: float = 30.0, dispatch_point: str = DP) -> Delivery:
    """Claim exactly one message."""
    got = backend.claim(dispatch_point, None, lease, 10)
    assert len(got) == 1, got
    return got[0]


def bodies(deliveries: list[Delivery]) -> list[str]:
    """The bodies of ``deliveries``, in order."""
    return [d.body for d in deliveries]


# -- users --------------------------------------------------------------------------------------


def check_users_oldest_first(open_backend: Opener) -> None:
    """list_users returns every user, oldest first."""
    with opened(open_backend) as b:
        assert b.list_users() == []
        users = [UserRecord(f"{i:064x}", _t()) for i in (3, 1, 2)]
        for user in users:
            b.add_user(user)
        assert b.list_users() == users


def check_duplicate_user_rejected(open_backend: Opener) -> None:
    """Adding a user id twice is a DuplicateKeyError and keeps the first row."""
    with opened(open_backend) as b:
        first = UserRecord("c3" * 32, _t())
        b.add_user(first)
        with raises(DuplicateKeyError, match="exists already"):
            b.add_user(UserRecord(first.user_id, _t() + 1))
        assert b.list_users() == [first]


def check_add_user_below(open_backend: Opener) -> None:
    """add_user_below stores a user only while there are fewer than ``count``."""
    with opened(open_backend) as b:
        users = [UserRecord(f"{i:064x}", _t()) for i in (1, 2, 3)]
        assert b.add_user_below(users[0], 1) is True
        assert b.add_user_below(users[1], 1) is False
        assert b.add_user_below(users[1], 2) is True
        assert b.add_user_below(users[2], 2) is False
        assert b.list_users() == users[:2]


# -- endpoints ----------------------------------------------------------------------------------


def check_serve_endpoint(open_backend: Opener) -> None:
    """Serving is True once, False (changing nothing) while served; unknown is None."""
    with opened(open_backend) as b:
        assert b.get_endpoint(U1, "ep") is None
        first = endpoint_record("ep")
        assert b.serve_endpoint(first) is True
        assert b.get_endpoint(U1, "ep") == first
        other = EndpointRecord(U1, "ep", "x.Other", True, True, "gpu", True, _t())
        assert b.serve_endpoint(other) is False
        assert b.get_endpoint(U1, "ep") == first
        assert b.get_endpoint(U2, "ep") is None


def check_reserve_after_unserve(open_backend: Opener) -> None:
    """An unserved endpoint is served again with the new settings, its created_at and its
    instances kept."""
    with opened(open_backend) as b:
        first = endpoint_record("ep")
        b.serve_endpoint(first)
        b.add_instances([instance("f1")])
        assert b.set_served(U1, "ep", False) is True
        unserved = b.get_endpoint(U1, "ep")
        assert unserved is not None and unserved.served is False
        again = EndpointRecord(U1, "ep", "x.Other", True, True, "gpu", False, _t())
        assert b.serve_endpoint(again) is True
        assert b.get_endpoint(U1, "ep") == EndpointRecord(
            U1, "ep", "x.Other", True, True, "gpu", True, first.created_at
        )
        assert [i.flow_id for i in b.list_instances(U1, "ep")] == ["f1"]


def check_list_endpoints_and_set_served(open_backend: Opener) -> None:
    """Endpoints are listed per user in creation order; set_served is False when unknown."""
    with opened(open_backend) as b:
        records = [endpoint_record(name) for name in ("b", "a", "c")]
        for record in records:
            b.serve_endpoint(record)
        b.serve_endpoint(endpoint_record("z", user_id=U2))
        assert b.list_endpoints(U1) == records
        assert [e.endpoint for e in b.list_endpoints(U2)] == ["z"]
        assert b.list_endpoints("nobody") == []
        assert b.set_served(U1, "missing", False) is False
        assert b.set_served(U1, "a", False) is True
        assert [e.served for e in b.list_endpoints(U1)] == [True, False, True]
        assert b.set_served(U1, "a", True) is True
        assert b.get_endpoint(U1, "a") == records[1]


def check_delete_endpoint(open_backend: Opener) -> None:
    """Deleting an endpoint removes it and its instances (returned in mount order) only."""
    with opened(open_backend) as b:
        b.serve_endpoint(endpoint_record("ep"))
        b.serve_endpoint(endpoint_record("keep"))
        b.add_instances([instance("f2"), instance("f1"), instance("k", endpoint="keep")])
        b.add_instances([instance("f3")])
        assert b.delete_endpoint(U1, "ep") == ["f2", "f1", "f3"]
        assert b.get_endpoint(U1, "ep") is None
        assert b.get_instance("f1") is None
        assert b.list_instances(U1) == [b.get_instance("k")]
        assert b.get_endpoint(U1, "keep") is not None
        assert b.delete_endpoint(U1, "ep") == []


# -- instances ----------------------------------------------------------------------------------


def check_instances(open_backend: Opener) -> None:
    """get/list (by user, by endpoint, in mount order) and delete instances."""
    with opened(open_backend) as b:
        records = [
            instance("f3"),
            instance("f1", endpoint="other"),
            instance("f2", parallel=True, dispatch_point="gpu"),
            instance("g1", user_id=U2),
        ]
        b.add_instances(records[:2])
        b.add_instances(records[2:])
        assert b.get_instance("f2") == records[2]
        assert b.get_instance("missing") is None
        assert b.list_instances(U1) == records[:3]
        assert b.list_instances(U1, "ep") == [records[0], records[2]]
        assert b.list_instances(U2) == [records[3]]
        assert b.list_instances(U1, "nothing") == []
        assert b.delete_instance("f3") is True
        assert b.delete_instance("f3") is False
        assert b.get_instance("f3") is None
        assert b.list_instances(U1) == records[1:3]


def check_add_instances_all_or_nothing(open_backend: Opener) -> None:
    """A batch with an id that exists already raises DuplicateKeyError and adds nothing."""
    with opened(open_backend) as b:
        b.add_instances([instance("f1")])
        with raises(DuplicateKeyError, match="f1"):
            b.add_instances([instance("new1"), instance("f1"), instance("new2")])
        assert b.get_instance("new1") is None
        assert b.get_instance("new2") is None
        assert [i.flow_id for i in b.list_instances(U1)] == ["f1"]
        b.add_instances([])
        assert len(b.list_instances(U1)) == 1


def check_records_share_nothing_mutable(open_backend: Opener) -> None:
    """Config and state handed in or out are copies: mutating them changes nothing stored."""
    with opened(open_backend) as b:
        record = instance("f1", config={"a": {"b": [1]}}, state={"s": [1]})
        b.add_instances([record])
        record.config["a"]["b"].append(2)
        record.state["s"].append(2)
        got = b.get_instance("f1")
        assert got is not None
        assert got.config == {"a": {"b": [1]}} and got.state == {"s": [1]}
        got.config["a"]["b"].append(3)
        got.state["x"] = 1
        listed = b.list_instances(U1)[0]
        assert listed.config == {"a": {"b": [1]}} and listed.state == {"s": [1]}
        b.enqueue([Envelope("f1", "m1")])
        delivery = claim_one(b)
        assert delivery.instance is not None
        delivery.instance.state["s"].append(9)
        new_state = {"s": [5]}
        b.complete(delivery, state=new_state)
        new_state["s"].append(6)
        again = b.get_instance("f1")
        assert again is not None and again.state == {"s": [5]}


# -- queue --------------------------------------------------------------------------------------


def check_enqueue_returns_unknown(open_backend: Opener) -> None:
    """Messages to unknown instances are not queued; their ids come back in order."""
    with opened(open_backend) as b:
        b.add_instances([instance("f1")])
        unknown = b.enqueue(
            [Envelope("x", "1"), Envelope("f1", "2"), Envelope("y", "3"), Envelope("x", "4")]
        )
        assert unknown == ["x", "y", "x"]
        assert b.pending_count() == 1
        assert b.enqueue([]) == []
        assert bodies(b.claim(DP, None, 30, 10)) == ["2"]


def check_enqueue_once(open_backend: Opener) -> None:
    """A batch stored under a key is stored once: the same key again stores nothing (None),
    however often it comes, and the first time answers the unknown flow ids as enqueue."""
    with opened(open_backend) as b:
        b.add_instances([instance("f1")])
        assert b.enqueue_once("k1", [Envelope("f1", "1"), Envelope("x", "2")]) == ["x"]
        assert b.enqueue_once("k1", [Envelope("f1", "1")]) is None
        assert b.enqueue_once("k2", [], [ReplyRecord("fut", "r")]) == []
        assert b.enqueue_once("k2", [], [ReplyRecord("fut2", "r")]) is None
        assert bodies(b.claim(DP, None, 30, 10)) == ["1"]
        assert b.take_reply("fut") == "r"
        assert b.take_reply("fut2") is None


def check_enqueue_once_forgets_expired_keys(open_backend: Opener) -> None:
    """Keys older than RECEIVED_KEEP are pruned (every RECEIVED_PRUNE_EVERY keys): a key is
    refused while kept, and taken again once forgotten."""
    clock = FakeClock()
    with opened(open_backend, clock) as b:
        assert b.enqueue_once("old", []) == []
        clock.advance(RECEIVED_KEEP + 1)
        for i in range(RECEIVED_PRUNE_EVERY):
            b.enqueue_once(f"k{i}", [])
        assert b.enqueue_once("k0", []) is None  # still kept
        assert b.enqueue_once("old", []) == []  # forgotten: taken again


def check_claim_order_across_instances(open_backend: Opener) -> None:
    """Claims come oldest first across instances, up to ``limit``."""
    with opened(open_backend) as b:
        b.add_instances([instance(f) for f in ("fa", "fb", "fc", "fd")])
        b.enqueue([Envelope("fc", "c1"), Envelope("fa", "a1")])
        b.enqueue([Envelope("fd", "d1")])
        b.enqueue([Envelope("fb", "b1")])
        first = b.claim(DP, None, 30, 2)
        assert bodies(first) == ["c1", "a1"]
        assert [d.flow_id for d in first] == ["fc", "fa"]
        assert first[0].seq < first[1].seq
        rest = b.claim(DP, None, 30, 10)
        assert bodies(rest) == ["d1", "b1"]
        assert all(d.deliveries == 1 for d in first + rest)
        assert b.claim(DP, None, 30, 10) == []
        assert b.claim(DP, None, 30, 0) == []


def check_fifo_one_in_flight(open_backend: Opener) -> None:
    """An instance's next message is claimable only once the one in flight is done."""
    with opened(open_backend) as b:
        b.add_instances([instance("f1"), instance("f2")])
        b.enqueue([Envelope("f1", "1"), Envelope("f1", "2"), Envelope("f2", "x")])
        b.enqueue([Envelope("f1", "3")])
        got = b.claim(DP, None, 30, 10)
        assert bodies(got) == ["1", "x"]
        assert b.claim(DP, None, 30, 10) == []
        assert b.complete(got[0], state=None) == (True, [])
        second = b.claim(DP, None, 30, 10)
        assert bodies(second) == ["2"]
        assert b.claim(DP, None, 30, 10) == []
        b.complete(second[0], state=None)
        assert bodies(b.claim(DP, None, 30, 10)) == ["3"]


def check_parallel_instances(open_backend: Opener) -> None:
    """A parallel instance's messages may all be in flight at once, still oldest first."""
    with opened(open_backend) as b:
        b.add_instances([instance("p", parallel=True), instance("s")])
        b.enqueue([Envelope("p", "p1"), Envelope("s", "s1"), Envelope("p", "p2")])
        b.enqueue([Envelope("s", "s2"), Envelope("p", "p3")])
        got = b.claim(DP, None, 30, 10)
        assert bodies(got) == ["p1", "s1", "p2", "p3"]
        b.complete(got[2], state=None)
        b.enqueue([Envelope("p", "p4")])
        assert bodies(b.claim(DP, None, 30, 10)) == ["p4"]
        assert b.pending_count("p") == 3


def check_claim_filters(open_backend: Opener) -> None:
    """Claims take only their dispatch point's messages, and only ``user_id``'s if given."""
    with opened(open_backend) as b:
        b.add_instances(
            [
                instance("u1", user_id=U1),
                instance("u2", user_id=U2),
                instance("gpu", dispatch_point="gpu"),
            ]
        )
        b.enqueue([Envelope("gpu", "g"), Envelope("u2", "b"), Envelope("u1", "a")])
        assert bodies(b.claim(DP, U1, 30, 10)) == ["a"]
        assert b.claim(DP, U1, 30, 10) == []
        assert b.claim("elsewhere", None, 30, 10) == []
        assert bodies(b.claim(DP, None, 30, 10)) == ["b"]
        got = b.claim("gpu", None, 30, 10)
        assert bodies(got) == ["g"]
        assert got[0].instance is not None and got[0].instance.dispatch_point == "gpu"


def check_lease_expiry(open_backend: Opener) -> None:
    """A message is claimable again exactly when its lease runs out on the backend's clock,
    with its delivery counted; not a moment before."""
    clock = FakeClock()
    with opened(open_backend, clock) as b:
        b.add_instances([instance("f1")])
        b.enqueue([Envelope("f1", "m")])
        first = claim_one(b, lease=10.0)
        assert first.deliveries == 1
        assert b.claim(DP, None, 30, 10) == []
        clock.advance(9.5)
        assert b.claim(DP, None, 30, 10) == [], "claimable before its lease ran out"
        clock.advance(0.5)
        again = b.claim(DP, None, 30, 10)
        assert [(d.seq, d.body, d.deliveries) for d in again] == [(first.seq, "m", 2)]
        assert again[0].lease != first.lease


def check_extend_lease(open_backend: Opener) -> None:
    """extend_lease keeps a message leased past its first deadline (a worker's heartbeat),
    measured from now on the backend's clock; once the lease is gone it changes nothing and
    says so."""
    clock = FakeClock()
    with opened(open_backend, clock) as b:
        b.add_instances([instance("f1")])
        b.enqueue([Envelope("f1", "m")])
        held = claim_one(b, lease=3.0)
        for _ in range(5):
            clock.advance(2.0)
            assert b.extend_lease(held, 3.0) is True
            assert b.claim(DP, None, 30, 10) == [], "claimable while its lease was extended"
        clock.advance(3.0)
        [again] = b.claim(DP, None, 30, 10)
        assert (again.seq, again.deliveries) == (held.seq, 2)
        assert b.extend_lease(held, 60.0) is False, "extended a lease another worker took"
        assert b.complete(held, state=None) == (False, [])
        assert b.extend_lease(again, 3.0) is True
        assert b.complete(again, state=None) == (True, [])
        assert b.extend_lease(again, 3.0) is False, "extended a completed message"
        assert b.pending_count() == 0


def check_take_queued(open_backend: Opener) -> None:
    """take_queued removes the messages of an instance that no worker holds and returns their
    bodies oldest first; a leased one stays with its worker, other instances keep theirs."""
    clock = FakeClock()
    with opened(open_backend, clock) as b:
        b.add_instances([instance("gone", parallel=True), instance("f2")])
        b.enqueue([Envelope("gone", "m1"), Envelope("f2", "x"), Envelope("gone", "m2")])
        b.enqueue([Envelope("gone", "m3")])
        held = b.claim(DP, None, 30.0, 1)
        assert bodies(held) == ["m1"]
        assert b.delete_instance("gone") is True
        assert b.take_queued("gone") == ["m2", "m3"]
        assert b.take_queued("gone") == []
        assert b.pending_count("gone") == 1 and b.pending_count("f2") == 1
        assert b.complete(held[0], state=None) == (True, [])
        assert bodies(b.claim(DP, None, 30.0, 10)) == ["x"]


def check_complete_with_lost_lease(open_backend: Opener) -> None:
    """Completing after the lease went to another worker returns (False, []), changes nothing."""
    clock = FakeClock()
    with opened(open_backend, clock) as b:
        b.add_instances([instance("f1", state={"v": 1}), instance("f2")])
        b.enqueue([Envelope("f1", "m")])
        stale = claim_one(b, lease=5.0)
        clock.advance(6.0)
        fresh = claim_one(b)
        outcome = b.complete(
            stale,
            state={"v": 2},
            envelopes=[Envelope("f2", "sent"), Envelope("ghost", "x")],
            replies=[ReplyRecord("fut", "reply")],
            dead_letter=DeadLetter("f1", "m", "boom", 1),
        )
        assert outcome == (False, [])
        current = b.get_instance("f1")
        assert current is not None and current.state == {"v": 1} and current.state_version == 0
        assert b.pending_count() == 1
        assert b.take_reply("fut") is None
        assert b.list_dead_letters() == []
        b.release(stale)
        assert b.claim(DP, None, 30, 10) == []
        assert b.complete(fresh, state={"v": 3}) == (True, [])
        current = b.get_instance("f1")
        assert current is not None and current.state == {"v": 3} and current.state_version == 1


def check_clock_jumps_do_not_break_leases(open_backend: Opener) -> None:
    """Leases follow the backend's wall clock: a lease taken just before the clock is set back
    an hour runs out an hour late, not at once; one taken after runs out on time."""
    clock = FakeClock()
    with opened(open_backend, clock) as b:
        b.add_instances([instance("f1"), instance("f2")])
        b.enqueue([Envelope("f1", "m1")])
        claim_one(b, lease=60.0)
        clock.set_time(clock.time() - 3600)
        b.enqueue([Envelope("f2", "m2")])
        second = claim_one(b, lease=60.0)
        assert second.body == "m2"
        clock.advance(61.0)
        [again] = b.claim(DP, None, 30, 10)
        assert again.body == "m2"
        assert b.complete(again, state=None) == (True, [])
        clock.advance(3600.0)
        assert bodies(b.claim(DP, None, 30, 10)) == ["m1"]


def check_complete_commits_everything(open_backend: Opener) -> None:
    """complete removes the message and stores state, messages, replies and dead letter (dated
    by the backend's clock)."""
    clock = FakeClock()
    with opened(open_backend, clock) as b:
        b.add_instances([instance("f1", state={"v": 0}), instance("f2")])
        b.enqueue([Envelope("f1", "m1"), Envelope("f1", "m2")])
        delivery = claim_one(b)
        assert delivery.instance is not None and delivery.instance.state_version == 0
        clock.advance(12.5)
        outcome = b.complete(
            delivery,
            state={"v": 1},
            envelopes=[Envelope("f2", "to-f2"), Envelope("ghost", "x"), Envelope("f1", "m3")],
            replies=[ReplyRecord("fut1", "r1"), ReplyRecord("fut2", "r2")],
            dead_letter=DeadLetter("f1", "m1", "gave up", 4),
        )
        assert outcome == (True, ["ghost"])
        current = b.get_instance("f1")
        assert current is not None and current.state == {"v": 1} and current.state_version == 1
        assert b.pending_count("f1") == 2
        assert b.pending_count("f2") == 1
        assert b.take_reply("fut1") == "r1"
        assert b.take_reply("fut2") == "r2"
        [letter] = b.list_dead_letters()
        assert (letter.flow_id, letter.body, letter.error, letter.deliveries) == (
            "f1",
            "m1",
            "gave up",
            4,
        )
        assert letter.created_at == clock.time(), "dead letters are dated by the backend's clock"
        got = b.claim(DP, None, 30, 10)
        assert bodies(got) == ["m2", "to-f2"]
        assert got[0].instance is not None and got[0].instance.state == {"v": 1}
        assert got[0].instance.state_version == 1
        b.complete(got[0], state={"v": 2})
        assert bodies(b.claim(DP, None, 30, 10)) == ["m3"]
        current = b.get_instance("f1")
        assert current is not None and current.state_version == 2


def check_complete_many(open_backend: Opener) -> None:
    """complete_many completes each delivery as complete would, in order: effects of all,
    the next message of each one-at-a-time instance claimable, a lost lease failing alone."""
    clock = FakeClock()
    with opened(open_backend, clock) as b:
        b.add_instances([instance("f1", state={"v": 0}), instance("f2"), instance("f3")])
        b.enqueue([Envelope(f, f"{f}-m{i}") for i in (1, 2) for f in ("f1", "f2", "f3")])
        first, second, lost = b.claim(DP, None, 30, 10)
        clock.advance(31.0)  # every lease runs out; all are claimed again
        again = {d.flow_id: d for d in b.claim(DP, None, 30, 3)}
        results = b.complete_many(
            [
                Completion(
                    again[first.flow_id],
                    {"v": 1},
                    envelopes=[Envelope("f3", "to-f3"), Envelope("ghost", "x")],
                    replies=[ReplyRecord("fut", "r1")],
                    log=LogEntry("f1", "f1-m1", "ok", "r1"),
                ),
                Completion(lost, None, replies=[ReplyRecord("fut-lost", "never")]),
                Completion(again[second.flow_id], None, replies=[ReplyRecord("fut", "r2")]),
            ]
        )
        assert results == [(True, ["ghost"]), (False, []), (True, [])]
        current = b.get_instance("f1")
        assert current is not None and current.state == {"v": 1} and current.state_version == 1
        assert b.take_reply("fut") == "r1", "the first reply stored for a future wins"
        assert b.take_reply("fut-lost") is None
        assert [e.body for e in b.message_log("f1")] == ["f1-m1"]
        assert b.pending_count("f3") == 3
        assert bodies(b.claim(DP, None, 30, 10)) == ["f1-m2", "f2-m2"]
        assert b.complete_many([]) == []


def check_complete_without_state(open_backend: Opener) -> None:
    """complete with state=None leaves the state and its version alone."""
    with opened(open_backend) as b:
        b.add_instances([instance("f1", state={"keep": True})])
        b.enqueue([Envelope("f1", "m")])
        assert b.complete(claim_one(b), state=None) == (True, [])
        current = b.get_instance("f1")
        assert current is not None
        assert (current.state, current.state_version) == ({"keep": True}, 0)
        assert b.pending_count() == 0


def check_release(open_backend: Opener) -> None:
    """release gives the message back at once, uncounting the delivery; a stale one is
    ignored."""
    with opened(open_backend) as b:
        b.add_instances([instance("f1")])
        b.enqueue([Envelope("f1", "m"), Envelope("f1", "n")])
        first = claim_one(b)
        b.release(first)
        again = claim_one(b)
        assert (again.seq, again.body, again.deliveries) == (first.seq, "m", 1)
        b.release(first)  # stale: the lease is again's now
        assert b.claim(DP, None, 30, 10) == []
        assert b.complete(again, state=None) == (True, [])
        assert bodies(b.claim(DP, None, 30, 10)) == ["n"]


def check_replies(open_backend: Opener) -> None:
    """take_reply removes and returns a reply; the first one stored for a future wins, within
    one batch or across commits (a flow that replies twice is answered by its first reply)."""
    with opened(open_backend) as b:
        assert b.take_reply("nothing") is None
        batch = [ReplyRecord("f", "one"), ReplyRecord("g", "gee"), ReplyRecord("g", "again")]
        assert b.enqueue([], batch) == []
        b.enqueue([], [ReplyRecord("f", "two")])
        assert b.take_reply("f") == "one"
        assert b.take_reply("f") is None
        assert b.take_reply("g") == "gee"


def check_peek_reply(open_backend: Opener) -> None:
    """peek_reply returns the reply and leaves it for take_reply."""
    with opened(open_backend) as b:
        assert b.peek_reply("f") is None
        b.enqueue([], [ReplyRecord("f", "one")])
        assert b.peek_reply("f") == "one"
        assert b.peek_reply("f") == "one"
        assert b.take_reply("f") == "one"
        assert b.peek_reply("f") is None


def check_pending_count(open_backend: Opener) -> None:
    """pending_count counts queued and leased messages, per instance or in all."""
    with opened(open_backend) as b:
        b.add_instances([instance("f1"), instance("f2")])
        assert b.pending_count() == 0
        b.enqueue([Envelope("f1", "a"), Envelope("f1", "b"), Envelope("f2", "c")])
        got = b.claim(DP, None, 30, 10)
        assert len(got) == 2
        assert (b.pending_count(), b.pending_count("f1"), b.pending_count("f2")) == (3, 2, 1)
        assert b.pending_count("nobody") == 0
        b.complete(got[0], state=None)
        assert (b.pending_count(), b.pending_count("f1")) == (2, 1)


def check_dead_letters(open_backend: Opener) -> None:
    """Dead letters are listed oldest first, all or per instance."""
    with opened(open_backend) as b:
        b.add_instances([instance("f1"), instance("f2")])
        b.enqueue([Envelope("f1", "1"), Envelope("f2", "2")])
        for delivery in b.claim(DP, None, 30, 10):
            letter = DeadLetter(delivery.flow_id, delivery.body, f"err {delivery.body}", 3)
            b.complete(delivery, state=None, dead_letter=letter)
        b.enqueue([Envelope("f1", "3")])
        third = claim_one(b)
        b.complete(third, state=None, dead_letter=DeadLetter("f1", "3", "err 3", 5))
        assert [(d.flow_id, d.body, d.error) for d in b.list_dead_letters()] == [
            ("f1", "1", "err 1"),
            ("f2", "2", "err 2"),
            ("f1", "3", "err 3"),
        ]
        assert [d.body for d in b.list_dead_letters("f1")] == ["1", "3"]
        assert b.list_dead_letters("nobody") == []


# -- inspection (the dashboard's reads) ---------------------------------------------------------


def check_message_log_written_with_completion(open_backend: Opener) -> None:
    """A completion's log entry is kept, newest first, with its outcome, reply and error and
    the completion's time on the backend's clock; a completion whose lease was lost logs
    nothing; reads give the last ``log_limit``."""
    clock = FakeClock()
    with opened(open_backend, clock) as b:
        b.log_limit = 3
        b.add_instances([instance("f1"), instance("f2")])
        b.enqueue([Envelope("f1", f"m{i}") for i in range(5)])
        for i in range(5):
            d = claim_one(b)
            clock.advance(1.0)
            outcome, error = ("error", f"ValueError: {i}") if i == 3 else ("ok", None)
            entry = LogEntry("f1", d.body, outcome, f"reply {i}", error, d.deliveries, 0.5)
            assert b.complete(d, state=None, log=entry) == (True, [])
        b.enqueue([Envelope("f2", "other")])
        d = claim_one(b)
        b.complete(d, state=None, log=LogEntry("f2", d.body, "ok", "r"))
        log = b.message_log("f1")
        assert [e.body for e in log] == ["m4", "m3", "m2"]
        assert [(e.outcome, e.reply, e.error) for e in log][:2] == [
            ("ok", "reply 4", None),
            ("error", "reply 3", "ValueError: 3"),
        ]
        assert (log[0].duration, log[0].deliveries) == (0.5, 1)
        assert [e.finished_at for e in log] == [clock.time() - i for i in range(3)]
        assert [e.body for e in b.message_log("f1", limit=1)] == ["m4"]
        assert [e.body for e in b.message_log("f2")] == ["other"]
        assert b.message_log("nobody") == []
        # A lost lease commits no log entry either.
        b.enqueue([Envelope("f1", "late")])
        late = claim_one(b, lease=5.0)
        clock.advance(6.0)
        again = claim_one(b)
        assert b.complete(late, state=None, log=LogEntry("f1", "late", "ok")) == (False, [])
        b.complete(again, state=None)
        assert [e.body for e in b.message_log("f1")] == ["m4", "m3", "m2"]


def check_message_log_stays_bounded(open_backend: Opener) -> None:
    """However many messages an instance processes, its log keeps the newest ``log_limit``
    for reading and at most ``LOG_PRUNE_EVERY`` more in storage."""
    with opened(open_backend) as b:
        b.log_limit = 3
        b.add_instances([instance("f1")])
        for i in range(5 * LOG_PRUNE_EVERY):
            b.enqueue([Envelope("f1", f"m{i}")])
            d = claim_one(b)
            b.complete(d, state=None, log=LogEntry("f1", d.body, "ok"))
        last = 5 * LOG_PRUNE_EVERY - 1
        assert [e.body for e in b.message_log("f1")] == [f"m{last - i}" for i in range(3)]
        kept = b.message_log("f1", limit=10_000)
        assert 3 <= len(kept) <= 3 + LOG_PRUNE_EVERY
        assert [e.body for e in kept] == [f"m{last - i}" for i in range(len(kept))]


def check_message_log_long_texts_cut_and_forgotten(open_backend: Opener) -> None:
    """Texts beyond LOG_TEXT_LIMIT are cut; deleting an instance (or its endpoint) forgets its
    log; a log_limit of 0 keeps nothing."""
    with opened(open_backend) as b:
        b.add_instances([instance("f1"), instance("f2", endpoint="other"), instance("f3")])
        b.enqueue([Envelope("f1", "x"), Envelope("f2", "y"), Envelope("f3", "z")])
        long = "x" * (LOG_TEXT_LIMIT + 100)
        for d in b.claim(DP, None, 30, 10):
            b.complete(d, state=None, log=LogEntry(d.flow_id, long, "ok", long))
        entry = b.message_log("f1")[0]
        assert entry.body.startswith("x" * LOG_TEXT_LIMIT) and len(entry.body) < len(long)
        assert entry.reply is not None and entry.reply.endswith("(cut)")
        assert b.delete_instance("f1") is True
        assert b.message_log("f1") == []
        assert b.delete_endpoint(U1, "other") == ["f2"]
        assert b.message_log("f2") == []
        assert len(b.message_log("f3")) == 1
        b.log_limit = 0
        b.enqueue([Envelope("f3", "z2")])
        b.complete(claim_one(b), state=None, log=LogEntry("f3", "z2", "ok"))
        assert b.message_log("f3", limit=10)[0].reply == entry.reply  # z2 was not logged
        assert len(b.message_log("f3", limit=10)) == 1


def check_instance_stats(open_backend: Opener) -> None:
    """instance_stats counts queued, in-flight (leased, on the backend's clock) and
    dead-lettered messages and names the last error (a dead letter or a failed run), per
    instance."""
    clock = FakeClock()
    with opened(open_backend, clock) as b:
        b.add_instances([instance("f1"), instance("f2"), instance("idle")])
        b.enqueue([Envelope("f1", "a"), Envelope("f1", "b"), Envelope("f2", "c")])
        leased = b.claim(DP, None, 30, 10)  # f1's head and f2's message
        assert sorted(d.body for d in leased) == ["a", "c"]
        stats = b.instance_stats(["f1", "f2", "idle"])
        assert (stats["f1"].queued, stats["f1"].in_flight) == (2, 1)
        assert (stats["f2"].queued, stats["f2"].in_flight) == (1, 1)
        assert (stats["idle"].queued, stats["idle"].in_flight, stats["idle"].last_error) == (
            0,
            0,
            None,
        )
        clock.advance(31.0)  # the leases ran out: queued, no longer in flight
        expired = b.instance_stats(["f1"])["f1"]
        assert (expired.queued, expired.in_flight) == (2, 0)
        leased = b.claim(DP, None, 30, 10)
        for d in leased:
            if d.flow_id == "f2":
                letter = DeadLetter("f2", d.body, "gave up", 5)
                b.complete(d, state=None, dead_letter=letter, log=LogEntry("f2", "c", "dead"))
            else:
                b.complete(d, state=None, log=LogEntry("f1", "a", "error", error="Boom: a"))
        failed_at = clock.time()
        clock.advance(1.0)
        b.complete(claim_one(b), state=None, log=LogEntry("f1", "b", "ok", "fine"))
        stats = b.instance_stats()
        assert set(stats) >= {"f1", "f2"} and "idle" not in stats
        f1, f2 = stats["f1"], stats["f2"]
        assert (f1.queued, f1.in_flight, f1.dead_letters, f1.last_error) == (0, 0, 0, "Boom: a")
        assert (f1.last_error_at, f1.last_activity) == (failed_at, clock.time())
        assert (f2.queued, f2.dead_letters) == (0, 1)


def check_deleted_instance_messages(open_backend: Opener) -> None:
    """Messages of a deleted instance stay claimable (instance None) so they can be answered."""
    with opened(open_backend) as b:
        b.add_instances([instance("gone", state={"v": 1}), instance("f2")])
        b.enqueue([Envelope("gone", "m1"), Envelope("gone", "m2")])
        assert b.delete_instance("gone") is True
        assert b.enqueue([Envelope("gone", "late")]) == ["gone"]
        delivery = claim_one(b)
        assert (delivery.flow_id, delivery.body, delivery.instance) == ("gone", "m1", None)
        reply = ReplyRecord("fut", "error reply")
        assert b.complete(delivery, state={"v": 2}, replies=[reply]) == (True, [])
        assert b.take_reply("fut") == "error reply"
        assert b.get_instance("gone") is None
        second = claim_one(b)
        assert (second.body, second.instance) == ("m2", None)
        b.complete(second, state=None)
        assert b.pending_count() == 0


def check_deleted_instance_messages_keep_their_dispatch_point(open_backend: Opener) -> None:
    """A deleted instance's messages are claimed only at the dispatch point (and by the user
    filter) they were queued under, as if the instance were still there."""
    with opened(open_backend) as b:
        b.add_instances([instance("gone", dispatch_point="gpu", user_id=U2)])
        b.enqueue([Envelope("gone", "m1")])
        assert b.delete_instance("gone") is True
        assert b.claim(DP, None, 30.0, 10) == []
        assert b.claim("gpu", U1, 30.0, 10) == []
        delivery = b.claim("gpu", U2, 30.0, 10)
        assert [(d.flow_id, d.body, d.instance) for d in delivery] == [("gone", "m1", None)]


def check_claim_with_no_room(open_backend: Opener) -> None:
    """A claim for zero (or fewer) messages takes nothing and leaves the queue as it was."""
    with opened(open_backend) as b:
        b.add_instances([instance("f1")])
        b.enqueue([Envelope("f1", "m")])
        assert b.claim(DP, None, 30.0, 0) == []
        assert b.claim(DP, None, 30.0, -1) == []
        assert claim_one(b).deliveries == 1


def check_claims_after_drained_queue(open_backend: Opener) -> None:
    """A message queued after a claim found nothing, or after a claim of one message took
    the only one, is claimed by the next claim (a store that skips looking when its last
    claim came back short must still see what arrived since)."""
    with opened(open_backend) as b:
        b.add_instances([instance("p", parallel=True)])
        assert b.claim(DP, None, 30.0, 8) == []
        b.enqueue([Envelope("p", "a")])
        assert [d.body for d in b.claim(DP, None, 30.0, 1)] == ["a"]
        assert b.claim(DP, None, 30.0, 8) == []
        b.enqueue([Envelope("p", "b"), Envelope("p", "c")])
        assert [d.body for d in b.claim(DP, None, 30.0, 1)] == ["b"]
        assert [d.body for d in b.claim(DP, None, 30.0, 8)] == ["c"]


# -- wake-ups -----------------------------------------------------------------------------------


def _waiter(wait: Callable[[], None]) -> tuple[threading.Thread, list[float]]:
    """Start a thread running ``wait``; the list gets how long it took."""
    elapsed: list[float] = []
    started = threading.Event()

    def run() -> None:
        started.set()
        t0 = time.monotonic()
        wait()
        elapsed.append(time.monotonic() - t0)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert started.wait(WAIT_TIMEOUT)
    return thread, elapsed


def _poke_until_done(thread: threading.Thread, poke: Callable[[], object]) -> None:
    """Call ``poke`` every 50 ms until ``thread`` ends (the waiter may not be waiting yet at
    the first poke), for at most PROMPT seconds; then give it the rest of its time."""
    deadline = time.monotonic() + PROMPT
    while thread.is_alive() and time.monotonic() < deadline:
        poke()
        thread.join(0.05)
    thread.join(WAIT_TIMEOUT + 1)


def check_wait_for_messages_wakes(open_backend: Opener) -> None:
    """A waiter returns promptly when another thread queues a message."""
    with opened(open_backend) as b:
        b.add_instances([instance("p", parallel=True)])
        thread, elapsed = _waiter(lambda: b.wait_for_messages(DP, WAIT_TIMEOUT))
        _poke_until_done(thread, lambda: b.enqueue([Envelope("p", "m")]))
        assert elapsed and elapsed[0] < PROMPT, elapsed


def check_wait_for_reply_wakes(open_backend: Opener) -> None:
    """A reply waiter returns promptly when another thread stores its reply."""
    with opened(open_backend) as b:
        thread, elapsed = _waiter(lambda: b.wait_for_reply("fut", WAIT_TIMEOUT))
        b.enqueue([], [ReplyRecord("fut", "r")])
        thread.join(WAIT_TIMEOUT + 1)
        assert elapsed and elapsed[0] < PROMPT, elapsed
        assert b.take_reply("fut") == "r"


def check_wait_times_out(open_backend: Opener) -> None:
    """With nothing happening, waits return after (about) their timeout, not never."""
    with opened(open_backend) as b:
        t0 = time.monotonic()
        b.wait_for_messages(DP, 0.2)
        b.wait_for_reply("nothing", 0.2)
        assert time.monotonic() - t0 < PROMPT


def check_no_lost_wakeup_between_claim_and_wait(open_backend: Opener) -> None:
    """A message queued after a worker's empty claim but before its wait is not slept through:
    the wait returns at once instead of after its timeout."""
    with opened(open_backend) as b:
        b.add_instances([instance("f1")])
        assert b.claim(DP, None, 30.0, 10) == []
        b.enqueue([Envelope("f1", "m")])
        t0 = time.monotonic()
        b.wait_for_messages(DP, WAIT_TIMEOUT)
        assert time.monotonic() - t0 < PROMPT


def check_wake_returns_waiters(open_backend: Opener) -> None:
    """wake makes current waits return now (a stopping worker need not sit out its timeout),
    and the backend stays usable."""
    with opened(open_backend) as b:
        b.add_instances([instance("f1")])
        messages, m_elapsed = _waiter(lambda: b.wait_for_messages(DP, WAIT_TIMEOUT))
        reply, r_elapsed = _waiter(lambda: b.wait_for_reply("fut", WAIT_TIMEOUT))
        _poke_until_done(messages, b.wake)
        _poke_until_done(reply, b.wake)
        assert m_elapsed and m_elapsed[0] < PROMPT, m_elapsed
        assert r_elapsed and r_elapsed[0] < PROMPT, r_elapsed
        b.enqueue([Envelope("f1", "m")])
        assert claim_one(b).body == "m"


def check_close_wakes_waiters(open_backend: Opener) -> None:
    """close wakes every waiter at once, and is idempotent."""
    b = open_backend()
    messages, m_elapsed = _waiter(lambda: b.wait_for_messages(DP, WAIT_TIMEOUT))
    reply, r_elapsed = _waiter(lambda: b.wait_for_reply("fut", WAIT_TIMEOUT))
    b.close()
    messages.join(WAIT_TIMEOUT + 1)
    reply.join(WAIT_TIMEOUT + 1)
    assert m_elapsed and m_elapsed[0] < PROMPT, m_elapsed
    assert r_elapsed and r_elapsed[0] < PROMPT, r_elapsed
    b.close()


# -- several backend objects on one store ---------------------------------------------------------


def _run_together(*jobs: Callable[[], None]) -> None:
    """Run ``jobs`` in threads at once and wait for them; fail with their errors, if any."""
    errors: list[BaseException] = []

    def guard(job: Callable[[], None]) -> None:
        try:
            job()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=guard, args=(job,)) for job in jobs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(90)
    assert not errors, errors
    assert not any(thread.is_alive() for thread in threads), "a worker thread hung"


def check_first_users_once_across_backends(open_backend: Opener) -> None:
    """Backend objects adding "the first user" at once (processes starting on a fresh
    database) add exactly one between them."""
    backends = [open_backend() for _ in range(4)]
    try:
        start = threading.Barrier(len(backends))

        def first_user(b: Backend, i: int) -> Callable[[], None]:
            def job() -> None:
                start.wait(30)
                b.add_user_below(UserRecord(f"{i + 10:064x}", _t()), 1)

            return job

        _run_together(*(first_user(b, i) for i, b in enumerate(backends)))
        assert len(backends[0].list_users()) == 1
    finally:
        for b in backends:
            b.close()


def check_reopen_sees_everything(open_backend: Opener) -> None:
    """A backend opened later (a restart) finds everything the first one committed."""
    user = UserRecord("c3" * 32, _t())
    served = endpoint_record("ep")
    with opened(open_backend) as first:
        first.add_user(user)
        first.serve_endpoint(served)
        first.add_instances([instance("f1", state={"v": 0}), instance("f2")])
        first.enqueue([Envelope("f1", "m1")])
        delivery = claim_one(first)
        first.complete(
            delivery,
            state={"v": 1},
            replies=[ReplyRecord("fut", "r")],
            dead_letter=DeadLetter("f1", "m1", "e", 1),
        )
        first.enqueue([Envelope("f2", "m2")])
        leased = claim_one(first)
    with opened(open_backend) as second:
        assert second.list_users() == [user]
        assert second.get_endpoint(U1, "ep") == served
        current = second.get_instance("f1")
        assert current is not None and (current.state, current.state_version) == ({"v": 1}, 1)
        assert second.take_reply("fut") == "r"
        assert [d.error for d in second.list_dead_letters()] == ["e"]
        assert second.pending_count() == 1
        # Still leased by the first object's worker: not claimable until its lease runs out.
        assert second.claim(DP, None, 30, 10) == []
        assert second.complete(leased, state=None) == (True, [])
        assert second.pending_count() == 0


def check_wakes_across_backends(open_backend: Opener) -> None:
    """Waiters wake promptly for commits made through another backend object on the same
    store (as from another process)."""
    with opened(open_backend) as waiting, opened(open_backend) as sending:
        waiting.add_instances([instance("p", parallel=True)])
        thread, elapsed = _waiter(lambda: waiting.wait_for_messages(DP, WAIT_TIMEOUT))
        _poke_until_done(thread, lambda: sending.enqueue([Envelope("p", "m")]))
        assert elapsed and elapsed[0] < PROMPT, elapsed
        thread, elapsed = _waiter(lambda: waiting.wait_for_reply("fut", WAIT_TIMEOUT))
        sending.enqueue([], [ReplyRecord("fut", "r")])
        thread.join(WAIT_TIMEOUT + 1)
        assert elapsed and elapsed[0] < PROMPT, elapsed


def check_concurrent_claims(open_backend: Opener) -> None:
    """Two workers, each with its own backend object, share 200 messages to 20 instances:
    every message is claimed exactly once, each instance's in enqueue order."""
    flows = [f"f{i:02d}" for i in range(20)]
    per_flow = 10
    with opened(open_backend) as setup:
        setup.add_instances([instance(f) for f in flows])
        for j in range(per_flow):
            setup.enqueue([Envelope(f, f"{f}:{j}") for f in flows])
    claimed: dict[str, list[int]] = {f: [] for f in flows}
    seen: list[int] = []
    lock = threading.Lock()
    deadline = time.monotonic() + 60

    def work(limit: int) -> None:
        with opened(open_backend) as b:
            while time.monotonic() < deadline:
                with lock:
                    if len(seen) == len(flows) * per_flow:
                        return
                got = b.claim(DP, None, 30, limit)
                if not got:
                    b.wait_for_messages(DP, 0.05)
                    continue
                for d in got:
                    flow, j = d.body.split(":")
                    assert d.deliveries == 1, d
                    with lock:
                        claimed[flow].append(int(j))
                        seen.append(d.seq)
                    assert b.complete(d, state={"last": int(j)}) == (True, [])

    _run_together(lambda: work(3), lambda: work(7))
    assert len(seen) == len(set(seen)) == len(flows) * per_flow
    assert all(order == list(range(per_flow)) for order in claimed.values()), claimed
    with opened(open_backend) as b:
        assert b.pending_count() == 0
        final = b.get_instance("f07")
        assert final is not None
        assert (final.state, final.state_version) == ({"last": per_flow - 1}, per_flow)


def check_concurrent_producers_and_workers(open_backend: Opener) -> None:
    """Senders and workers (each with its own backend object) run at the same time, workers
    forwarding every message to another instance: nothing is lost, claimed twice or stuck, an
    instance never has two messages in flight, and each sender's messages keep their order."""
    flows = [f"f{i}" for i in range(5)]
    per_sender = 60
    senders = 2
    total = 2 * senders * per_sender  # every original is forwarded once
    with opened(open_backend) as setup:
        setup.add_instances([instance(f) for f in flows])
    in_flight: set[str] = set()
    seen: list[str] = []
    order: dict[tuple[str, str], list[int]] = {}
    lock = threading.Lock()
    deadline = time.monotonic() + 60

    def send(name: str) -> None:
        with opened(open_backend) as b:
            for i in range(per_sender):
                assert b.enqueue([Envelope(flows[i % len(flows)], f"{name}:{i}")]) == []

    def work(limit: int) -> None:
        with opened(open_backend) as b:
            while time.monotonic() < deadline:
                with lock:
                    if len(seen) == total:
                        return
                got = b.claim(DP, None, 30, limit)
                if not got:
                    b.wait_for_messages(DP, 0.05)
                    continue
                for d in got:
                    with lock:
                        assert d.flow_id not in in_flight, f"two in flight: {d.flow_id}"
                        in_flight.add(d.flow_id)
                        seen.append(d.body)
                        sender, i = d.body.rsplit(":", 1)
                        order.setdefault((d.flow_id, sender), []).append(int(i))
                    out = []
                    if not d.body.startswith("fwd"):
                        target = flows[(flows.index(d.flow_id) + 1) % len(flows)]
                        out = [Envelope(target, f"fwd-{d.body}")]
                    with lock:
                        # Before completing: from the commit on, the next one may be claimed.
                        in_flight.discard(d.flow_id)
                    assert b.complete(d, state={"last": d.body}, envelopes=out) == (True, [])

    _run_together(
        *(lambda n=n: send(f"s{n}") for n in range(senders)),
        *(lambda n=n: work(n) for n in (1, 4, 16)),
    )
    assert len(seen) == len(set(seen)) == total
    for (_, sender), indexes in order.items():
        if not sender.startswith("fwd"):
            assert indexes == sorted(indexes), (sender, indexes)
    with opened(open_backend) as b:
        assert b.pending_count() == 0


#: Checks every backend passes, each with a fresh store.
CHECKS: list[Check] = [
    check_users_oldest_first,
    check_duplicate_user_rejected,
    check_add_user_below,
    check_serve_endpoint,
    check_reserve_after_unserve,
    check_list_endpoints_and_set_served,
    check_delete_endpoint,
    check_instances,
    check_add_instances_all_or_nothing,
    check_records_share_nothing_mutable,
    check_enqueue_returns_unknown,
    check_enqueue_once,
    check_claim_order_across_instances,
    check_fifo_one_in_flight,
    check_parallel_instances,
    check_claim_filters,
    check_lease_expiry,
    check_extend_lease,
    check_take_queued,
    check_complete_with_lost_lease,
    check_clock_jumps_do_not_break_leases,
    check_enqueue_once_forgets_expired_keys,
    check_complete_commits_everything,
    check_complete_many,
    check_complete_without_state,
    check_release,
    check_replies,
    check_peek_reply,
    check_pending_count,
    check_dead_letters,
    check_message_log_written_with_completion,
    check_message_log_long_texts_cut_and_forgotten,
    check_message_log_stays_bounded,
    check_instance_stats,
    check_deleted_instance_messages,
    check_deleted_instance_messages_keep_their_dispatch_point,
    check_claim_with_no_room,
    check_claims_after_drained_queue,
    check_wait_for_messages_wakes,
    check_wait_for_reply_wakes,
    check_wait_times_out,
    check_no_lost_wakeup_between_claim_and_wait,
    check_wake_returns_waiters,
    check_close_wakes_waiters,
]

#: Checks that open several backend objects on one store (durable backends only).
SHARED_STORE_CHECKS: list[Check] = [
    check_first_users_once_across_backends,
    check_reopen_sees_everything,
    check_wakes_across_backends,
    check_concurrent_claims,
    check_concurrent_producers_and_workers,
]


def check_backend(fresh_store: Callable[[], Opener], *, durable: bool = True) -> None:
    """Run every check against the backend that ``fresh_store`` opens.

    ``fresh_store`` is called once per check and returns an opener on a new, empty store
    (``lambda: MemoryBackend`` for an in-process backend; for a database, an opener on a new
    file or schema). With ``durable``, the :data:`SHARED_STORE_CHECKS` run too (the opener
    must then open one shared store each time it is called). The first failing check raises
    :class:`AssertionError` naming it.
    """
    for check in [*CHECKS, *(SHARED_STORE_CHECKS if durable else [])]:
        try:
            check(fresh_store())
        except AssertionError as exc:
            raise AssertionError(f"{check.__name__} failed: {exc}") from exc
