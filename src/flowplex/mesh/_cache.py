"""The registry cache: one JSON file, replaced atomically (temp file + fsync + ``os.replace``).

A reader therefore sees the old file or the new one, never half of one, even when the process
is killed mid-write.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from ..errors import ConfigurationError

__all__ = ["CacheError", "JsonCache"]


class CacheError(ConfigurationError):
    """The cache file cannot be read or written (the message says how to start afresh)."""


class JsonCache:
    """A JSON object stored at ``path``."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def load(self) -> dict[str, Any] | None:
        """The cached object, or None when there is no cache file yet."""
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise CacheError(f"cannot read cache {self.path}: {exc}") from exc
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise CacheError(
                f"cache {self.path} is not valid JSON ({exc}); fix or remove it, or start with "
                f"reset=True"
            ) from exc
        if not isinstance(data, dict):
            raise CacheError(f"cache {self.path} must hold a JSON object; start with reset=True")
        return data

    def save(self, data: dict[str, Any]) -> None:
        """Write ``data`` atomically."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(data, f, indent=1)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
