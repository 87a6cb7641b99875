"""The storage seam of the serving runtime: records and the ``Backend`` interface.

Everything the serving runtime keeps (users, served endpoints, mounted instances with their
config and state, queued messages, future replies and dead letters) goes through one
:class:`Backend`. Three implement it: :class:`~flowplex.runtime.memory.MemoryBackend` (in-process,
volatile), SQLite (the embedded default) and PostgreSQL. The conformance kit of
:mod:`flowplex.testing` runs the same checks against all three (and any other implementation).

Queue semantics every backend guarantees:

- **Per-instance FIFO, one in flight.** A message is claimable only when it is the oldest
  message of its instance and no other message of that instance is leased, unless the instance
  is ``parallel``. Order is enqueue order (``seq``), across all senders.
- **Leases.** :meth:`Backend.claim` leases messages for ``lease_seconds`` (measured on the
  backend's :attr:`~Backend.clock`) and counts the delivery. A message whose lease expires
  is claimable again (the worker died), against the state as it was: nothing of the failed
  run was committed.
- **Heartbeats.** A worker extends the leases of the messages it runs
  (:meth:`Backend.extend_lease`) while it runs them, so a lease may be short (a dead worker's
  message is retried within seconds) and a long run is never delivered twice.
- **Atomic completion.** :meth:`Backend.complete` removes the message, writes the new state,
  enqueues what the run sent and stores the replies in one transaction, and only if the lease
  is still held by the caller.
- **Group commit.** :meth:`Backend.complete_many` completes several deliveries, each as
  :meth:`Backend.complete` would (a lost lease fails that one alone), in one transaction
  where the backend can: one commit, one disk flush for all of them.
- **Inspection.** Each completion may add a :class:`LogEntry` (the message, its outcome, the
  reply or error) to the instance's message log in the same transaction; reads give the last
  :attr:`Backend.log_limit` entries per instance, and the log is pruned to them as it grows
  (the SQL backends prune every few entries, so it may briefly hold a few more).
  :meth:`Backend.instance_stats` and :meth:`Backend.message_log` read what an operator looks
  at (queue depth, messages in flight, dead letters, the last error).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from .._clock import SYSTEM_CLOCK, Clock

__all__ = [
    "Backend",
    "DeadLetter",
    "Delivery",
    "EndpointRecord",
    "Envelope",
    "InstanceRecord",
    "InstanceStats",
    "LogEntry",
    "ReplyRecord",
    "UserRecord",
]


@dataclass(frozen=True, slots=True)
class UserRecord:
    """A user of a node: the hex Ed25519 public key (the private key is in a key file)."""

    user_id: str
    created_at: float


@dataclass(frozen=True, slots=True)
class EndpointRecord:
    """A flow class served by ``user_id`` at ``endpoint``; ``served`` is False once unserved."""

    user_id: str
    endpoint: str
    flow_class_name: str
    singleton: bool
    parallel_dispatch: bool
    dispatch_point: str
    served: bool
    created_at: float


@dataclass(frozen=True, slots=True)
class InstanceRecord:
    """A mounted flow instance.

    ``user_id`` serves it; ``client_id`` mounted it (``"local"`` when that is the same user).
    ``config`` is the full merged config including ``flow_id``; ``state`` the persisted
    ``flow_state``; ``state_version`` grows with each committed state. ``dispatch_point`` is the
    effective one (the override, if any, else the endpoint's).
    """

    flow_id: str
    user_id: str
    endpoint: str
    client_id: str
    flow_class_name: str
    config: dict[str, Any]
    state: dict[str, Any]
    dispatch_point: str
    dispatch_point_override: str | None
    parallel_dispatch: bool
    created_at: float
    state_version: int = 0


@dataclass(frozen=True, slots=True)
class Envelope:
    """A message to enqueue for instance ``flow_id``; ``body`` is the FlowMessage JSON."""

    flow_id: str
    body: str


@dataclass(frozen=True, slots=True)
class ReplyRecord:
    """A reply waiting for the future ``future_id`` (``body`` is the FlowMessage JSON)."""

    future_id: str
    body: str


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A message given up on after too many deliveries, kept for inspection."""

    flow_id: str
    body: str
    error: str
    deliveries: int
    created_at: float = 0.0


#: Entries kept in each instance's message log unless the backend is told otherwise.
DEFAULT_LOG_LIMIT = 50
#: A SQL backend prunes an instance's log on every this-many-th entry it writes for it, so
#: between prunes the log holds at most ``log_limit`` plus this many entries per writer.
LOG_PRUNE_EVERY = 16
#: Seconds the key of a delivery from another node is kept (see Backend.enqueue_once): a
#: sender retrying longer than this could have its message taken twice.
RECEIVED_KEEP = 7 * 86400.0
#: Keys stored between two prunes of the expired ones.
RECEIVED_PRUNE_EVERY = 1024
#: Characters of a message or reply kept in a log entry (the rest is cut, and marked so).
LOG_TEXT_LIMIT = 8192


@dataclass(frozen=True, slots=True)
class LogEntry:
    """One processed message in an instance's log.

    ``outcome`` is ``"ok"`` (the run completed), ``"error"`` (it raised: its caller got an error
    reply) or ``"dead"`` (given up on as a dead letter). ``body`` is the input message JSON,
    ``reply`` the reply's JSON when there was one, ``error`` the error's text. Both texts are cut
    to :data:`LOG_TEXT_LIMIT` characters. ``duration`` is the run's time in seconds.
    """

    flow_id: str
    body: str
    outcome: str
    reply: str | None = None
    error: str | None = None
    deliveries: int = 1
    duration: float = 0.0
    finished_at: float = 0.0


@dataclass(frozen=True, slots=True)
class InstanceStats:
    """What an operator sees of an instance: ``queued`` messages (waiting or running),
    ``in_flight`` (leased to a worker now), ``dead_letters``, the ``last_error`` in its log
    (with when it happened) and when it last finished a message."""

    flow_id: str
    queued: int = 0
    in_flight: int = 0
    dead_letters: int = 0
    last_error: str | None = None
    last_error_at: float | None = None
    last_activity: float | None = None


def cut(text: str | None) -> str | None:
    """``text`` cut to :data:`LOG_TEXT_LIMIT` characters for a log entry."""
    if text is None or len(text) <= LOG_TEXT_LIMIT:
        return text
    return text[:LOG_TEXT_LIMIT] + " …(cut)"


@dataclass(frozen=True, slots=True)
class Delivery:
    """A leased message. ``instance`` is None when the instance was deleted meanwhile.

    ``deliveries`` counts this delivery too (1 the first time). ``lease`` identifies the lease;
    :meth:`Backend.complete` succeeds only while it is held.
    """

    seq: int
    flow_id: str
    body: str
    deliveries: int
    lease: str
    instance: InstanceRecord | None


@dataclass(frozen=True, slots=True)
class Completion:
    """One delivery and what :meth:`Backend.complete` commits with it, for
    :meth:`Backend.complete_many`."""

    delivery: Delivery
    state: dict[str, Any] | None
    envelopes: Sequence[Envelope] = ()
    replies: Sequence[ReplyRecord] = ()
    dead_letter: DeadLetter | None = None
    log: LogEntry | None = None


class Backend(ABC):
    """Storage for one node. Thread-safe; every method is one transaction."""

    #: The URL this backend was opened with (``memory://``, ``sqlite:///...``, ``postgresql://...``).
    url: str
    #: True when nothing but this object sees the store (memory): no other process, no reopening.
    volatile: ClassVar[bool] = False
    #: Where lease deadlines, creation times and log timestamps come from (``clock=`` when
    #: opening; tests pass a :class:`flowplex.testing.FakeClock`).
    clock: Clock = SYSTEM_CLOCK
    #: Entries kept in each instance's message log (0 keeps none); older ones are pruned as
    #: new ones are written.
    log_limit: int = DEFAULT_LOG_LIMIT

    # -- users ------------------------------------------------------------------------------

    @abstractmethod
    def add_user(self, user: UserRecord) -> None:
        """Store a new user."""

    @abstractmethod
    def add_user_below(self, user: UserRecord, count: int) -> bool:
        """Store ``user`` only if the node has fewer than ``count`` users; whether it did.

        Atomic across processes: processes starting on a fresh database at once create
        ``count`` users between them, not ``count`` each.
        """

    @abstractmethod
    def list_users(self) -> list[UserRecord]:
        """Every user, oldest first."""

    # -- endpoints --------------------------------------------------------------------------

    @abstractmethod
    def serve_endpoint(self, endpoint: EndpointRecord) -> bool:
        """Serve ``endpoint``: False (and no change) if it is already served, else True.

        An endpoint that exists unserved is served again with the new record's settings; its
        instances are kept.
        """

    @abstractmethod
    def get_endpoint(self, user_id: str, endpoint: str) -> EndpointRecord | None:
        """The endpoint record, served or not, or None."""

    @abstractmethod
    def list_endpoints(self, user_id: str) -> list[EndpointRecord]:
        """The user's endpoints, in creation order."""

    @abstractmethod
    def set_served(self, user_id: str, endpoint: str, served: bool) -> bool:
        """Mark an endpoint served or not; False if it does not exist."""

    @abstractmethod
    def delete_endpoint(self, user_id: str, endpoint: str) -> list[str]:
        """Delete the endpoint and every instance mounted on it; returns the instance ids."""

    # -- instances --------------------------------------------------------------------------

    @abstractmethod
    def add_instances(self, instances: Sequence[InstanceRecord]) -> None:
        """Store new instances, all or none."""

    @abstractmethod
    def get_instance(self, flow_id: str) -> InstanceRecord | None:
        """The instance, or None."""

    @abstractmethod
    def list_instances(self, user_id: str, endpoint: str | None = None) -> list[InstanceRecord]:
        """Instances served by ``user_id`` (on ``endpoint`` if given), in mount order."""

    @abstractmethod
    def delete_instance(self, flow_id: str) -> bool:
        """Delete an instance; False if there was none."""

    # -- messages ---------------------------------------------------------------------------

    @abstractmethod
    def enqueue(
        self, envelopes: Sequence[Envelope], replies: Sequence[ReplyRecord] = ()
    ) -> list[str]:
        """Queue messages and store replies in one transaction.

        Messages to instances that do not exist are not queued; their flow ids are returned
        (in order) so the caller can answer them with an error. A future keeps the first reply
        stored for it (in this batch or before): a flow that replies twice is answered once.
        """

    @abstractmethod
    def enqueue_once(
        self,
        key: str,
        envelopes: Sequence[Envelope],
        replies: Sequence[ReplyRecord] = (),
        *,
        wake: bool = True,
    ) -> list[str] | None:
        """As :meth:`enqueue`, unless a batch with this ``key`` was stored before: then nothing
        is stored and it returns None.

        ``wake=False`` may leave this process's workers asleep for the queued messages: for a
        caller that runs them itself right away, and calls :meth:`wake` if it does not (other
        processes are told as always).

        For deliveries from other nodes, which retry until they hear back: the key (the sender
        and its message id) is stored in the same transaction as what it queued, so a delivery
        is taken once however often it arrives. Keys are kept :data:`RECEIVED_KEEP` seconds
        (expired ones are pruned every :data:`RECEIVED_PRUNE_EVERY` keys).
        """

    @abstractmethod
    def claim(
        self,
        dispatch_point: str,
        user_id: str | None,
        lease_seconds: float,
        limit: int,
    ) -> list[Delivery]:
        """Lease up to ``limit`` claimable messages of ``dispatch_point`` (of ``user_id``'s
        instances, or anyone's when None), oldest first; see the module doc for the rules."""

    @abstractmethod
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
        """Acknowledge ``delivery`` atomically with its effects.

        Removes the message, stores ``state`` (unless None) with a new ``state_version``,
        queues ``envelopes``, stores ``replies``, the ``dead_letter`` and the ``log`` entry
        (pruning the instance's log to :attr:`log_limit` entries). Returns
        ``(False, [])`` and changes nothing if the lease is no longer held (it expired and the
        message went to another worker); otherwise ``(True, unknown_flow_ids)`` as
        :meth:`enqueue`.
        """

    def complete_many(self, completions: Sequence[Completion]) -> list[tuple[bool, list[str]]]:
        """:meth:`complete` each of ``completions``, in order; the results in order.

        Backends that can commit them together (the SQL ones: one transaction, one disk
        flush) do; each still succeeds or fails (its lease lost) on its own. This one
        completes them one by one.
        """
        return [
            self.complete(
                c.delivery,
                state=c.state,
                envelopes=c.envelopes,
                replies=c.replies,
                dead_letter=c.dead_letter,
                log=c.log,
            )
            for c in completions
        ]

    @abstractmethod
    def extend_lease(self, delivery: Delivery, lease_seconds: float) -> bool:
        """Keep ``delivery`` leased until ``lease_seconds`` from now (on :attr:`clock`): the
        heartbeat of a worker still running it. False (and no change) if the lease is no
        longer held (the message was completed, released, or claimed by another worker)."""

    @abstractmethod
    def take_queued(self, flow_id: str) -> list[str]:
        """Remove the messages queued for ``flow_id`` that no worker holds, and return their
        bodies, oldest first: a deleted instance's messages, for its node to answer at once."""

    @abstractmethod
    def release(self, delivery: Delivery) -> None:
        """Give a leased message back at once (a worker shutting down before running it)."""

    @abstractmethod
    def take_reply(self, future_id: str) -> str | None:
        """Remove and return the reply body for ``future_id``, or None if it has not arrived."""

    @abstractmethod
    def peek_reply(self, future_id: str) -> str | None:
        """The reply body for ``future_id`` without removing it, or None if it has not arrived.

        For readers that must keep the reply until they have saved what they did with it.
        """

    @abstractmethod
    def pending_count(self, flow_id: str | None = None) -> int:
        """Messages queued or leased (for one instance, or in all)."""

    @abstractmethod
    def list_dead_letters(self, flow_id: str | None = None) -> list[DeadLetter]:
        """Dead letters (of one instance, or all), oldest first."""

    # -- inspection -------------------------------------------------------------------------

    @abstractmethod
    def instance_stats(self, flow_ids: Sequence[str] | None = None) -> dict[str, InstanceStats]:
        """Queue depth, messages in flight, dead letters and the last error of the instances
        ``flow_ids`` (default: every instance with anything to show), by flow id. An instance
        with nothing queued, logged or dead-lettered gets zero counts."""

    @abstractmethod
    def message_log(self, flow_id: str, limit: int | None = None) -> list[LogEntry]:
        """The instance's logged messages, newest first (at most ``limit``)."""

    # -- wake-ups ---------------------------------------------------------------------------

    @abstractmethod
    def wait_for_messages(self, dispatch_point: str, timeout: float) -> None:
        """Block until messages may be claimable at ``dispatch_point``, or ``timeout`` passes.

        May return early (spuriously); callers re-check by claiming.
        """

    @abstractmethod
    def wait_for_reply(self, future_id: str, timeout: float) -> None:
        """Block until the reply for ``future_id`` may have arrived, or ``timeout`` passes."""

    @abstractmethod
    def wake(self) -> None:
        """Make this process's current waits return now (spuriously), e.g. for a stopping worker."""

    @abstractmethod
    def close(self) -> None:
        """Release connections and wake every waiter. Idempotent."""
