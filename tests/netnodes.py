"""Nodes and registries as real ``flowplex`` processes on 127.0.0.1, for the network tests."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

#: How long a process gets to start answering HTTP.
START_TIMEOUT = 60.0


def free_port() -> int:
    """A port free now (the process binding it next may race, as every such helper does)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def flowplex_command() -> str:
    """The installed ``flowplex`` script."""
    script = shutil.which("flowplex", path=str(Path(sys.executable).parent))
    assert script is not None, "the flowplex script is not installed beside this Python"
    return script


class Service:
    """One ``flowplex up`` (or ``flowplex registry``) process; restartable on the same port."""

    def __init__(self, args: list[str], url: str, home: Path, log: Path) -> None:
        self.args = args
        self.url = url
        self.home = home
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Service:
        """Start the process and wait until it answers (its log is in ``log``)."""
        env = {**os.environ, "FLOWPLEX_HOME": str(self.home)}
        env.pop("FLOWPLEX_DB", None)
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [flowplex_command(), *self.args], stdout=out, stderr=subprocess.STDOUT, env=env
            )
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log.read_text()
            try:
                if httpx.get(f"{self.url}/counts", timeout=2.0, trust_env=False).is_success:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"{self.url} did not start:\n{self.log.read_text()}")

    def kill(self) -> None:
        """Kill the process at once (no clean shutdown: what a crash looks like)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)

    def stop(self) -> None:
        """Stop the process cleanly (SIGTERM), killing it if it lingers."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()


def node(
    home: Path,
    db: str | None = None,
    *,
    connect: str | None = None,
    peers: tuple[str, ...] = (),
    workers: int = 2,
    heartbeat: float = 0.5,
) -> Service:
    """A ``flowplex up`` node (not started) with files in ``home`` and database ``db``;
    ``connect``: a registry to register with, ``peers``: registries allowed to connect."""
    url = f"http://127.0.0.1:{free_port()}"
    args = ["up", "--url", url, "--home", str(home), "--workers", str(workers)]
    args += ["--no-opstore", "--heartbeat", str(heartbeat), "--reset"]
    if db is not None:
        args += ["--db", db]
    if connect is not None:
        args += ["--connect", connect]
    for peer in peers:
        args += ["--peer", peer]
    home.mkdir(parents=True, exist_ok=True)
    return Service(args, url, home, home / "up.log")


def registry(home: Path, peers: tuple[str, ...] = (), heartbeat: float = 0.5) -> Service:
    """A ``flowplex registry`` (not started) with its files in ``home``; ``peers``: the
    registries (``flowplex up`` nodes run one) allowed to connect to it."""
    url = f"http://127.0.0.1:{free_port()}"
    home.mkdir(parents=True, exist_ok=True)
    args = ["registry", "--url", url, "--home", str(home), "--heartbeat", str(heartbeat)]
    for peer in peers:
        args += ["--peer", peer]
    return Service([*args, "--reset"], url, home, home / "registry.log")
