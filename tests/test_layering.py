"""The core imports no web framework, database driver, HTTP client or CLI library."""

from __future__ import annotations

import json
import subprocess
import sys

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
