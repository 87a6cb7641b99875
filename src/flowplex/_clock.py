"""The clock seam: where flowplex reads the time for leases and timestamps.

Backends (lease deadlines, the creation times of dead letters and replies), the dispatcher,
the flow store and its runner take a ``clock=`` keyword. Production code leaves it at the
system clock; tests pass :class:`flowplex.testing.FakeClock` and advance it, so a lease runs
out when the test says so instead of after a sleep.

Waits (a worker idling for messages, a caller waiting for a reply) keep using real time: they
block a thread, and a fake clock cannot wake one.
"""

from __future__ import annotations

import time
from typing import Protocol, runtime_checkable

__all__ = ["SYSTEM_CLOCK", "Clock", "SystemClock"]


@runtime_checkable
class Clock(Protocol):
    """A source of time: wall-clock seconds and a monotonic counter."""

    def time(self) -> float:
        """Seconds since the epoch (for deadlines stored in the database, timestamps)."""
        ...

    def monotonic(self) -> float:
        """Seconds on a counter that never goes back (for intervals within one process)."""
        ...


class SystemClock:
    """The real clock: :func:`time.time` and :func:`time.monotonic`."""

    __slots__ = ()

    def time(self) -> float:
        """Seconds since the epoch."""
        return time.time()

    def monotonic(self) -> float:
        """The process's monotonic clock."""
        return time.monotonic()

    def __repr__(self) -> str:
        return "SystemClock()"


#: The clock everything uses unless given another.
SYSTEM_CLOCK: Clock = SystemClock()
