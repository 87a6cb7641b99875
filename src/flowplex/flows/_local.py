"""Running flows in this process, without serving: ``LocalRuntime`` and ``run_local``."""

from __future__ import annotations

import copy
import json
import logging
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ..config import resolve_class_path
from ..errors import (
    FlowDefinitionError,
    FlowInstanceError,
    FlowplexError,
    FlowTimeoutError,
    MessagingError,
    UnknownInstanceError,
)
from ..messages import FlowMessage, ReplyMode, new_id
from ._base import Flow, check_state, error_reply, run_message
from ._composite import CompositeFlow, SubflowSpec, subflow_specs
from ._transport import FlowProxy, InstanceAddress

__all__ = ["LocalRuntime", "resolve_flow_class", "run_local"]

logger = logging.getLogger("flowplex.local")

FlowRef = str | type[Flow]


def resolve_flow_class(flow: FlowRef) -> type[Flow]:
    """The Flow subclass that ``flow`` is or names (a dotted class path)."""
    obj = resolve_class_path(flow) if isinstance(flow, str) else flow
    if not (isinstance(obj, type) and issubclass(obj, Flow)):
        raise FlowDefinitionError(f"{flow!r} is not a Flow class (got {obj!r}).")
    return obj


@dataclass
class _Endpoint:
    flow_class: type[Flow]
    singleton: bool
    singleton_id: str | None = None


