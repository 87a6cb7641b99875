"""Names of ops and pipelines, and where an op version's bytes live (pure logic)."""

from __future__ import annotations

import re

from ._errors import InvalidRequestError, shown
from ._version import Version

__all__ = ["check_name", "op_path"]

_MAX_NAME = 255
_BAD_NAME = re.compile(r"[/\\\x00-\x1f\x7f]")


def check_name(kind: str, value: object) -> str:
    """``value`` if it is a usable op or pipeline name, else :class:`InvalidRequestError`.

    Op names become a path segment (``/models/<op>/<version>``), so slashes, control
    characters, ``.``, ``..`` and names longer than 255 bytes in UTF-8 are refused.
    """
    if not isinstance(value, str):
        raise InvalidRequestError(f"{kind} must be a string, got {type(value).__name__}")
    if not value or len(value) > _MAX_NAME or value in {".", ".."} or _BAD_NAME.search(value):
        raise InvalidRequestError(
            f"invalid {kind} {shown(value)}: use 1 to {_MAX_NAME} characters, no slash, backslash "
            f"or control character, and not '.' or '..'"
        )
    try:
        encoded = value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidRequestError(
            f"invalid {kind} {shown(value)}: not valid Unicode text"
        ) from None
    # A file name holds at most 255 bytes, not characters.
    if len(encoded) > _MAX_NAME:
        raise InvalidRequestError(
            f"invalid {kind} {shown(value)}: {len(encoded)} bytes in UTF-8, at most {_MAX_NAME}"
        )
    return value


def op_path(op_name: str, version: Version) -> str:
    """Where the bytes of ``op_name`` at ``version`` are saved: ``/models/<op>/<version>``."""
    return f"/models/{op_name}/{version}"
