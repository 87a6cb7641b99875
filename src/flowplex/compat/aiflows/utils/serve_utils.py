"""``aiflows.utils.serve_utils``: the name :mod:`.serving` had before aiflows 1.1.

Every name is looked up in :mod:`.serving`, so the two stay one module's functions.
"""

from typing import Any

from . import serving

__all__ = serving.__all__


def __getattr__(name: str) -> Any:
    return getattr(serving, name)
