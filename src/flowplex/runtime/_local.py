"""Running flows in this process without serving them: ``LocalRuntime`` and ``run_local``.

A LocalRuntime is a node of the one serving runtime: an anonymous memory database, one user,
and a dispatcher with no thread of its own. Flows are served and mounted as on any node; the
difference is who runs the messages: the caller, while it waits on a reply.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..errors import MessagingError, UnknownInstanceError
from ..flows import Flow, FlowProxy, InstanceAddress
from ..messages import FlowMessage
from ._backend import InstanceRecord
from ._dispatch import Dispatcher
from ._node import open_node

__all__ = ["FlowRef", "LocalRuntime", "run_local"]

#: A Flow subclass, or the dotted path of one.
FlowRef = str | type[Flow]

_DISPATCH_POINT = "default"
# A run in the caller's thread cannot die without its caller, so its lease must never run out:
# an expired lease would let a nested wait run the same message again.
_LEASE_SECONDS = 10 * 365 * 24 * 3600.0


class LocalRuntime:
    """Runs flows in this process: no database file, no worker thread, nothing to set up.

    Meant for notebooks, tests and scripts: mount a flow (composites get their subflows mounted
    too, all here), send it messages through the returned proxy, and read replies. Messages run
    in the thread that waits on a future (``get_data``, ``await``), in arrival order and one at
    a time per instance, so both the blocking and the non-blocking composite styles work. When
    nothing is left to run and the reply has not come, the wait raises
    :class:`~flowplex.MessagingError` instead of hanging. State is kept between messages; a
    flow that raises keeps its state as it was and its caller gets a
    :class:`~flowplex.FlowError`. Flows behave exactly as when served: this is a node of the same
    runtime, on an in-memory database, whose caller runs the messages.

    Subflows are found by ``flow_class_name``, and are all this runtime's, whatever their
    ``user_id`` says. Within one runtime the first subflow entry naming an endpoint defines it
    (an entry without ``flow_endpoint`` names the endpoint after its key), and a ``singleton``
    endpoint has one shared instance, as when the flows are served. ``"???"`` config values are
    filled from ``secrets``, as a dispatch worker does.

    Not thread-safe: use one runtime per thread.

    Example::

        rt = LocalRuntime()
        flow = rt.get_flow_instance("flowplex.examples.ReverseNumberSequentialFlow")
        flow.get_reply_future(flow.package_input_message({"number": 1234})).get_data()
    """

    def __init__(self, secrets: Mapping[str, Any] | None = None) -> None:
        self._node = open_node("memory://")
        self._client = self._node.add_user()
        self._dispatcher = Dispatcher(
            self._node, _DISPATCH_POINT, secrets=secrets, lease_seconds=_LEASE_SECONDS
        )
        self._node.run_in_callers(self._dispatcher)

    # -- the Transport seam (for proxies built by hand) ---------------------------------------

    @property
    def user_id(self) -> str:
        """The id of the runtime's one user, who serves and mounts everything here."""
        return self._client.user_id

    def send(self, target: InstanceAddress, message: FlowMessage) -> None:
        """Queue ``message`` for the instance ``target`` (it runs while someone waits)."""
        self._client.send(target, message)

    def send_reply(self, reply: FlowMessage) -> None:
        """Route a reply by its ``reply_data``: to a future, back to a composite, or nowhere."""
        self._client.send_reply(reply)

    def wait_reply(self, future_id: str, timeout: float | None) -> FlowMessage:
        """Run queued messages until the reply for ``future_id`` is in."""
        return self._client.wait_reply(future_id, timeout)

    async def wait_reply_async(self, future_id: str, timeout: float | None) -> FlowMessage:
        """As :meth:`wait_reply`: the messages run in this thread, so this does not suspend."""
        return await self._client.wait_reply_async(future_id, timeout)

    def poll_reply(self, future_id: str) -> FlowMessage | None:
        """Run what can run now, then return the reply if it is in."""
        return self._client.poll_reply(future_id)

    # -- user API ---------------------------------------------------------------------------

    def get_flow_instance(
        self,
        flow: FlowRef,
        config_overrides: Mapping[str, Any] | None = None,
        initial_state: Mapping[str, Any] | None = None,
    ) -> FlowProxy:
        """Mount a new instance of ``flow`` (a Flow class or dotted class path); return a proxy.

        ``config_overrides`` are deep-merged over the class's default config; ``initial_state``
        over the state ``set_up_flow_state`` builds. Raises :class:`~flowplex.ClassPathError` or
        :class:`~flowplex.FlowDefinitionError` if ``flow`` names no Flow class, and
        :class:`~flowplex.FlowInstanceError` with the reason (naming the subflow) if the flow or
        a subflow cannot be mounted.
        """
        user = self._client.user_id
        endpoint = self._serve(flow)
        flow_id = self._node.mount(
            user, user, endpoint, config_overrides, initial_state, compose_locally=True
        )
        return FlowProxy(self._client, InstanceAddress(user, flow_id), flow_endpoint=endpoint)

    def _serve(self, flow: FlowRef) -> str:
        """Serve ``flow`` at an endpoint named after its class path (once); the endpoint.

        As :func:`flowplex.serving.serve_flow`, a class that does not import or is not a Flow
        raises :class:`~flowplex.ClassPathError` / :class:`~flowplex.FlowDefinitionError`.
        """
        user = self._client.user_id
        if isinstance(flow, str):
            name = flow
            self._node.flow_class(name)
        else:
            name = self._node.register_flow_class(flow)
        if not self._node.is_served(user, name):
            self._node.serve(user, name, name, dispatch_point=_DISPATCH_POINT)
        return name

    def run(
        self,
        flow: FlowRef,
        data: Mapping[str, Any],
        config_overrides: Mapping[str, Any] | None = None,
        initial_state: Mapping[str, Any] | None = None,
        timeout: float | None = None,
    ) -> dict[str, Any]:
        """Mount ``flow``, send it ``data`` and return the reply data (see :func:`run_local`).

        What the flow sent without waiting (fire-and-forget work) runs before this returns.
        """
        if not isinstance(data, Mapping):
            raise MessagingError(f"input data must be a mapping, got {type(data).__name__}.")
        proxy = self.get_flow_instance(flow, config_overrides, initial_state)
        future = proxy.get_reply_future(proxy.package_input_message(dict(data)))
        reply = future.get_data(timeout=timeout)
        self.run_until_idle()
        return reply

    def run_until_idle(self) -> None:
        """Run queued messages until none is left (fire-and-forget work included)."""
        while self._dispatcher.run_batch(limit=1):
            pass

    def get_flow_state(self, flow_id: str) -> dict[str, Any]:
        """The current ``flow_state`` of instance ``flow_id`` (a copy)."""
        return self._instance(flow_id).state

    def get_flow_config(self, flow_id: str) -> dict[str, Any]:
        """The config instance ``flow_id`` was mounted with, ``flow_id`` included (a copy)."""
        return self._instance(flow_id).config

    @property
    def instance_ids(self) -> list[str]:
        """Ids of every mounted instance, in mount order (subflows before their composite)."""
        return [record.flow_id for record in self._node.instances(self._client.user_id)]

    def _instance(self, flow_id: str) -> InstanceRecord:
        record = self._node.backend.get_instance(str(flow_id))
        if record is None:
            raise UnknownInstanceError(f"Unknown flow instance {flow_id}.")
        return record

    def __repr__(self) -> str:
        return f"<LocalRuntime user={self._client.user_id[:16]}…>"


def run_local(
    flow: FlowRef,
    data: Mapping[str, Any],
    config_overrides: Mapping[str, Any] | None = None,
    initial_state: Mapping[str, Any] | None = None,
    timeout: float | None = None,
) -> dict[str, Any]:
    """Run ``flow`` once in this process on ``data`` and return its reply data.

    ``flow`` is a Flow class or a dotted class path; composite flows get their subflows mounted
    here too. A flow that raises makes this raise :class:`~flowplex.FlowError`. For several
    messages to the same instance, use a :class:`LocalRuntime`.

    Example::

        >>> run_local("flowplex.examples.ReverseNumberAtomicFlow", {"number": 1234})
        {'output_number': 4321}
    """
    return LocalRuntime().run(flow, data, config_overrides, initial_state, timeout)
