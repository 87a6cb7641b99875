"""A heartbeat: what a process holds (leased messages, claimed runs) renewed from a thread.

Leases stay short, so that work a dead process held is taken over within seconds, and the
heartbeat keeps the leases of what a live process still runs from running out, however long it
runs. The thread starts with the first thing held and ends once nothing is held for a few
beats, so an idle process keeps no thread for it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

__all__ = ["Heartbeat"]

logger = logging.getLogger("flowplex")

T = TypeVar("T")


class Heartbeat(Generic[T]):
    """Calls ``renew(item)`` for every item held, every ``interval`` seconds.

    ``renew`` returns False when the item is not ours to renew any more (taken over, or
    finished elsewhere): it is then dropped. An exception is logged as "could not renew
    ``describe(item)``" and the next beat tries again: a lease runs out only if the database
    stays away for longer than it.
    """

    #: Idle beats before the thread ends (holding something starts it again).
    IDLE_BEATS = 3

    def __init__(
        self,
        renew: Callable[[T], bool],
        interval: float,
        *,
        describe: Callable[[T], str] = str,
        name: str = "flowplex-heartbeat",
    ) -> None:
        self.interval = interval
        self._renew = renew
        self._describe = describe
        self._name = name
        self._held: dict[Hashable, T] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def hold(self, key: Hashable, item: T) -> None:
        """Renew ``item`` (known by ``key``) until it is dropped."""
        with self._lock:
            self._held[key] = item
            if self._thread is None:
                self._thread = threading.Thread(target=self._beat, name=self._name, daemon=True)
                self._thread.start()

    def drop(self, key: Hashable) -> None:
        """Stop renewing what ``key`` names (finished, released or lost)."""
        with self._lock:
            self._held.pop(key, None)

    @property
    def held(self) -> int:
        """How many items are held now."""
        return len(self._held)

    def _beat(self) -> None:
        idle = 0
        wait = threading.Event().wait
        while True:
            wait(self.interval)
            with self._lock:
                held = list(self._held.items())
                if not held:
                    idle += 1
                    if idle >= self.IDLE_BEATS:
                        self._thread = None
                        return
                    continue
            idle = 0
            for key, item in held:
                try:
                    if not self._renew(item):
                        self.drop(key)
                except Exception as exc:
                    logger.warning("could not renew %s: %s", self._describe(item), exc)
