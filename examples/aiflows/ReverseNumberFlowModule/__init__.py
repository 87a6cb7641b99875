"""ReverseNumber flows written against aiflows' API, imported from flowplex.compat.aiflows."""

from .ReverseNumberAtomicFlow import ReverseNumberAtomicFlow
from .ReverseNumberBlockingFlow import ReverseNumberBlockingFlow
from .ReverseNumberSequentialFlow import ReverseNumberSequentialFlow

__all__ = ["ReverseNumberAtomicFlow", "ReverseNumberBlockingFlow", "ReverseNumberSequentialFlow"]
