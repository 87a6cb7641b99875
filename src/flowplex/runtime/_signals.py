"""In-process wake-ups shared by every backend: counters bumped on commit, and conditions."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable

__all__ = ["Signals"]

# Enough to cover every reply that can arrive between a caller's take_reply and its wait.
_RECENT_REPLIES = 4096


class _Waiters:
    """A condition and how many wait on it (read without the lock by notifiers)."""

    __slots__ = ("cond", "count")

    def __init__(self) -> None:
        self.cond = threading.Condition(threading.Lock())
        self.count = 0

    def wake(self) -> None:
        # The change is made before count is read, and a waiter counts itself in before it
        # reads the counters: either it sees the change, or this sees it waiting.
        if self.count:
            with self.cond:
                self.cond.notify_all()


class Signals:
    """Wake-ups within one process: conditions and counters bumped after each commit.

    ``messages`` is told the dispatch points that got claimable messages, ``replies`` the
    futures that got replies, ``everything`` that anything may have changed (another process
    committed, the change feed reconnected). A claim remembers, per thread, the counters it
    started from, so a wait that follows it returns at once if a commit slipped in between:
    no wake-up is lost inside the process.

    Workers wait for messages and callers for replies on conditions of their own, so that a
    reply wakes no worker and a message no caller.
    """

    def __init__(self) -> None:
        self.closed = False
        # Counters only grow, under _bump (never held while waiting); they are read without a
        # lock. A condition is taken only when somebody waits on it: a busy worker is then
        # never made to fight a notifier for a lock.
        self._bump = threading.Lock()
        self._for_messages = _Waiters()
        self._for_replies = _Waiters()
        self._everything = 0
        self._points: dict[str, int] = {}
        self._recent: OrderedDict[str, None] = OrderedDict()
        self._local = threading.local()

    # -- notifying --------------------------------------------------------------------------

    def messages(self, points: Iterable[str]) -> None:
        """Messages may have become claimable at ``points``."""
        with self._bump:
            for point in points:
                self._points[point] = self._points.get(point, 0) + 1
        self._for_messages.wake()

    def replies(self, future_ids: Iterable[str]) -> None:
        """Replies for ``future_ids`` were committed."""
        with self._bump:
            recent = self._recent
            for future_id in future_ids:
                recent[future_id] = None
            while len(recent) > _RECENT_REPLIES:
                recent.popitem(last=False)
        self._for_replies.wake()

    def everything(self) -> None:
        """Anything may have changed: every waiter returns and re-checks."""
        with self._bump:
            self._everything += 1
        self._wake()

    def close(self) -> None:
        """Wake every waiter, now and from now on."""
        self.closed = True
        self._wake()

    def _wake(self) -> None:
        self._for_messages.wake()
        self._for_replies.wake()

    # -- waiting ----------------------------------------------------------------------------

    def remember(self, point: str) -> None:
        """Note, for this thread, the counters a claim at ``point`` starts from."""
        token = (self._everything, self._points.get(point, 0))
        remembered: dict[str, tuple[int, int]] | None = getattr(self._local, "tokens", None)
        if remembered is None:
            remembered = self._local.tokens = {}
        remembered[point] = token

    def message_token(self, point: str) -> tuple[int, int]:
        """The counters this thread's last claim at ``point`` started from (or the current)."""
        remembered: dict[str, tuple[int, int]] | None = getattr(self._local, "tokens", None)
        if remembered is not None:
            token = remembered.pop(point, None)
            if token is not None:
                return token
        return (self._everything, self._points.get(point, 0))

    def everything_token(self) -> int:
        """The current "anything changed" counter."""
        return self._everything

    def wait_messages(self, point: str, token: tuple[int, int], until: float) -> bool:
        """Wait until ``point``'s counters move past ``token``, the close, or ``until``
        (monotonic). True if woken, False on time-out."""
        return self._wait(
            self._for_messages,
            lambda: (self._everything, self._points.get(point, 0)) != token,
            until,
        )

    def wait_reply(self, future_id: str, token: int, until: float) -> bool:
        """Wait until a reply for ``future_id`` is committed in this process, anything changes
        (past ``token``), the close, or ``until`` (monotonic). True if woken, False on
        time-out."""
        return self._wait(
            self._for_replies,
            lambda: future_id in self._recent or self._everything != token,
            until,
        )

    def _wait(self, waiters: _Waiters, changed: Callable[[], bool], until: float) -> bool:
        with waiters.cond:
            waiters.count += 1
            try:
                while True:
                    if self.closed or changed():
                        return True
                    remaining = until - time.monotonic()
                    if remaining <= 0:
                        return False
                    waiters.cond.wait(remaining)
            finally:
                waiters.count -= 1
