"""``FakeClock``: a clock that moves only when told to."""

from __future__ import annotations

import threading

__all__ = ["FakeClock"]

#: Where a FakeClock's wall time starts by default (2023-11-14, a fixed, plausible epoch time).
DEFAULT_START = 1_700_000_000.0


class FakeClock:
    """A :class:`~flowplex.testing.Clock` under a test's control.

    Pass it as ``clock=`` to a backend (:func:`flowplex.runtime.open_backend`), a
    :class:`~flowplex.runtime.Dispatcher`, a ``FlowStore`` or a ``FlowRunner``, then
    :meth:`advance` it to make leases run out, instead of sleeping. Time stands still in
    between. Thread-safe.

    ``time()`` starts at ``start`` (epoch seconds), ``monotonic()`` at 0; :meth:`advance`
    moves both, :meth:`set_time` moves the wall clock only (a clock jump: NTP, a suspended
    laptop), as real clocks do.
    """

    def __init__(self, start: float = DEFAULT_START) -> None:
        self._lock = threading.Lock()
        self._time = float(start)
        self._monotonic = 0.0

    def time(self) -> float:
        """The fake seconds since the epoch."""
        return self._time

    def monotonic(self) -> float:
        """The fake monotonic counter (seconds since this clock was made, as advanced)."""
        return self._monotonic

    def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds`` (``ValueError`` if negative: time never goes back)."""
        if seconds < 0:
            raise ValueError(f"a clock only advances; got {seconds!r} seconds.")
        with self._lock:
            self._time += seconds
            self._monotonic += seconds

    def set_time(self, epoch_seconds: float) -> None:
        """Set the wall clock to ``epoch_seconds`` (forward or back); ``monotonic()`` stays."""
        with self._lock:
            self._time = float(epoch_seconds)

    def __repr__(self) -> str:
        return f"FakeClock(time={self._time!r}, monotonic={self._monotonic!r})"
