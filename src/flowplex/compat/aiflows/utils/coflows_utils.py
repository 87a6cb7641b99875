"""``aiflows.utils.coflows_utils``: the future a ``get_reply_future`` call returns."""

from .._proxies import FlowFuture

__all__ = ["FlowFuture"]