class LocalRuntime:
    """Runs flows in this process, without serving, storage or worker threads.

    Meant for notebooks, tests and scripts: mount a flow (composites get their subflows mounted
    too, all locally), send it messages through the returned proxy, and read replies. Messages
    are processed in this thread, in arrival order and one at a time per instance, while a
    caller waits on a future (``get_data``), so both the blocking and the non-blocking
    composite styles work. State lives in memory and is kept between messages; a flow that
    raises gets its state rolled back and its caller gets a :class:`~flowplex.FlowError`.

    Subflows are looked up by ``flow_class_name``; ``user_id`` entries are ignored (everything
    runs here). Within one runtime the first subflow entry naming an endpoint defines it, and a
    ``singleton`` endpoint has one shared instance, as when the flows are served.

    Not thread-safe: use one runtime per thread.

    Example::

        rt = LocalRuntime()
        flow = rt.get_flow_instance("flowplex.examples.ReverseNumberSequentialFlow")
        flow.get_reply_future(flow.package_input_message({"number": 1234})).get_data()
    """

    def __init__(self) -> None:
        self._flows: dict[str, Flow] = {}
        self._endpoints: dict[str, _Endpoint] = {}
        self._queue: deque[tuple[InstanceAddress, FlowMessage]] = deque()
        self._replies: dict[str, FlowMessage] = {}
        self._busy: set[str] = set()
        # One outbox per run in progress (runs nest when a blocking composite waits): what a
        # run sends is delivered only if the run succeeds, together with its new state.
        self._outboxes: list[list[tuple[InstanceAddress | None, FlowMessage]]] = []

    # -- the Transport seam -----------------------------------------------------------------

    @property
    def user_id(self) -> str:
        """Always ``"local"``."""
        return "local"

    def send(self, target: InstanceAddress, message: FlowMessage) -> None:
        """Queue ``message`` for the instance ``target`` (processed while someone waits).

        Inside a run, requests whose reply is awaited as a future go out at once (the run
        may block on them); anything else waits in the run's outbox until the run succeeds.
        """
        if self._outboxes and message.reply_mode is not ReplyMode.FUTURE:
            self._outboxes[-1].append((target, message))
        else:
            self._queue.append((target, message))

    def send_reply(self, reply: FlowMessage) -> None:
        """Route a reply by its ``reply_data``: resolve a future, push, or drop.

        A reply sent inside a run is held in the run's outbox until the run succeeds.
        """
        if self._outboxes:
            self._outboxes[-1].append((None, reply))
        else:
            self._route_reply(reply)

    def _route_reply(self, reply: FlowMessage) -> None:
        mode = reply.reply_mode
        if mode is ReplyMode.FUTURE:
            future_id = reply.reply_data.get("future_id")
            if isinstance(future_id, str):
                # First reply wins: a flow that replies and then raises must not overwrite it.
                self._replies.setdefault(future_id, reply)
        elif mode is ReplyMode.PUSH:
            flow_id = reply.reply_data.get("flow_id")
            if not isinstance(flow_id, str):
                raise MessagingError("a push reply needs reply_data['flow_id'].")
            self._queue.append((InstanceAddress(self.user_id, flow_id), reply))
        elif reply.error is not None:
            logger.error(
                "flow %s raised on a message nobody waits for: %s",
                reply.src_flow_id,
                reply.error.get("traceback") or reply.data.get("error"),
            )

    def wait_reply(self, future_id: str, timeout: float | None) -> FlowMessage:
        """Process queued messages until the reply for ``future_id`` is in."""
        deadline = None if timeout is None else time.monotonic() + timeout
        if not self._pump(lambda: future_id in self._replies, deadline):
            raise MessagingError(
                f"the reply for future {future_id} will never arrive: no queued message can "
                f"run. The flow handled the request without replying, or blocking calls wait "
                f"on each other in a cycle."
            )
        return self._replies.pop(future_id)

    async def wait_reply_async(self, future_id: str, timeout: float | None) -> FlowMessage:
        """As :meth:`wait_reply`: local processing is synchronous, so this does not suspend."""
        return self.wait_reply(future_id, timeout)

    def poll_reply(self, future_id: str) -> FlowMessage | None:
        """Process what can run now, then return the reply if it is in."""
        self._pump(lambda: future_id in self._replies, None)
        return self._replies.pop(future_id, None)

    # -- user API ---------------------------------------------------------------------------

    def get_flow_instance(
        self,
        flow: FlowRef,
        config_overrides: Mapping[str, Any] | None = None,
        initial_state: Mapping[str, Any] | None = None,
    ) -> FlowProxy:
        """Mount a new instance of ``flow`` (a Flow class or dotted class path); return a proxy.

        ``config_overrides`` are deep-merged over the class's default config; ``initial_state``
        over the state ``set_up_flow_state`` builds. Raises :class:`~flowplex.FlowInstanceError`
        naming the subflow that could not be mounted.
        """
        flow_class = resolve_flow_class(flow)
        endpoint = f"{flow_class.__module__}.{flow_class.__qualname__}"
        flow_id = self._mount(flow_class, endpoint, dict(config_overrides or {}), initial_state)
        return FlowProxy(self, InstanceAddress(self.user_id, flow_id), flow_endpoint=endpoint)

    def run(
        self,
        flow: FlowRef,
        data: Mapping[str, Any],
        config_overrides: Mapping[str, Any] | None = None,
        initial_state: Mapping[str, Any] | None = None,
        timeout: float | None = None,
    ) -> dict[str, Any]:
        """Mount ``flow``, send it ``data`` and return the reply data (see :func:`run_local`)."""
        if not isinstance(data, Mapping):
            raise MessagingError(f"input data must be a mapping, got {type(data).__name__}.")
        proxy = self.get_flow_instance(flow, config_overrides, initial_state)
        future = proxy.get_reply_future(proxy.package_input_message(dict(data)))
        reply = future.get_data(timeout=timeout)
        self.run_until_idle()
        return reply

    def run_until_idle(self) -> None:
        """Process queued messages until none is left (fire-and-forget work included)."""
        self._pump(lambda: not self._queue, None)

    def get_flow_state(self, flow_id: str) -> dict[str, Any]:
        """A copy of the current ``flow_state`` of instance ``flow_id``."""
        return copy.deepcopy(self._flow(flow_id).flow_state)

    def get_flow_config(self, flow_id: str) -> dict[str, Any]:
        """A copy of the config instance ``flow_id`` was mounted with (``flow_id`` included)."""
        return copy.deepcopy(self._flow(flow_id).flow_config)

    @property
    def instance_ids(self) -> list[str]:
        """Ids of every mounted instance, in mount order."""
        return list(self._flows)

    # -- internals --------------------------------------------------------------------------

    def _flow(self, flow_id: str) -> Flow:
        try:
            return self._flows[flow_id]
        except KeyError:
            raise UnknownInstanceError(f"Unknown flow instance {flow_id}.") from None

    def _mount(
        self,
        flow_class: type[Flow],
        endpoint: str,
        overrides: dict[str, Any],
        initial_state: Mapping[str, Any] | None,
    ) -> str:
        try:
            config = flow_class.get_config(**overrides)
            if issubclass(flow_class, CompositeFlow):
                for spec in subflow_specs(config):
                    if spec.flow_id is None:
                        sub_id = self._mount_subflow(spec)
                        config["subflows_config"][spec.key]["flow_id"] = sub_id
            flow_id = new_id()
            config["flow_id"] = flow_id
            instance = flow_class(config, initial_state)
            instance.attach(self)
        except FlowInstanceError:
            raise
        except FlowplexError as exc:
            raise FlowInstanceError(endpoint, self.user_id, str(exc)) from exc
        self._flows[flow_id] = instance
        return flow_id

    def _mount_subflow(self, spec: SubflowSpec) -> str:
        endpoint_name = spec.flow_endpoint or spec.key
        try:
            endpoint = self._endpoints.get(endpoint_name)
            if endpoint is None:
                if spec.flow_class_name is None:
                    raise FlowDefinitionError(
                        f"subflow {spec.key!r} has no flow_class_name, and nothing in this "
                        f"LocalRuntime defines endpoint {endpoint_name!r}."
                    )
                endpoint = _Endpoint(resolve_flow_class(spec.flow_class_name), spec.singleton)
                self._endpoints[endpoint_name] = endpoint
            if endpoint.singleton and endpoint.singleton_id is not None:
                return endpoint.singleton_id
            flow_id = self._mount(endpoint.flow_class, endpoint_name, spec.overrides, None)
            if endpoint.singleton:
                endpoint.singleton_id = flow_id
            return flow_id
        except FlowplexError as exc:
            raise FlowInstanceError(
                endpoint_name, self.user_id, f"Failed to get instance of subflow {spec.key}.\n{exc}"
            ) from exc

    def _pump(self, done: Callable[[], bool], deadline: float | None) -> bool:
        while not done():
            if deadline is not None and time.monotonic() > deadline:
                raise FlowTimeoutError("timed out waiting for a reply from a local flow.")
            item = self._next_ready()
            if item is None:
                return False
            self._process(*item)
        return True

    def _next_ready(self) -> tuple[InstanceAddress, FlowMessage] | None:
        # Per-instance FIFO: the first queued message whose instance is not mid-run.
        for i, (address, message) in enumerate(self._queue):
            if address.flow_id not in self._busy:
                del self._queue[i]
                return address, message
        return None

    def _process(self, address: InstanceAddress, message: FlowMessage) -> None:
        flow = self._flows.get(address.flow_id)
        if flow is None:
            exc = UnknownInstanceError(f"Unknown flow instance {address.flow_id}.")
            self._route_reply(error_reply(message, exc, "unknown", address.flow_id))
            return
        snapshot = check_state(flow)
        self._busy.add(address.flow_id)
        self._outboxes.append([])
        try:
            run_message(flow, message)
        except Exception as exc:
            self._outboxes.pop()
            flow.flow_state = json.loads(snapshot)
            self._route_reply(error_reply(message, exc, flow.name, address.flow_id))
        else:
            for target, outgoing in self._outboxes.pop():
                if target is None:
                    self._route_reply(outgoing)
                else:
                    self._queue.append((target, outgoing))
        finally:
            self._busy.discard(address.flow_id)


def run_local(
    flow: FlowRef,
    data: Mapping[str, Any],
    config_overrides: Mapping[str, Any] | None = None,
    initial_state: Mapping[str, Any] | None = None,
    timeout: float | None = None,
) -> dict[str, Any]:
    """Run ``flow`` once in this process on ``data`` and return its reply data.

    ``flow`` is a Flow class or a dotted class path; composite flows get their subflows mounted
    locally. A flow that raises makes this raise :class:`~flowplex.FlowError`. For several
    messages to the same instance, use a :class:`LocalRuntime`.

    Example::

        >>> run_local("flowplex.examples.ReverseNumberAtomicFlow", {"number": 1234})
        {'output_number': 4321}
    """
    return LocalRuntime().run(flow, data, config_overrides, initial_state, timeout)
