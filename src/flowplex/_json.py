"""Strict, compact JSON encoding for the hot path.

``json.dumps`` rebuilds its C encoder on every call, which costs more than the encoding of a
small message itself; the encoder here is built once. It is strict like ``allow_nan=False``:
NaN and infinities are rejected (JSON has no such values) instead of being written out.
"""

from __future__ import annotations

import json
from json.encoder import encode_basestring_ascii
from typing import Any

__all__ = ["dumps", "preview"]


def _default(value: Any) -> Any:
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


# CPython always has the C accelerator; typeshed does not declare it.
_c_make_encoder = getattr(json.encoder, "c_make_encoder", None)

if _c_make_encoder is not None:
    # markers=None skips the circular-reference check: flowplex data comes from JSON or from
    # flow code, and a cycle fails with RecursionError instead of looping.
    _encode = _c_make_encoder(
        None, _default, encode_basestring_ascii, None, ":", ",", False, False, False
    )

    def dumps(value: Any) -> str:
        """Compact JSON of ``value``; ``ValueError`` on NaN/infinity, ``TypeError`` on others."""
        return "".join(_encode(value, 0))

else:  # pragma: no cover
    _fallback = json.JSONEncoder(separators=(",", ":"), allow_nan=False)

    def dumps(value: Any) -> str:
        """Compact JSON of ``value``; ``ValueError`` on NaN/infinity, ``TypeError`` on others."""
        return _fallback.encode(value)


def preview(value: Any, width: int = 60) -> str:
    """``value`` as one line of JSON for people (``{"n": 3}``), cut to ``width`` characters
    with an ellipsis. Values JSON cannot encode are shown with ``repr``."""
    try:
        text = json.dumps(value, ensure_ascii=False, separators=(", ", ": "))
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= width else text[: max(1, width - 1)] + "…"
