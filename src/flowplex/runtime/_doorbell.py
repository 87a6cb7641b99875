"""Wake-ups across processes that share one SQLite file.

SQLite cannot notify another process of a commit. Each process that waits on the file rings a
*doorbell* instead: it listens on a Unix datagram socket in Linux's abstract namespace (no file
to clean up, no path-length limit) and announces the socket's name by an empty marker file in a
directory beside the database (``<db>.doorbells/``). A process that commits something another
may be waiting for sends one byte to every announced socket; the listener turns it into a
wake-up of its waiters. A marker whose socket is gone (its process died) is removed by the
first sender that finds it dead.

The doorbell only makes wake-ups prompt; correctness never depends on it, because the SQLite
backend still polls ``PRAGMA data_version`` (rarely, when the doorbell works). On systems
without abstract sockets :func:`Doorbell.available` is False and polling does everything.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import socket
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from ..messages import new_id

__all__ = ["Doorbell"]

_PREFIX = b"\0flowplex-doorbell-"
_SETTLE_NS = 100_000_000
# How long a ring trusts the peers it last found before looking at the directory again. A
# listener that starts meanwhile misses at most this long's rings, and finds those commits
# by polling (see the module doc).
_RELOOK_NS = 1_000_000


class Doorbell:
    """One process's doorbell for the database at ``db_path``; ``on_ring`` runs on each ring
    (in a listener thread, which :meth:`listen` starts)."""

    @staticmethod
    def available() -> bool:
        """True where abstract Unix sockets exist (Linux)."""
        return sys.platform.startswith("linux") and hasattr(socket, "AF_UNIX")

    def __init__(self, db_path: Path, on_ring: Callable[[], None]) -> None:
        self._dir = db_path.with_name(db_path.name + ".doorbells")
        # Sockets of different databases must not meet: their names start with the file's hash.
        self._scope = hashlib.sha1(str(db_path.resolve()).encode()).hexdigest()[:20]
        self._name = f"{os.getpid()}-{new_id()[:8]}"
        self._on_ring = on_ring
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._sender: socket.socket | None = None
        self._peers: list[str] = []
        self._seen_mtime = -1
        self._looked_ns = -_RELOOK_NS
        self._closed = False

    def _address(self, name: str) -> bytes:
        return _PREFIX + f"{self._scope}-{name}".encode()

    # -- listening --------------------------------------------------------------------------

    def listen(self) -> bool:
        """Start listening (once); False if the doorbell cannot be used here."""
        if self._listener is not None:
            return True
        with self._lock:
            if self._closed:
                return False
            if self._listener is not None:
                return True
            try:
                self._dir.mkdir(exist_ok=True)
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                sock.bind(self._address(self._name))
                (self._dir / self._name).touch()
            except OSError:
                return False
            self._listener = sock
            self._thread = threading.Thread(
                target=self._listen, args=(sock,), name="flowplex-doorbell", daemon=True
            )
            self._thread.start()
        return True

    def _listen(self, sock: socket.socket) -> None:
        while not self._closed:
            try:
                sock.recv(64)
            except OSError:
                return
            if not self._closed:
                self._on_ring()

    # -- ringing ----------------------------------------------------------------------------

    def ring(self) -> None:
        """Wake every other listening process of this database (best effort, never blocks)."""
        if self._closed:
            return
        now = time.monotonic_ns()
        if now - self._looked_ns >= _RELOOK_NS:
            self._looked_ns = now
            try:
                mtime = os.stat(self._dir).st_mtime_ns
            except OSError:
                return  # nobody has listened yet
            # Directory times tick coarsely (a few ms on some file systems), so two changes in
            # one tick look like one: while the last change is recent, list it every time.
            if mtime != self._seen_mtime or time.time_ns() - mtime < _SETTLE_NS:
                self._seen_mtime = mtime
                try:
                    self._peers = [n for n in os.listdir(self._dir) if n != self._name]
                except OSError:
                    self._peers = []
        if not self._peers:
            return
        sender = self._sender
        if sender is None:
            sender = self._sender = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            sender.setblocking(False)
        for name in self._peers:
            try:
                sender.sendto(b"!", self._address(name))
            except (ConnectionRefusedError, FileNotFoundError):
                # Its process is gone: retire the marker (the next ring lists the dir again).
                with contextlib.suppress(OSError):
                    (self._dir / name).unlink()
            except OSError:
                pass  # its queue is full: it has a wake-up pending anyway

    # -- closing ----------------------------------------------------------------------------

    def close(self) -> None:
        """Stop listening and withdraw the marker. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            listener, self._listener = self._listener, None
        if listener is not None:
            with contextlib.suppress(OSError):
                (self._dir / self._name).unlink()
            # Wake the listener thread out of recv, then let it go.
            with contextlib.suppress(OSError):
                poke = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                poke.sendto(b"", self._address(self._name))
                poke.close()
            if self._thread is not None:
                self._thread.join(1.0)
            listener.close()
        if self._sender is not None:
            self._sender.close()
