"""Dispatch: running queued messages through their flows, and the worker threads that do it.

One message at a time per instance (the backend's leases see to that). For each delivery the
:class:`Dispatcher` builds (or reuses) the flow, fills its ``"???"`` secrets, runs it with a
:class:`RunContext` as its transport, and commits the new state, what the run sent and the
acknowledgement in one transaction. A flow that raises answers its caller with an error reply
and leaves its state as it was. A worker that dies mid-run commits nothing; the lease expires
and the message is delivered again. After ``max_deliveries`` the message is answered with an
error and kept as a dead letter.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from .._clock import Clock
from .._heartbeat import Heartbeat
from .._json import dumps
from ..errors import (
    ConfigurationError,
    MessagingError,
    RemoteError,
    StorageUnwritableError,
    UnknownInstanceError,
)
from ..flows import (
    Flow,
    InstanceAddress,
    build_flow,
    error_reply,
    rollback_state,
    run_message,
)
from ..messages import FlowMessage, ReplyMode, new_id
from ._backend import (
    Backend,
    Completion,
    DeadLetter,
    Delivery,
    Envelope,
    InstanceRecord,
    LogEntry,
    ReplyRecord,
)
from ._client import never_arrives
from ._node import Node, build_outgoing

__all__ = [
    "DEFAULT_FLOW_CACHE_SIZE",
    "DEFAULT_LEASE_SECONDS",
    "DEFAULT_MAX_DELIVERIES",
    "DispatchWorker",
    "Dispatcher",
]

logger = logging.getLogger("flowplex.worker")

#: Messages a dispatcher claims at once (see Dispatcher.run_batch: only those known to be
#: quick are kept, and they commit together).
DEFAULT_BATCH_SIZE = 8
#: How quick an instance's recent runs must have been for its message to join a batch after
#: the first (the runs of a batch wait for each other; see Dispatcher.run_batch).
QUICK_RUN = 0.002
#: What runs once a batch's completion is committed: ``done(ok, unknown_flow_ids)``.
_Done = Callable[[bool, list[str]], None]

#: How long a claimed message stays leased to a worker without a heartbeat before another may
#: take it (the worker extends it every third of it while the message runs).
DEFAULT_LEASE_SECONDS = 5.0
#: Deliveries of one message before it is answered with an error and dead-lettered.
DEFAULT_MAX_DELIVERIES = 5
#: Flows a dispatcher keeps built between messages (the most recently run instances').
DEFAULT_FLOW_CACHE_SIZE = 1024

SECRET_PLACEHOLDER = "???"


def fill_secrets(config: dict[str, Any], secrets: Mapping[str, Any], where: str) -> dict[str, Any]:
    """A copy of ``config`` with every ``"???"`` value replaced by the secret of the same key.

    Raises :class:`ConfigurationError` naming the key when the worker has no such secret.
    """

    def walk(value: Any, key: str | None, path: str) -> Any:
        if isinstance(value, dict):
            return {k: walk(v, k, f"{path}.{k}") for k, v in value.items()}
        if isinstance(value, list):
            return [walk(v, key, f"{path}[{i}]") for i, v in enumerate(value)]
        if value == SECRET_PLACEHOLDER:
            if key is None or key not in secrets:
                raise ConfigurationError(
                    f"{where}: config value {path} is '???' and this worker has no secret "
                    f"{key!r}; start the worker with secrets={{{key!r}: ...}}."
                )
            return secrets[key]
        return value

    return {k: walk(v, k, k) for k, v in config.items()}


def _has_placeholder(value: Any) -> bool:
    if isinstance(value, dict):
        return any(_has_placeholder(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_placeholder(v) for v in value)
    return bool(value == SECRET_PLACEHOLDER)


class RunContext:
    """The transport of one run: what the flow sends is held until the run commits.

    Requests whose reply the flow awaits as a future go out at once (the run may block on
    them); while it waits, the worker runs other claimable messages of its dispatch point, so a
    blocking composite completes even with a single worker.
    """

    __slots__ = ("_dispatcher", "_user_id", "replies", "requests")

    def __init__(self, dispatcher: Dispatcher, user_id: str) -> None:
        self._dispatcher = dispatcher
        self._user_id = user_id
        self.requests: list[tuple[InstanceAddress, FlowMessage]] = []
        self.replies: list[FlowMessage] = []

    @property
    def user_id(self) -> str:
        """The user serving the running instance."""
        return self._user_id

    @property
    def node(self) -> Node:
        """The node the run is on (links to other nodes sign with its users' keys)."""
        return self._dispatcher.node

    @property
    def lease_seconds(self) -> float:
        """How long the message being run stays leased: a run retrying something should give
        it back well before (raising a retryable :class:`~flowplex.RemoteError`)."""
        return self._dispatcher.lease_seconds

    @property
    def stopping(self) -> bool:
        """True once the worker running this is asked to stop (long waits should give up)."""
        return self._dispatcher.stopping

    def send(self, target: InstanceAddress, message: FlowMessage) -> None:
        """Hold ``message`` for the commit, or send it now if its reply is awaited."""
        if message.reply_data["mode"] == ReplyMode.FUTURE:
            self._dispatcher.flush()  # what ran before it in the batch goes first
            self._dispatcher.node.deliver(requests=[(target, message)])
        else:
            self.requests.append((target, message))

    def send_reply(self, reply: FlowMessage) -> None:
        """Hold ``reply`` for the commit."""
        self.replies.append(reply)

    def poll_reply(self, future_id: str) -> FlowMessage | None:
        """The reply for ``future_id`` if it has arrived."""
        body = self._dispatcher.node.backend.take_reply(future_id)
        return None if body is None else FlowMessage.from_json(body)

    def wait_reply(self, future_id: str, timeout: float | None) -> FlowMessage:
        """Wait for a reply, running other claimable messages meanwhile."""
        from ..errors import FlowTimeoutError

        dispatcher = self._dispatcher
        # The reply may depend on what the batch ran before this run: commit that first.
        dispatcher.flush()
        clock = dispatcher.clock
        deadline = None if timeout is None else clock.monotonic() + timeout
        backend = dispatcher.node.backend
        while True:
            # The worker running this flow is blocked here, so it runs other messages
            # meanwhile (otherwise a blocking composite on one worker waits for ever). A
            # helped message runs to its end, so a deadline is checked between messages. It
            # runs one before its first look for the reply, which cannot be in yet just after
            # the request was sent.
            helped = 0 if dispatcher.stopping else dispatcher.run_batch(limit=1)
            reply = self.poll_reply(future_id)
            if reply is not None:
                return reply
            if deadline is not None and clock.monotonic() >= deadline:
                raise FlowTimeoutError(f"no reply for future {future_id} within {timeout} s.")
            if dispatcher.stopping:
                raise MessagingError("the worker is stopping; giving up waiting for a reply.")
            if not helped and dispatcher.node.callers_run_everything:
                raise never_arrives(future_id)
            if not helped:
                wait = (
                    0.05 if deadline is None else max(0.0, min(0.05, deadline - clock.monotonic()))
                )
                backend.wait_for_reply(future_id, wait)

    async def wait_reply_async(self, future_id: str, timeout: float | None) -> FlowMessage:
        """As :meth:`wait_reply`, off the event loop (on it where callers run the messages:
        they run one at a time, in one thread)."""
        if self._dispatcher.node.caller_dispatchers:
            return self.wait_reply(future_id, timeout)
        return await asyncio.to_thread(self.wait_reply, future_id, timeout)


class Dispatcher:
    """Claims and runs messages of one dispatch point (of one user's instances, or all).

    ``clock`` (default: the backend's) times the waits of flows for their replies; the
    backend's clock times the leases, which a heartbeat extends while their messages run.
    ``cache_size`` bounds the flows kept built between messages (least recently run go
    first; 0 keeps none).
    """

    def __init__(
        self,
        node: Node,
        dispatch_point: str = "default",
        user_id: str | None = None,
        secrets: Mapping[str, Any] | None = None,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        max_deliveries: int = DEFAULT_MAX_DELIVERIES,
        batch_size: int = DEFAULT_BATCH_SIZE,
        *,
        clock: Clock | None = None,
        cache_size: int = DEFAULT_FLOW_CACHE_SIZE,
    ) -> None:
        if not isinstance(dispatch_point, str) or not dispatch_point:
            raise ConfigurationError("dispatch_point must be a non-empty string.")
        if lease_seconds <= 0:
            raise ConfigurationError(f"lease_seconds must be positive, got {lease_seconds!r}.")
        if max_deliveries < 1:
            raise ConfigurationError(f"max_deliveries must be >= 1, got {max_deliveries!r}.")
        if isinstance(cache_size, bool) or not isinstance(cache_size, int) or cache_size < 0:
            raise ConfigurationError(f"cache_size must be an integer >= 0, got {cache_size!r}.")
        self.node = node
        self.dispatch_point = dispatch_point
        self.user_id = user_id
        self.secrets = dict(secrets or {})
        self.lease_seconds = lease_seconds
        self.max_deliveries = max_deliveries
        self.batch_size = batch_size
        self.clock = clock or node.backend.clock
        self.stopping = False
        # Flows kept between messages, keyed by instance, least recently used first; reused
        # while the stored state_version matches (nobody else committed state meanwhile). With
        # each, the JSON of the state it committed: a run that leaves the state as it was
        # saves nothing. Bounded, and forgotten when the instance is deleted, so a
        # long-running worker's memory follows the instances it runs now, not every one it
        # ever ran (as are the run times below).
        self._flows: OrderedDict[str, tuple[int, Flow, str]] = OrderedDict()
        self.cache_size = cache_size
        self._heartbeat = _lease_heartbeat(node.backend, lease_seconds)
        # How long each instance's runs took here lately (the longest recent run, decaying),
        # for waits with a deadline, which run only messages expected to fit (run_batch).
        self._run_seconds: OrderedDict[str, float] = OrderedDict()
        # Per thread (helpers run this dispatcher's messages too): the completions of the
        # batch being run, committed together (None: each commits as it finishes).
        self._local = threading.local()

    def run_batch(self, limit: int | None = None, *, within: float | None = None) -> int:
        """Claim up to ``limit`` (default: the batch size) messages and run them; the count.

        The runs of a batch wait for each other, so a batch keeps, after its first message,
        only messages of instances whose recent runs here took under :data:`QUICK_RUN`; the
        others are given back at once for other workers. The kept ones commit together
        (:meth:`~flowplex.runtime.Backend.complete_many`: one transaction, one disk flush),
        or earlier where a run sends a request it waits on, or waits itself.

        With ``within`` (seconds), messages run only if their instances' recent runs here
        took at most half that long in all: one not seen to be that quick (a first message, a
        slow flow) is given back for the worker threads, so a wait with a deadline that helps
        run messages never gets stuck in someone else's long run.
        """
        deliveries = self.node.backend.claim(
            self.dispatch_point, self.user_id, self.lease_seconds, limit or self.batch_size
        )
        if not deliveries:
            return 0
        # Leases extended until the completions are committed (with the batch, at its flush).
        heartbeat = self._heartbeat
        for d in deliveries:
            heartbeat.hold((d.seq, d.lease), d)
        try:
            kept = self._keep(deliveries, within)
            outer = getattr(self._local, "pending", None)
            self._local.pending = [] if len(kept) > 1 else None
            try:
                for i, delivery in enumerate(kept):
                    if self.stopping:
                        for rest in kept[i:]:
                            self.node.backend.release(rest)
                        return i
                    self.process(delivery)
            finally:
                self.flush()
                self._local.pending = outer
        finally:
            for d in deliveries:
                heartbeat.drop((d.seq, d.lease))
        return len(kept)

    def _keep(self, deliveries: list[Delivery], within: float | None) -> list[Delivery]:
        """The deliveries to run (see :meth:`run_batch`); the others are released."""
        kept: list[Delivery] = []
        budget = within
        for delivery in deliveries:
            if self.stopping:
                break
            took = self._run_seconds.get(delivery.flow_id)
            if kept and (took is None or took > QUICK_RUN):
                break
            if budget is not None:
                if took is None or took * 2 > budget:
                    break
                budget -= took * 2
            kept.append(delivery)
        if len(kept) < len(deliveries):
            if not self.stopping:
                self.node.help_expected_until = 0.0  # nobody else will take them for us
            for rest in deliveries[len(kept) :]:
                self.node.backend.release(rest)
        return kept

    def flush(self) -> None:
        """Commit the completions the batch this thread runs holds (one transaction)."""
        pending: list[tuple[Completion, _Done]] | None = getattr(self._local, "pending", None)
        if not pending:
            return
        batch = pending[:]
        pending.clear()
        results = self.node.backend.complete_many([completion for completion, _ in batch])
        for (_, done), (ok, unknown) in zip(batch, results, strict=True):
            done(ok, unknown)

    def _complete(self, completion: Completion, done: _Done) -> None:
        """Commit ``completion`` now, or with its batch; then ``done(ok, unknown)``."""
        pending: list[tuple[Completion, _Done]] | None = getattr(self._local, "pending", None)
        if pending is not None:
            pending.append((completion, done))
            return
        c = completion
        ok, unknown = self.node.backend.complete(
            c.delivery, state=c.state, envelopes=c.envelopes, replies=c.replies, log=c.log
        )
        done(ok, unknown)

    def recent_run(self, flow_id: str) -> float | None:
        """How long ``flow_id``'s runs here took lately, in seconds (None: none seen yet)."""
        return self._run_seconds.get(flow_id)

    def _ran(self, flow_id: str, took: float) -> None:
        times = self._run_seconds
        last = times.pop(flow_id, None)
        times[flow_id] = took if last is None or took >= last else (last + took) / 2
        while len(times) > max(self.cache_size, 1):
            times.popitem(last=False)

    def _runnable(self, delivery: Delivery) -> tuple[FlowMessage, InstanceRecord] | None:
        """The message of ``delivery`` and its instance, or None when the delivery cannot run
        and was answered here (unreadable, unknown instance, delivered too often)."""
        try:
            message = FlowMessage.from_json(delivery.body)
        except MessagingError as exc:
            self._dead_letter(delivery, None, f"unreadable message: {exc}")
            return None
        instance = delivery.instance
        if instance is None:
            self.forget(delivery.flow_id)
            missing = UnknownInstanceError(f"Unknown flow instance {delivery.flow_id}.")
            self._commit_failure(delivery, message, missing, "unknown")
            return None
        if delivery.deliveries > self.max_deliveries:
            text = (
                f"message {message.message_id} to flow instance {delivery.flow_id} was delivered "
                f"{delivery.deliveries - 1} times without completing (the worker running it "
                f"died or lost its lease); giving up after max_deliveries={self.max_deliveries}."
            )
            self._dead_letter(delivery, message, text)
            return None
        return message, instance

    def process(self, delivery: Delivery) -> None:
        """Run one delivery and commit its outcome."""
        runnable = self._runnable(delivery)
        if runnable is None:
            return
        message, instance = runnable
        try:
            flow, saved = self._flow_for(instance)
        except Exception as exc:
            self._commit_failure(delivery, message, exc, instance.endpoint)
            return
        context = RunContext(self, instance.user_id)
        flow.attach(context)
        started = self.clock.monotonic()
        try:
            run_message(flow, message)
            # Encoding what the run sent can fail too (a reply holding a set): that is the
            # run's failure, answered to its caller, not the worker's.
            envelopes, records, sent = build_outgoing(context.requests, context.replies)
        except RemoteError as exc:
            self._flows.pop(instance.flow_id, None)
            self._remote_failure(delivery, message, exc, flow.name)
            return
        except Exception as exc:
            self._flows.pop(instance.flow_id, None)
            duration = self.clock.monotonic() - started
            self._ran(instance.flow_id, duration)
            rollback = None if instance.parallel_dispatch else rollback_state(message)
            self._commit_failure(delivery, message, exc, flow.name, duration, rollback)
            return
        duration = self.clock.monotonic() - started
        self._ran(instance.flow_id, duration)
        state, state_json = None, ""
        if not instance.parallel_dispatch:
            state_json = dumps(flow.flow_state)
            if state_json != saved:
                state = flow.flow_state
        log = LogEntry(
            delivery.flow_id,
            delivery.body,
            "ok",
            _reply_text(len(context.requests), envelopes, records),
            deliveries=delivery.deliveries,
            duration=duration,
        )

        def done(ok: bool, unknown: list[str]) -> None:
            if not ok:
                self._flows.pop(instance.flow_id, None)
                logger.warning(
                    "lost the lease on message %s to %s before committing; it runs again elsewhere",
                    message.message_id,
                    instance.flow_id,
                )
                return
            if not instance.parallel_dispatch and self.cache_size:
                version = instance.state_version + (state is not None)
                flows = self._flows
                flows[instance.flow_id] = (version, flow, state_json)
                while len(flows) > self.cache_size:
                    flows.popitem(last=False)
            if unknown:
                self.node.answer_undeliverable(unknown, sent)

        self._complete(Completion(delivery, state, envelopes, records, log=log), done)

    def _remote_failure(
        self, delivery: Delivery, message: FlowMessage, exc: RemoteError, src_flow: str
    ) -> None:
        if not exc.retryable:
            self._commit_failure(delivery, message, exc, src_flow)
            return
        # Another node cannot be reached yet. The message stays leased, unacknowledged: it runs
        # again when its lease expires (a backoff of one lease, the worker free meanwhile), and
        # after max_deliveries its sender gets an error reply.
        logger.warning(
            "flow instance %s: %s; trying again in %.0f s",
            delivery.flow_id,
            exc,
            self.lease_seconds,
        )

    @property
    def cached_flows(self) -> int:
        """How many flows this dispatcher keeps between messages now."""
        return len(self._flows)

    def forget(self, flow_id: str) -> None:
        """Drop what this dispatcher keeps for ``flow_id`` (its instance was deleted)."""
        self._flows.pop(flow_id, None)
        self._run_seconds.pop(flow_id, None)

    def _flow_for(self, instance: InstanceRecord) -> tuple[Flow, str | None]:
        """The flow to run a message of ``instance`` and the JSON of the state it holds as
        stored (None if not known: the state is then saved after the run)."""
        if not instance.parallel_dispatch:
            # Take the cached flow out while it runs: a run that lost its lease may still be
            # mutating it, and a redelivery must start from the stored state instead.
            cached = self._flows.pop(instance.flow_id, None)
            if cached is not None and cached[0] == instance.state_version:
                return cached[1], cached[2]
        cls = self.node.flow_class(instance.flow_class_name)
        config = instance.config
        if _has_placeholder(config):
            config = fill_secrets(config, self.secrets, f"flow instance {instance.flow_id}")
        flow = build_flow(cls, config)  # as the mount built it
        # Parallel runs share nothing: each gets its own copy of the (never saved) state.
        state = instance.state
        flow.flow_state = copy.deepcopy(state) if instance.parallel_dispatch else state
        return flow, None

    def _commit_failure(
        self,
        delivery: Delivery,
        message: FlowMessage,
        exc: BaseException,
        src_flow: str,
        duration: float = 0.0,
        state: dict[str, Any] | None = None,
    ) -> None:
        """Answer ``message`` with the error ``exc``, keeping the stored state (or putting
        back ``state``: a failed conversation's starting point)."""
        reply = error_reply(message, exc, src_flow, delivery.flow_id)
        envelopes, records, sent = build_outgoing((), [reply])
        log = LogEntry(
            delivery.flow_id,
            delivery.body,
            "error",
            _reply_text(0, envelopes, records),
            f"{type(exc).__name__}: {exc}",
            delivery.deliveries,
            duration,
        )
        ok, unknown = self.node.backend.complete(
            delivery, state=state, envelopes=envelopes, replies=records, log=log
        )
        if ok and unknown:
            self.node.answer_undeliverable(unknown, sent)

    def _dead_letter(self, delivery: Delivery, message: FlowMessage | None, text: str) -> None:
        logger.error("dead letter for flow instance %s: %s", delivery.flow_id, text)
        envelopes: list[Any] = []
        records: list[Any] = []
        sent: list[tuple[str, FlowMessage]] = []
        if message is not None:
            reply = error_reply(message, MessagingError(text), "dispatch", delivery.flow_id)
            envelopes, records, sent = build_outgoing((), [reply])
        letter = DeadLetter(delivery.flow_id, delivery.body, text, delivery.deliveries)
        log = LogEntry(
            delivery.flow_id,
            delivery.body,
            "dead",
            _reply_text(0, envelopes, records),
            text,
            delivery.deliveries,
        )
        ok, unknown = self.node.backend.complete(
            delivery,
            state=None,
            envelopes=envelopes,
            replies=records,
            dead_letter=letter,
            log=log,
        )
        if ok and unknown:
            self.node.answer_undeliverable(unknown, sent)


def _reply_text(
    requests: int, envelopes: Sequence[Envelope], records: Sequence[ReplyRecord]
) -> str | None:
    """The JSON of the reply to the message just run, as :func:`build_outgoing` encoded it (a
    future's reply is the first record; a pushed one the first envelope after the requests)."""
    if records:
        return records[0].body
    if len(envelopes) > requests:
        return envelopes[requests].body
    return None


#: The longest pause between a dispatcher's heartbeats, in seconds: the thread of one with a
#: very long lease (a LocalRuntime's) still notices soon that it is idle and ends.
MAX_BEAT = 2.0


def _lease_heartbeat(backend: Backend, lease_seconds: float) -> Heartbeat[Delivery]:
    """Extends the leases of the messages a dispatcher holds, every third of the lease, so
    that a message is redelivered only when its worker is gone, however long it runs. A lease
    gone to another worker is dropped: its commit will fail."""
    return Heartbeat(
        lambda d: backend.extend_lease(d, lease_seconds),
        min(lease_seconds / 3, MAX_BEAT),
        describe=lambda d: f"the lease of message {d.seq} to {d.flow_id}",
        name=f"flowplex-heartbeat-{new_id()[:8]}",
    )


class DispatchWorker(threading.Thread):
    """A daemon thread running a :class:`Dispatcher` until :meth:`stop`.

    It sleeps on the backend's wake-up when there is nothing to do, and on stop finishes the
    message in hand and gives back what it claimed but did not start.
    """

    def __init__(
        self, dispatcher: Dispatcher, idle_wait: float = 1.0, *, log_fatal: bool = True
    ) -> None:
        super().__init__(
            name=f"flowplex-dispatch-{dispatcher.dispatch_point}-{new_id()[:8]}", daemon=True
        )
        self.dispatcher = dispatcher
        self.idle_wait = idle_wait
        self._stop_event = threading.Event()
        self.processed = 0
        #: Why the worker stopped by itself: the database cannot be written (None otherwise).
        #: Logged as an error, unless ``log_fatal`` is False (its starter reports it).
        self.fatal: StorageUnwritableError | None = None
        self._log_fatal = log_fatal

    def run(self) -> None:
        """The worker loop (called by ``start``)."""
        node = self.dispatcher.node
        logger.info(
            "dispatch worker started: dispatch_point=%s user=%s",
            self.dispatcher.dispatch_point,
            self.dispatcher.user_id or "all",
        )
        try:
            while not self._stop_event.is_set():
                defer = node.help_deferral()
                if defer > 0:
                    # A thread waiting on a reply runs messages itself (or just sent one and
                    # is about to): give it the first go, for a moment only (it may be running
                    # a long one), so a message it leaves waits that moment at most.
                    self._stop_event.wait(defer)
                try:
                    count = self.dispatcher.run_batch()
                except StorageUnwritableError as exc:
                    # Retrying cannot help (read-only, disk full, the file gone): stop and
                    # say why, once, for whoever runs the worker to see.
                    self.fatal = exc
                    if self._log_fatal:
                        logger.error("dispatch worker stopped: %s", exc)
                    break
                except Exception as exc:
                    if self._stop_event.is_set() or node.closed:
                        break
                    # The database is away for a moment (a restart, a lock): one line each
                    # time, the traceback only when asked for.
                    logger.warning("dispatch worker error, retrying: %s", exc)
                    logger.debug("dispatch worker error", exc_info=True)
                    self._stop_event.wait(0.5)
                    continue
                self.processed += count
                if count == 0 and not self._stop_event.is_set():
                    node.backend.wait_for_messages(self.dispatcher.dispatch_point, self.idle_wait)
        finally:
            node.unregister_worker(self)

    def stop(self, wait: bool = True, timeout: float = 10.0) -> None:
        """Ask the worker to stop after its current message (and wait, unless ``wait=False``)."""
        self._stop_event.set()
        self.dispatcher.stopping = True
        self.dispatcher.node.backend.wake()
        if wait and self.is_alive() and threading.current_thread() is not self:
            self.join(timeout)
