"""``aiflows.messages``: the message class is flowplex's own :class:`~flowplex.FlowMessage`."""

from ...messages import FlowMessage

__all__ = ["FlowMessage"]
