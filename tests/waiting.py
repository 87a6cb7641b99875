"""Waiting on state in tests: poll a check until it holds, never a fixed sleep."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def wait_for(check: Callable[[], Any], what: str, timeout: float = 30.0) -> Any:
    """Call ``check`` until it returns something truthy and return that; fail naming ``what``
    after ``timeout`` seconds (a bug fails the test instead of hanging it)."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.01)
