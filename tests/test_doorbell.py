"""The doorbell that wakes other processes' waiters on one SQLite file (runtime/_doorbell.py).

The SQLite backend stays correct without it (it also polls), so these tests look at the
doorbell itself: rings arrive, reach only the same database, and dead listeners are retired.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from flowplex.runtime._doorbell import Doorbell

pytestmark = pytest.mark.skipif(
    not Doorbell.available(), reason="abstract Unix sockets are Linux-only"
)


@pytest.fixture
def rung(tmp_path: Path) -> Iterator[tuple[Doorbell, threading.Event]]:
    """A listening doorbell on tmp_path/a.db and the event its rings set."""
    event = threading.Event()
    bell = Doorbell(tmp_path / "a.db", event.set)
    assert bell.listen()
    yield bell, event
    bell.close()


def test_a_ring_reaches_another_listener_of_the_same_database(
    tmp_path: Path, rung: tuple[Doorbell, threading.Event]
) -> None:
    _, event = rung
    ringer = Doorbell(tmp_path / "a.db", lambda: None)
    ringer.ring()
    assert event.wait(5.0)
    ringer.close()


def test_a_process_does_not_ring_itself_nor_other_databases(
    tmp_path: Path, rung: tuple[Doorbell, threading.Event]
) -> None:
    bell, event = rung
    other_event = threading.Event()
    other = Doorbell(tmp_path / "b.db", other_event.set)
    assert other.listen()
    bell.ring()
    other.ring()
    # Each rang only peers of its own file, and there are none: a ring to a known peer
    # (below) arrives, so silence here is not the doorbell being slow.
    peer = Doorbell(tmp_path / "a.db", lambda: None)
    peer.ring()
    assert event.wait(5.0)
    assert not other_event.is_set()
    other.close()
    peer.close()


def test_close_withdraws_the_marker_and_a_dead_listener_is_retired(tmp_path: Path) -> None:
    db = tmp_path / "a.db"
    bell = Doorbell(db, lambda: None)
    assert bell.listen()
    markers = db.with_name("a.db.doorbells")
    assert len(os.listdir(markers)) == 1
    bell.close()
    assert os.listdir(markers) == []
    # A process killed without closing leaves its marker; the next ring removes it.
    code = (
        "import os, sys\n"
        "from pathlib import Path\n"
        "from flowplex.runtime._doorbell import Doorbell\n"
        f"assert Doorbell(Path({str(db)!r}), lambda: None).listen()\n"
        "os._exit(0)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
    assert len(os.listdir(markers)) == 1
    ringer = Doorbell(db, lambda: None)
    ringer.ring()
    ringer.close()
    assert os.listdir(markers) == []
