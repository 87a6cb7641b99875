"""``raises``: the one assertion helper the kit needs, so it runs without pytest."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["raises"]


@contextmanager
def raises(kind: type[BaseException], match: str | None = None) -> Iterator[None]:
    """Assert that the block raises ``kind`` (whose message matches the regex ``match``, if
    given); :class:`AssertionError` otherwise. Other exceptions pass through."""
    try:
        yield
    except kind as exc:
        if match is not None and not re.search(match, str(exc)):
            raise AssertionError(
                f"{type(exc).__name__} raised, but {str(exc)!r} does not match {match!r}"
            ) from exc
        return
    raise AssertionError(f"{kind.__name__} was not raised")
