"""The ``flowplex`` command line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

import flowplex
from flowplex.cli import app

runner = CliRunner()


def test_version_through_python_dash_m() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "flowplex", "--version"], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == f"flowplex {flowplex.__version__}"


def test_local_demo_reverses_through_all_three_flows() -> None:
    result = runner.invoke(app, ["local-demo", "--number", "1234"])
    assert result.exit_code == 0, result.output
    replies = [line for line in result.output.splitlines() if line.strip().startswith("reply")]
    assert replies == [
        "  reply {'output_number': 4321}",
        "  reply {'output_number': 1234}",
        "  reply {'output_number': 1234}",
    ]


def test_run_prints_the_reply_as_json(tmp_path: Path) -> None:
    overrides = tmp_path / "overrides.yaml"
    overrides.write_text("output_interface: null\n")
    result = runner.invoke(
        app,
        [
            "run",
            "flowplex.examples.ReverseNumberAtomicFlow",
            '{"number": 98}',
            "-c",
            str(overrides),
        ],
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == {"output_number": 89}


def test_run_rejects_data_that_is_not_a_json_object() -> None:
    result = runner.invoke(app, ["run", "flowplex.examples.ReverseNumberAtomicFlow", "[1]"])
    assert result.exit_code == 2
    assert "must be a JSON object" in result.output


def test_flowplex_errors_print_one_line_and_exit_1() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "flowplex", "run", "nowhere.Flow", "{}"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 1
    assert "error: module 'nowhere' not found" in out.stderr
    assert "Traceback" not in out.stderr


def test_served_demo_walks_seeds_000_and_001() -> None:
    result = runner.invoke(app, ["demo", "--db", "memory://"])
    assert result.exit_code == 0, result.output
    out = result.output
    replies = [line.split("  (")[0] for line in out.splitlines() if "-> reply" in line]
    assert replies == [
        "sent {'id': 0, 'number': 1234} -> reply {'output_number': 1234}",
        "sent {'id': 1, 'number': 1234} -> reply {'output_number': 1234}",
        "sent {'id': 0, 'number': 1234} -> reply {'output_number': 1234}",
        "sent {'id': 0, 'number': 1234} -> reply {'output_number': 4321}",
    ]
    assert "Not serving at reverse_number_atomic." in out
    assert "Unknown flow instance" in out
    assert "serve_flow atomic again -> False" in out
    assert "done: endpoints removed, node closed" in out
