"""The registry cache: one JSON file, replaced atomically (temp file + fsync + ``os.replace``).

A reader therefore sees the old file or the new one, never half of one, even when the process
is killed mid-write (the temp file a killed writer leaves behind is removed at the next start).
:class:`FrameEncoder` turns a state :class:`~flowplex.mesh._state.Frame` into the file's text,
re-encoding only the node records that changed since its previous call, so a write costs
O(nodes) plus the flows of the nodes that changed; the service runs it in a worker thread,
off the event loop, at most every ``cache_interval`` seconds.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ConfigurationError

if TYPE_CHECKING:
    from ._records import NodeRecord
    from ._state import Frame

__all__ = ["CacheError", "FrameEncoder", "JsonCache"]


class CacheError(ConfigurationError):
    """The cache file cannot be read or written (the message says how to start afresh)."""


class JsonCache:
    """A JSON object stored at ``path``."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    @property
    def _temp_prefix(self) -> str:
        return f".{self.path.name}."

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
        self.write_text(json.dumps(data, separators=(",", ":")))

    def write_text(self, text: str) -> None:
        """Replace the file with ``text`` (a JSON object) atomically and durably."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=self._temp_prefix, dir=self.path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        _fsync_directory(self.path.parent)

    def remove_leftovers(self) -> None:
        """Delete the temp files of a writer that was killed mid-write."""
        try:
            leftovers = list(self.path.parent.glob(f"{self._temp_prefix}*"))
        except OSError:
            return
        for path in leftovers:
            path.unlink(missing_ok=True)


def _fsync_directory(path: Path) -> None:
    # The rename itself is durable only once the directory is synced (POSIX); best effort.
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


class FrameEncoder:
    """Encodes frames as the cache's JSON, reusing the text of node records seen before.

    A :class:`~flowplex.mesh._records.NodeRecord` is immutable, so the same object always has
    the same text; the memo keeps the records it holds alive, so an ``id`` is never reused
    while it is in the memo. Not thread-safe: one writer at a time.
    """

    def __init__(self) -> None:
        self._memo: dict[int, tuple[NodeRecord, str]] = {}

    def encode(self, frame: Frame) -> str:
        """The JSON text of ``frame``, equal to the state's ``snapshot()`` when parsed."""
        memo, fresh = self._memo, {}

        def node_text(node: NodeRecord) -> str:
            hit = memo.get(id(node))
            text = hit[1] if hit is not None and hit[0] is node else _dumps(node.to_json())
            fresh[id(node)] = (node, text)
            return text

        def nodes_text(nodes: dict[str, NodeRecord]) -> str:
            return "{" + ",".join(f"{_dumps(u)}:{node_text(n)}" for u, n in nodes.items()) + "}"

        providers = []
        for p in frame.providers:
            head = _dumps({"url": p.url, "organization": p.organization, "feed": p.feed})
            tail = _dumps({"created": p.created, "modified": p.modified, "heartbeat": p.heartbeat})
            text = f'{head[:-1]},"nodes":{nodes_text(p.nodes)},{tail[1:]}'
            providers.append(f"{_dumps(p.url)}:{text}")
        head = _dumps({"url": frame.url, "organization": frame.organization, "feed": frame.feed})
        text = (
            f'{head[:-1]},"nodes":{nodes_text(frame.nodes)},"providers":{{{",".join(providers)}}},'
            f'"peers":{_dumps(frame.peers)},"keys":{_dumps(frame.keys)}}}'
        )
        self._memo = fresh
        return text
