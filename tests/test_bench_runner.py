"""The benchmark runner's output: structure only (timings are never asserted in tests)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"


@pytest.fixture
def runner(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """bench/run.py as a module (its siblings importable as the runner imports them)."""
    monkeypatch.syspath_prepend(str(BENCH))
    import run

    return run


def test_quick_only_prints_the_tables_and_writes_the_json(tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    proc = subprocess.run(
        [sys.executable, str(BENCH / "run.py"), "--quick", "--only", "local", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].split() == ["scenario", "p50", "µs", "p99", "µs", "msg/s", "x", "floor"]
    assert "-- floors" in lines and "-- local" in lines
    assert any(line.startswith("local: ReverseNumber round trip ") for line in lines)
    assert any(line.startswith("targets: ") for line in lines)

    report = json.loads(out.read_text())
    assert report["schema"] == 2
    assert report["options"] == {"quick": True, "long": False, "only": "local"}
    assert {"python", "cpus", "git_commit", "loadavg_start", "loadavg_end"} <= set(
        report["machine"]
    )
    names = {r["name"]: r for r in report["results"]}
    assert {
        "floor: plain call",
        "floor: asyncio hand-off",
        "local: ReverseNumber round trip",
    } <= set(names)
    local = names["local: ReverseNumber round trip"]
    assert local["group"] == "local" and local["skipped"] is None
    assert local["p50_us"] > 0 and local["per_sec"] > 0 and local["ratio_to_floor"] > 0
    # Nothing else was measured: every target says so instead of inventing a figure.
    assert report["targets"]
    for verdict in report["targets"]:
        assert verdict["status"] in {"met", "missed", "skipped"}
        if verdict["status"] == "skipped":
            assert verdict["reason"] and verdict["value"] is None


def _result(runner: ModuleType, name: str, **figures: Any) -> Any:
    fields = {"p50_us": None, "p99_us": None, "per_sec": None, **figures}
    return runner.Result(name, 100, **fields)


def test_targets_compare_against_the_same_run(runner: ModuleType) -> None:
    by_name = {
        "floor": _result(runner, "floor", p50_us=10.0, per_sec=1000.0),
        "fast": _result(runner, "fast", p50_us=15.0, per_sec=50.0),
        "slow": _result(runner, "slow", p50_us=40.0),
        "gone": runner.skipped("gone", "skipped (not installed: nothing)"),
    }
    Target = runner.Target
    met = runner.evaluate(Target("fast", "p50_us", "<=", 2.0, "floor"), by_name)
    assert (met["status"], met["value"], met["measured"], met["reference"]) == (
        "met",
        1.5,
        15.0,
        10.0,
    )
    missed = runner.evaluate(Target("slow", "p50_us", "<=", 2.0, "floor"), by_name)
    assert (missed["status"], missed["value"]) == ("missed", 4.0)
    absolute = runner.evaluate(Target("fast", "per_sec", ">=", 100.0), by_name)
    assert (absolute["status"], absolute["value"]) == ("missed", 50.0)
    against_skipped = runner.evaluate(Target("fast", "p50_us", "<=", 1.0, "gone"), by_name)
    assert against_skipped["status"] == "skipped"
    assert "not installed" in against_skipped["reason"]
    absent = runner.evaluate(Target("nowhere", "p50_us", "<=", 1.0), by_name)
    assert (absent["status"], absent["reason"]) == ("skipped", "not measured in this run")


def test_a_missing_peer_is_reported_as_skipped(runner: ModuleType) -> None:
    import _peers

    reason = _peers._installed("json", "flowplex_no_such_module")
    assert reason is not None and "not installed: flowplex_no_such_module" in reason
    assert _peers._installed("json") is None


def test_comparisons_leave_out_what_was_not_measured(runner: ModuleType) -> None:
    import _peers

    peer = next(iter(_peers.PEERS))
    flight = f"{_peers.IN_FLIGHT} in flight"
    by_name = {
        "sqlite: sequential": _result(runner, "sqlite: sequential", p50_us=200.0),
        f"sqlite: {flight}": _result(runner, f"sqlite: {flight}", per_sec=4000.0),
        "postgres: sequential": runner.skipped("postgres: sequential", "skipped (no PostgreSQL)"),
        f"postgres: {flight}": runner.skipped(f"postgres: {flight}", "skipped (no PostgreSQL)"),
        runner.peer_name(peer, "sequential"): _result(
            runner, runner.peer_name(peer, "sequential"), p50_us=100.0
        ),
        runner.peer_name(peer, flight): _result(
            runner, runner.peer_name(peer, flight), per_sec=8000.0
        ),
    }
    assert runner.comparisons(by_name) == [
        {"flowplex": "sqlite", "peer": peer, "p50_ratio": 2.0, "per_sec_ratio": 0.5}
    ]
