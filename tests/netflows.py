"""Flows for the network tests (imported by ``flowplex up`` processes through ``--path``)."""

from __future__ import annotations

from typing import Any, ClassVar

from flowplex import AtomicFlow, FlowMessage
from flowplex.examples import reverse_digits


class CountingReverseFlow(AtomicFlow):
    """Reverses ``number`` and remembers every number it was sent, in order, in its state: a
    message taken twice shows up twice."""

    default_config: ClassVar[dict[str, Any]] = {
        "name": "CountingReverse",
        "description": "Reverses a number and keeps every number it saw.",
    }

    def set_up_flow_state(self) -> None:
        self.flow_state["seen"] = []

    def run(self, input_message: FlowMessage) -> dict[str, Any]:
        number = input_message.data["number"]
        self.flow_state["seen"].append(number)
        return {"output_number": reverse_digits(number)}
