"""Proxies and futures with aiflows' answer for a message to a deleted instance.

aiflows answered a message to an unknown (deleted) flow instance with the reply data
``{"error": "Unknown flow instance!"}``, which its callers read with ``get_data()``. flowplex's
own futures raise :class:`~flowplex.FlowError` for it instead; these keep aiflows' answer. Any
other error reply still raises: aiflows sent none (a failing flow left its caller waiting).
"""

from __future__ import annotations

from typing import Any

from ...errors import FlowError, UnknownInstanceError
from ...flows import FlowFuture as _CoreFuture
from ...flows import FlowProxy as _CoreProxy
from ...messages import FlowMessage

__all__ = ["UNKNOWN_INSTANCE_REPLY", "FlowFuture", "FlowProxy"]

#: The reply data aiflows' workers sent for a message to an unknown flow instance.
UNKNOWN_INSTANCE_REPLY = {"error": "Unknown flow instance!"}


class FlowFuture(_CoreFuture):
    """flowplex's :class:`~flowplex.FlowFuture`, except that the reply to a message sent to an
    unknown (deleted) instance is the data ``{"error": "Unknown flow instance!"}``."""

    __slots__ = ()

    def get_message(self, timeout: float | None = None) -> FlowMessage:
        """The reply message; waits up to ``timeout`` seconds (None: without limit)."""
        try:
            return super().get_message(timeout)
        except FlowError as exc:
            return self._unknown_instance_reply(exc)

    def try_get_message(self) -> FlowMessage | None:
        """The reply message if it has arrived, else None (never waits)."""
        try:
            return super().try_get_message()
        except FlowError as exc:
            return self._unknown_instance_reply(exc)

    async def get_message_async(self, timeout: float | None = None) -> FlowMessage:
        """Await the reply message without blocking the event loop."""
        try:
            return await super().get_message_async(timeout)
        except FlowError as exc:
            return self._unknown_instance_reply(exc)

    def _unknown_instance_reply(self, exc: FlowError) -> FlowMessage:
        reply = self._message
        if exc.remote_type != UnknownInstanceError.__name__ or reply is None:
            raise exc
        return reply.replace(data=dict(UNKNOWN_INSTANCE_REPLY), error=None)


class FlowProxy(_CoreProxy):
    """flowplex's :class:`~flowplex.FlowProxy` whose futures are :class:`FlowFuture`."""

    __slots__ = ()

    @classmethod
    def of(cls, proxy: _CoreProxy, transport: Any) -> FlowProxy:
        """The same handle (address, endpoint, name, owner) as ``proxy``, on ``transport``."""
        return cls(
            transport,
            proxy.address,
            flow_endpoint=proxy.flow_endpoint,
            name=proxy.name,
            owner=proxy._owner,
        )

    def get_reply_future(self, message: FlowMessage) -> FlowFuture:
        """Send ``message`` and return a :class:`FlowFuture` for its reply."""
        future = super().get_reply_future(message)
        return FlowFuture(future.future_id, self._transport)
