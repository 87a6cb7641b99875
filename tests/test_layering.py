"""The core imports no web framework, database driver, HTTP client or CLI library."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

FORBIDDEN = [
    "fastapi",
    "starlette",
    "uvicorn",
    "httpx",
    "typer",
    "click",
    "rich",
    "sqlalchemy",
    "psycopg",
    "sqlite3",
    "alembic",
    "pydantic",
]


def test_import_flowplex_loads_no_adapter_libraries() -> None:
    code = (
        "import json, sys\n"
        "import flowplex, flowplex.flows, flowplex.examples\n"
        f"forbidden = {FORBIDDEN!r}\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in forbidden)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert json.loads(out) == []


def test_forbidden_list_is_effective() -> None:
    # Guard against a check that cannot fail: importing the CLI does load typer.
    code = "import sys, flowplex.cli; print('typer' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True"


# -- the import contracts (pyproject.toml, [tool.importlinter]) ----------------------------------

ROOT = Path(__file__).resolve().parent.parent


def lint_imports(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    """``lint-imports`` (import-linter) in a subprocess, with no cache to go stale."""
    code = "import sys; from importlinter.cli import lint_imports_command; lint_imports_command()"
    return subprocess.run(
        [sys.executable, "-c", code, "--no-cache", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )


def test_every_import_contract_is_kept() -> None:
    out = lint_imports()
    assert out.returncode == 0, out.stdout + out.stderr
    for contract in (
        "each package imports only the layers below it KEPT",
        "the core imports no adapter KEPT",
        "a private module is imported only inside its package KEPT",
        "no import cycles between flowplex's packages KEPT",
    ):
        assert contract in out.stdout


def test_the_contracts_see_the_imports_they_forbid(tmp_path: Path) -> None:
    # Guard against contracts that cannot fail: the project's own settings (root package,
    # external packages) with contracts that the code breaks on purpose.
    config = tmp_path / "contracts.toml"
    config.write_text(
        "[tool.importlinter]\n"
        'root_packages = ["flowplex"]\n'
        "include_external_packages = true\n"
        "[[tool.importlinter.contracts]]\n"
        'name = "the backends use no sqlite3"\n'
        'type = "forbidden"\n'
        'source_modules = ["flowplex.runtime"]\n'
        'forbidden_modules = ["sqlite3"]\n'
        "[[tool.importlinter.contracts]]\n"
        'name = "the command line uses no typer"\n'
        'type = "forbidden"\n'
        'source_modules = ["flowplex.cli"]\n'
        'forbidden_modules = ["typer"]\n'
        "[[tool.importlinter.contracts]]\n"
        'name = "upside down"\n'
        'type = "layers"\n'
        'layers = ["flowplex.runtime", "flowplex.server"]\n'
    )
    out = lint_imports(str(config))
    assert out.returncode == 1, out.stdout + out.stderr
    assert "Contracts: 0 kept, 3 broken." in out.stdout
    assert "flowplex.runtime.sqlite -> sqlite3" in out.stdout
    assert "flowplex.server is not allowed to import flowplex.runtime" in out.stdout
