"""``FlowRunner``: claim stored flows, tick them, save them, release them; again and again."""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any

from .._clock import Clock
from .._heartbeat import Heartbeat
from ..errors import BackendError
from ._engine import FlowEngine
from ._errors import EngineError, LeaseLostError
from ._graph import FAILED, FINISHED, TaskFlow
from ._store import Claim, FlowStore

__all__ = ["DEFAULT_CLAIM_LEASE", "MAX_BACKOFF", "FlowRunner"]

#: How long a claimed flow stays reserved to its runner without a heartbeat (the runner
#: renews it every third of it while it works on the flow).
DEFAULT_CLAIM_LEASE = 5.0

#: A flow is saved after a finished task if this many seconds passed since its last save.
SAVE_EVERY = 0.05

#: The longest pause between retries of :meth:`FlowRunner.run` while the database fails.
MAX_BACKOFF = 30.0

logger = logging.getLogger("flowplex.engine.runner")


class FlowRunner:
    """Runs the flows of a :class:`FlowStore`.

    Each :meth:`tick` claims up to ``max_flows_per_tick`` unfinished flows for ``lease``
    seconds, ticks each until it is finished or only waits (on a reply, a child run), renewing
    the lease as it goes (a heartbeat thread, every third of the lease), saving it after
    finished tasks (at most every :data:`SAVE_EVERY` seconds) and at the end, releasing the
    claim in the same statement. A runner that dies mid-task loses that task (and the quick
    ones just before it) only; its flows are claimable again once their lease runs out, and
    resume from their last save (so a task may run again: handlers should be idempotent).

    ``engine`` defaults to ``FlowEngine(store=store)``, so ``flow`` tasks store their child
    runs in the same database. Claims expire, so a crashed runner's flows are not stuck
    claimed for ever. ``clock`` (default: the store's) times the lease renewals.
    """

    def __init__(
        self,
        store: FlowStore,
        engine: FlowEngine | None = None,
        *,
        lease: float = DEFAULT_CLAIM_LEASE,
        max_flows_per_tick: int = 10,
        ctx: Mapping[str, Any] | None = None,
        clock: Clock | None = None,
    ) -> None:
        if isinstance(lease, bool) or not isinstance(lease, int | float) or lease <= 0:
            raise EngineError(f"lease must be a positive number of seconds, got {lease!r}.")
        if isinstance(max_flows_per_tick, bool) or not isinstance(max_flows_per_tick, int):
            raise EngineError(f"max_flows_per_tick must be an integer, got {max_flows_per_tick!r}.")
        if max_flows_per_tick < 1:
            raise EngineError(f"max_flows_per_tick must be at least 1, got {max_flows_per_tick}.")
        if not isinstance(store, FlowStore):
            raise EngineError(f"a FlowRunner needs a FlowStore, got {type(store).__name__}.")
        if engine is not None and not isinstance(engine, FlowEngine):
            raise EngineError(f"engine must be a FlowEngine, got {type(engine).__name__}.")
        if ctx is not None and not isinstance(ctx, Mapping):
            raise EngineError(f"ctx must be a mapping, got {type(ctx).__name__}.")
        self.store = store
        self.engine = engine if engine is not None else FlowEngine(store=store)
        # Replies of call tasks stay in the runtime until the flow that used them is saved.
        self.engine.hold_replies = True
        self.lease = float(lease)
        self.max_flows_per_tick = max_flows_per_tick
        self.ctx = ctx
        self.clock = clock or store.clock
        self._heartbeat = _claim_heartbeat(store, self.lease)

    def tick(self) -> dict[str, int]:
        """One round: claim, run and save up to ``max_flows_per_tick`` flows.

        Returns ``{"claimed": n, "progressed": m, <status>: count, ...}`` for the flows it
        ran (``progressed`` counts those in which some task started or changed status;
        ``"lost"``, claims that expired and were taken over before the save).
        """
        counts: Counter[str] = Counter()
        claims = self.store.claim_flows(self.max_flows_per_tick, self.lease)
        counts["claimed"] = len(claims)
        counts["progressed"] = 0
        for claim in claims:
            try:
                if self.run_claim(claim):
                    counts["progressed"] += 1
            except LeaseLostError:
                logger.warning("lost the claim on flow %s; its changes were dropped", claim.key)
                counts["lost"] += 1
                continue
            counts[str(claim.flow.status)] += 1
        return dict(counts)

    def run_claim(self, claim: Claim) -> bool:
        """Tick one claimed flow as far as it goes now, save it and release the claim.

        A heartbeat thread renews the claim every third of the lease while the flow runs, and
        the flow is saved as tasks finish: a runner killed mid-flow loses little more than the
        task it was running. Returns whether any task started or changed status.
        """
        flow = claim.flow
        saved = progressed = False
        heartbeat = self._heartbeat
        heartbeat.hold(claim.token, claim)
        renew_after = self.lease / 2
        try:
            clock = self.clock
            since = clock.monotonic()
            while True:
                moved, has_ready = self.engine._tick(flow, self.ctx, self._save_progress(claim))
                progressed = progressed or moved
                if flow.status in FINISHED or not has_ready:
                    break
                # Renewed on the runner's clock too, for a clock the heartbeat does not see
                # (a test's fake one).
                if clock.monotonic() - since > renew_after:
                    self.store.renew_claim(claim, self.lease)
                    since = clock.monotonic()
            heartbeat.drop(claim.token)
            try:
                self.store.save_flow(flow, claim=claim, release=True)
            except LeaseLostError:
                raise
            except EngineError as exc:
                # A handler left something that cannot be stored: fail the run as last saved,
                # rather than leave it to fail the same way on every claim.
                claim.flow = self._fail_stored(claim, f"the run could not be saved: {exc}")
            saved = True
            self.engine.release_replies()
        finally:
            heartbeat.drop(claim.token)
            if not saved:
                self.engine.release_replies(saved=False)
                self.store.release_claim(claim)
        return progressed

    def _save_progress(self, claim: Claim) -> Callable[[TaskFlow], None]:
        """What saves ``claim``'s flow, keeping the claim, after a finished task, at most
        every :data:`SAVE_EVERY` seconds: a killed runner loses that much work at most, and
        a run of many quick tasks is not saved once per task."""
        last = time.monotonic()

        def save(flow: TaskFlow) -> None:
            nonlocal last
            if flow.status in FINISHED or time.monotonic() - last < SAVE_EVERY:
                return  # saved (and released) at the end of run_claim, or just now
            last = time.monotonic()
            try:
                self.store.save_flow(flow, claim=claim)
            except LeaseLostError:
                raise
            except EngineError:
                return  # not storable now: run_claim's final save reports it
            self.engine.release_replies()

        return save

    def _fail_stored(self, claim: Claim, error: str) -> TaskFlow:
        logger.error("flow %s: %s", claim.key, error)
        last = self.store.get_flow(claim.key)
        last.status = FAILED
        last.data.setdefault("errors", []).append(error)
        self.store.save_flow(last, claim=claim, release=True)
        return last

    def run(
        self,
        stop: threading.Event | None = None,
        *,
        interval: float = 0.5,
        until_finished: bool = False,
        on_tick: Callable[[dict[str, int]], None] | None = None,
    ) -> None:
        """Tick until ``stop`` is set (or, with ``until_finished``, until no stored flow is
        PENDING or RUNNING). Sleeps ``interval`` seconds after a round that changed nothing.

        ``on_tick`` gets each round's counts (for progress output). When the database fails
        (a restart, a dropped connection) the round is logged and retried after a growing pause
        (up to ``MAX_BACKOFF`` seconds); what the failed round had claimed is claimable again
        once its lease runs out, so nothing is lost.
        """
        stop = stop or threading.Event()
        backoff = interval
        while not stop.is_set():
            try:
                counts = self.tick()
                if on_tick is not None:
                    on_tick(counts)
                if until_finished and not self.store.query_flows(
                    status=["PENDING", "RUNNING"], limit=1
                ):
                    return
            except BackendError as exc:
                logger.warning("database error, retrying in %.1f s: %s", backoff, exc)
                stop.wait(backoff)
                backoff = min(max(backoff, 0.05) * 2, MAX_BACKOFF)
                continue
            backoff = interval
            if not counts["progressed"]:
                stop.wait(interval)


def _claim_heartbeat(store: FlowStore, lease: float) -> Heartbeat[Claim]:
    """Renews the claims a runner holds every third of the lease: a task may run far longer
    than the lease without another runner taking its flow over."""

    def renew(claim: Claim) -> bool:
        try:
            store.renew_claim(claim, lease)
        except LeaseLostError:
            return False  # taken over, or saved and released: nothing to renew
        return True

    return Heartbeat(
        renew,
        lease / 3,
        describe=lambda claim: f"the claim on flow {claim.key}",
        name="flowplex-claim-heartbeat",
    )
