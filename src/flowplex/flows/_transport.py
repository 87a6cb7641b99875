"""The seam between flows and whatever runs them, plus the futures and proxies built on it.

A flow never talks to storage or threads itself. Whoever runs it (the in-process
:class:`~flowplex.LocalRuntime`, or a dispatch worker of the serving runtime) attaches a
:class:`Transport`, and everything a flow sends goes through it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Generator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from ..errors import FlowError, MessagingError
from ..messages import FUTURE_SEP, FlowMessage, ReplyMode, new_id

if TYPE_CHECKING:
    from ._base import Flow

__all__ = ["FlowFuture", "FlowProxy", "InstanceAddress", "Transport"]


@dataclass(frozen=True, slots=True)
class InstanceAddress:
    """Where a flow instance lives: the user serving it and its instance id."""

    user_id: str
    flow_id: str


class Transport(Protocol):
    """What a runtime provides to the flows it runs.

    ``user_id`` is the user on whose behalf messages are sent. ``send`` delivers a request to a
    flow instance; ``send_reply`` routes a reply by its ``reply_data``; ``wait_reply`` and
    ``wait_reply_async`` block until the reply for a future id has arrived, raising
    :class:`~flowplex.FlowTimeoutError` after ``timeout`` seconds; ``poll_reply`` returns it, or
    None if it has not arrived.
    """

    @property
    def user_id(self) -> str: ...

    def send(self, target: InstanceAddress, message: FlowMessage) -> None: ...

    def send_reply(self, reply: FlowMessage) -> None: ...

    def wait_reply(self, future_id: str, timeout: float | None) -> FlowMessage: ...

    async def wait_reply_async(self, future_id: str, timeout: float | None) -> FlowMessage: ...

    def poll_reply(self, future_id: str) -> FlowMessage | None: ...


def raise_if_error(message: FlowMessage) -> FlowMessage:
    """Return ``message``, or raise :class:`~flowplex.FlowError` if it is an error reply."""
    if message.error is not None:
        err = message.error
        raise FlowError(
            err.get("type", "Exception"),
            err.get("message", ""),
            err.get("traceback", ""),
            flow_id=message.src_flow_id,
        )
    return message


class FlowFuture:
    """The pending reply to a message sent with ``get_reply_future``.

    ``get_message`` / ``get_data`` block until the reply arrives (or ``timeout`` seconds pass:
    :class:`~flowplex.FlowTimeoutError`). An error reply raises :class:`~flowplex.FlowError`
    carrying the remote exception's type, message and traceback. ``await future`` gives the
    reply data without blocking the event loop.
    """

    __slots__ = ("_future_id", "_message", "_output_interface", "_transport")

    def __init__(self, future_id: str, transport: Transport) -> None:
        self._future_id = future_id
        self._transport = transport
        self._message: FlowMessage | None = None
        self._output_interface: Callable[[dict[str, Any]], dict[str, Any]] | None = None

    @property
    def future_id(self) -> str:
        """The id the reply is matched by."""
        return self._future_id

    def set_output_interface(self, fn: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
        """Post-process the reply data with ``fn`` in :meth:`get_data`."""
        self._output_interface = fn

    def done(self) -> bool:
        """True once the reply has arrived."""
        return self.try_get_message() is not None

    def get_message(self, timeout: float | None = None) -> FlowMessage:
        """The reply message; waits up to ``timeout`` seconds (None: without limit)."""
        if self._message is None:
            self._message = self._transport.wait_reply(self._future_id, timeout)
        return raise_if_error(self._message)

    def get_data(self, timeout: float | None = None) -> dict[str, Any]:
        """The reply's data (through the output interface, if one was set)."""
        return self._data(self.get_message(timeout))

    def try_get_message(self) -> FlowMessage | None:
        """The reply message if it has arrived, else None (never waits)."""
        if self._message is None:
            self._message = self._transport.poll_reply(self._future_id)
        return None if self._message is None else raise_if_error(self._message)

    def try_get_data(self) -> dict[str, Any] | None:
        """The reply data if it has arrived, else None (never waits)."""
        message = self.try_get_message()
        return None if message is None else self._data(message)

    async def get_message_async(self, timeout: float | None = None) -> FlowMessage:
        """Await the reply message without blocking the event loop."""
        if self._message is None:
            self._message = await self._transport.wait_reply_async(self._future_id, timeout)
        return raise_if_error(self._message)

    async def get_data_async(self, timeout: float | None = None) -> dict[str, Any]:
        """Await the reply data without blocking the event loop."""
        return self._data(await self.get_message_async(timeout))

    def __await__(self) -> Generator[Any, None, dict[str, Any]]:
        return self.get_data_async().__await__()

    def _data(self, message: FlowMessage) -> dict[str, Any]:
        data = message.data
        return self._output_interface(data) if self._output_interface else data

    def __repr__(self) -> str:
        state = "done" if self._message is not None else "pending"
        return f"<FlowFuture {self._future_id} {state}>"


