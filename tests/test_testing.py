"""flowplex.testing: its names are pinned, it needs no pytest, its fake clock behaves like a
clock, and its kit passes good backends and catches broken ones."""

from __future__ import annotations

import functools
import inspect
import itertools
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

import flowplex.testing
from flowplex.runtime import Backend, Delivery, Envelope, ReplyRecord, open_backend
from flowplex.runtime.memory import MemoryBackend
from flowplex.testing import CHECKS, SHARED_STORE_CHECKS, Clock, FakeClock, check_backend, raises

EXPECTED = [
    "CHECKS",
    "Check",
    "Clock",
    "FakeClock",
    "Opener",
    "SHARED_STORE_CHECKS",
    "check_backend",
    "raises",
]


def test_exports_are_pinned_and_documented() -> None:
    assert sorted(flowplex.testing.__all__) == EXPECTED
    for name in EXPECTED:
        obj = getattr(flowplex.testing, name)
        if inspect.isclass(obj) or inspect.isfunction(obj):
            assert obj.__doc__, f"flowplex.testing.{name} has no docstring"


def test_importing_the_kit_loads_no_pytest() -> None:
    code = "import sys, flowplex.testing; print('pytest' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_every_check_is_listed_once() -> None:
    from flowplex.testing import _backend

    defined = {name for name in dir(_backend) if name.startswith("check_")} - {"check_backend"}
    listed = [check.__name__ for check in [*CHECKS, *SHARED_STORE_CHECKS]]
    assert sorted(listed) == sorted(defined)
    assert len(set(listed)) == len(listed)


# -- FakeClock -----------------------------------------------------------------------------------


def test_fake_clock_moves_only_when_told() -> None:
    clock = FakeClock()
    assert isinstance(clock, Clock)
    start, mono = clock.time(), clock.monotonic()
    assert (start, mono) == (1_700_000_000.0, 0.0)
    assert (clock.time(), clock.monotonic()) == (start, mono)
    clock.advance(2.5)
    assert (clock.time(), clock.monotonic()) == (start + 2.5, 2.5)
    clock.advance(0)
    with pytest.raises(ValueError, match="only advances"):
        clock.advance(-1)
    clock.set_time(start - 3600)  # the wall clock jumps back; the monotonic one does not
    assert (clock.time(), clock.monotonic()) == (start - 3600, 2.5)
    assert FakeClock(start=10).time() == 10.0
    assert "monotonic=2.5" in repr(clock)


# -- raises --------------------------------------------------------------------------------------


def test_raises_helper() -> None:
    with raises(KeyError):
        {}["missing"]
    with raises(ValueError, match="bad v.lue"):
        raise ValueError("a bad value")
    with pytest.raises(AssertionError, match="KeyError was not raised"), raises(KeyError):
        pass
    with pytest.raises(AssertionError, match="does not match"), raises(ValueError, match="x"):
        raise ValueError("y")
    with pytest.raises(TypeError), raises(ValueError):
        raise TypeError("another kind passes through")


# -- the kit as a third party runs it ------------------------------------------------------------


def test_check_backend_passes_the_memory_backend() -> None:
    check_backend(lambda: MemoryBackend, durable=False)


def test_check_backend_passes_sqlite_with_shared_store_checks(tmp_path: Path) -> None:
    files = (tmp_path / f"kit{i}.db" for i in itertools.count())
    check_backend(lambda: functools.partial(open_backend, f"sqlite:///{next(files)}"))


class _EternalLeases(MemoryBackend):
    """A broken backend: a lease, once taken, never runs out."""

    def claim(
        self, dispatch_point: str, user_id: str | None, lease_seconds: float, limit: int
    ) -> list[Delivery]:
        return super().claim(dispatch_point, user_id, 10**9, limit)


class _IgnoresItsClock(MemoryBackend):
    """A broken backend: takes clock= but reads the system clock."""

    def __init__(self, url: str = "memory://", *, clock: Clock | None = None) -> None:
        super().__init__(url)


class _LastReplyWins(MemoryBackend):
    """A broken backend: a later reply for the same future replaces the first one."""

    def enqueue(
        self, envelopes: Sequence[Envelope], replies: Sequence[ReplyRecord] = ()
    ) -> list[str]:
        for reply in replies:
            self.take_reply(reply.future_id)
        return super().enqueue(envelopes, replies[-1:] if replies else ())


@pytest.mark.parametrize(
    ("broken", "failing_check"),
    [
        (_EternalLeases, "check_lease_expiry"),
        (_IgnoresItsClock, "check_lease_expiry"),
        (_LastReplyWins, "check_replies"),
    ],
)
def test_check_backend_catches_a_broken_backend(broken: type[Backend], failing_check: str) -> None:
    with pytest.raises(AssertionError, match=f"^{failing_check} failed"):
        check_backend(lambda: broken, durable=False)
