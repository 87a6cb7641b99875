"""``aiflows.logging``: loggers and verbosity, on the standard library's logging.

``get_logger(name)`` is ``logging.getLogger(name)``; the ``set_verbosity*`` functions set the
level of flowplex's loggers (the library that now runs the flows).
"""

from __future__ import annotations

import logging

__all__ = [
    "get_logger",
    "get_verbosity",
    "set_verbosity",
    "set_verbosity_debug",
    "set_verbosity_error",
    "set_verbosity_info",
    "set_verbosity_warning",
]

_LIBRARY_LOGGER = "flowplex"


def get_logger(name: str | None = None) -> logging.Logger:
    """The logger called ``name`` (flowplex's own logger when None)."""
    return logging.getLogger(name or _LIBRARY_LOGGER)


def get_verbosity() -> int:
    """The level of flowplex's loggers."""
    return logging.getLogger(_LIBRARY_LOGGER).getEffectiveLevel()


def set_verbosity(verbosity: int) -> None:
    """Set the level of flowplex's loggers (``logging.DEBUG``, ``logging.INFO``, ...)."""
    logging.getLogger(_LIBRARY_LOGGER).setLevel(verbosity)


def set_verbosity_debug() -> None:
    """Log everything, down to DEBUG."""
    set_verbosity(logging.DEBUG)


def set_verbosity_info() -> None:
    """Log INFO and above."""
    set_verbosity(logging.INFO)


def set_verbosity_warning() -> None:
    """Log WARNING and above."""
    set_verbosity(logging.WARNING)


def set_verbosity_error() -> None:
    """Log ERROR and above."""
    set_verbosity(logging.ERROR)
