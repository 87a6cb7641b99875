"""``aiflows.base_flows``: ``Flow``, ``AtomicFlow`` and ``CompositeFlow`` with aiflows' behaviour.

They are flowplex's flow classes (the runtime serves, mounts and runs them like any other), with
what code written for aiflows relies on:

- constructors that take keywords only (``def __init__(self, **kwargs)``) work, as for every
  flowplex flow;
- ``input_interface`` and ``output_interface`` in the config are not applied: aiflows kept them
  as documentation (flowplex's own classes apply them);
- ``package_output_message(input_message, response)`` takes a message as ``response`` too;
- the futures of subflows answer a message to a deleted instance with
  ``{"error": "Unknown flow instance!"}``, as aiflows did;
- :class:`~flowplex.FlowMessage` objects may be kept in ``flow_state`` (aiflows pickled the
  state; flowplex stores them as JSON and gives them back as messages), as for every flow.
"""

from __future__ import annotations

from typing import Any, ClassVar

from ... import flows as _flows
from ...messages import FlowMessage
from ._proxies import FlowProxy

__all__ = ["AtomicFlow", "CompositeFlow", "Flow"]


class Flow(_flows.Flow):
    """aiflows' ``Flow``: a flowplex flow that leaves its config's interfaces unapplied."""

    apply_config_interfaces: ClassVar[bool] = False

    def package_output_message(
        self, input_message: FlowMessage, response: dict[str, Any] | FlowMessage
    ) -> FlowMessage:
        """The reply to ``input_message`` carrying ``response`` (a dict, or a message's data)."""
        if isinstance(response, FlowMessage):
            response = response.data
        return super().package_output_message(input_message, response)


class AtomicFlow(Flow, _flows.AtomicFlow):
    """aiflows' ``AtomicFlow``: a flow that does its work itself."""


class CompositeFlow(Flow, _flows.CompositeFlow):
    """aiflows' ``CompositeFlow``: ``self.subflows[key]`` are proxies of mounted instances."""

    def attach(self, transport: _flows.Transport) -> None:
        """Connect to the runtime; subflow futures answer as aiflows' did."""
        super().attach(transport)
        self.subflows = {
            key: FlowProxy.of(proxy, transport) for key, proxy in self.subflows.items()
        }