class FlowProxy:
    """A handle on a flow instance: one you mounted, or a subflow of a composite.

    Sending through a proxy never runs the flow in the caller; the runtime delivers the message
    to the instance's queue. ``owner`` is the composite flow that holds this proxy as a subflow
    (None for a handle held by user code); push replies (:meth:`get_reply`) go back to it.
    """

    __slots__ = ("_owner", "_transport", "address", "flow_endpoint", "name")

    def __init__(
        self,
        transport: Transport,
        address: InstanceAddress,
        *,
        flow_endpoint: str,
        name: str | None = None,
        owner: Flow | None = None,
    ) -> None:
        self._transport = transport
        self._owner = owner
        self.address = address
        self.flow_endpoint = flow_endpoint
        self.name = name or f"Proxy_{flow_endpoint}"

    @property
    def user_id(self) -> str:
        """The id of the user serving the instance."""
        return self.address.user_id

    def get_instance_id(self) -> str:
        """The id of the proxied flow instance."""
        return self.address.flow_id

    def package_input_message(
        self, data: dict[str, Any], reply_data: dict[str, Any] | None = None
    ) -> FlowMessage:
        """A new message carrying ``data`` to this instance."""
        if self._owner is not None:
            return self._owner.package_input_message(
                data, dst_flow=self.name, reply_data=reply_data
            )
        return FlowMessage(
            data=dict(data),
            src_flow=self.name,
            src_flow_id=self.address.flow_id,
            dst_flow=self.flow_endpoint,
            reply_data=reply_data or {"mode": ReplyMode.NO_REPLY.value},
            user_id=self._transport.user_id,
        )

    def send_message(self, message: FlowMessage) -> None:
        """Send ``message`` fire-and-forget: the flow runs, and no reply is routed back."""
        self._send(message, {"mode": ReplyMode.NO_REPLY.value})

    def get_reply_future(self, message: FlowMessage) -> FlowFuture:
        """Send ``message`` and return a :class:`FlowFuture` for its reply (the blocking style)."""
        # Bound to the target: only a reply from that instance completes the future.
        future_id = f"{new_id()}{FUTURE_SEP}{self.address.flow_id}"
        reply_data = {
            "mode": ReplyMode.FUTURE.value,
            "user_id": self._transport.user_id,
            "future_id": future_id,
        }
        self._send(message, reply_data)
        return FlowFuture(future_id, self._transport)

    def get_reply(self, message: FlowMessage) -> None:
        """Send ``message``; its reply arrives at the owning composite as a new input message.

        This is the non-blocking style: the composite's ``run`` returns, and runs again when the
        reply comes in.
        """
        if self._owner is None:
            raise MessagingError(
                "get_reply routes the reply back to the calling flow, and this proxy has none "
                "(it is not a subflow); use get_reply_future instead."
            )
        reply_data = {
            "mode": ReplyMode.PUSH.value,
            "user_id": self._transport.user_id,
            "flow_id": self._owner.get_instance_id(),
        }
        # Where the owner's conversation started: a failure on the reply answers that caller.
        origin = getattr(self._owner, "_origin", None)
        if origin is not None:
            reply_data["origin"] = origin
        self._send(message, reply_data)

    def _send(self, message: FlowMessage, reply_data: dict[str, Any]) -> None:
        if not isinstance(message, FlowMessage):
            raise MessagingError(f"expected a FlowMessage, got {type(message).__name__}.")
        # A fresh id per send: one input may be forwarded to several subflows, and each send
        # must be its own message. input_message_id keeps the conversation chain.
        changes: dict[str, Any] = {"message_id": new_id(), "reply_data": reply_data}
        if self._owner is not None:
            changes.update(
                src_flow=self._owner.name,
                src_flow_id=self._owner.get_instance_id(),
                user_id=self._transport.user_id,
            )
        # The sender is whoever holds the transport, never what the message claims.
        changes["user_id"] = self._transport.user_id
        self._transport.send(self.address, message.replace(**changes).without_private_keys())

    def __repr__(self) -> str:
        return (
            f"<FlowProxy {self.name} endpoint={self.flow_endpoint!r} "
            f"flow_id={self.address.flow_id!r} user={self.address.user_id[:12]!r}>"
        )


def run_coroutine_sync(awaitable: Awaitable[Any]) -> Any:
    """Run an awaitable to completion from synchronous code.

    With no event loop running in this thread it uses :func:`asyncio.run`; inside a running loop
    (a notebook, an async caller) it runs a fresh loop in a helper thread, since a loop cannot be
    re-entered.
    """

    async def _wrap() -> Any:
        return await awaitable

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(_wrap())
    import concurrent.futures

    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, _wrap()).result()
