"""``aiflows.interfaces``: :class:`KeyInterface` with aiflows' constructor."""

from .key_interface import KeyInterface

__all__ = ["KeyInterface"]
