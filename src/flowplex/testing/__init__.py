"""Testing tools that ship with flowplex: a clock you control and the backend conformance kit.

- :class:`FakeClock`: pass it as ``clock=`` to a backend, a dispatcher, a flow store or a
  runner, and :meth:`~FakeClock.advance` it to make leases run out without sleeping.
  :class:`Clock` is the protocol it (and the system clock) implements.
- :func:`check_backend`, :data:`CHECKS`, :data:`SHARED_STORE_CHECKS`: the checks every
  :class:`~flowplex.runtime.Backend` passes (memory, SQLite and PostgreSQL run them in
  flowplex's own test suite), so a third-party backend can prove itself::

      from flowplex.testing import check_backend

      def test_my_backend(tmp_path):
          check_backend(lambda: functools.partial(MyBackend, new_database(tmp_path)))

- :func:`raises`: the kit's assertion helper, usable anywhere.

Nothing here imports pytest: the checks raise :class:`AssertionError` under any runner.
"""

from __future__ import annotations

from .._clock import Clock
from ._backend import CHECKS, SHARED_STORE_CHECKS, Check, Opener, check_backend
from ._clock import FakeClock
from ._raises import raises

__all__ = [
    "CHECKS",
    "SHARED_STORE_CHECKS",
    "Check",
    "Clock",
    "FakeClock",
    "Opener",
    "check_backend",
    "raises",
]
