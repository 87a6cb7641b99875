from typing import Any

from flowplex.compat.aiflows.base_flows import AtomicFlow
from flowplex.compat.aiflows.messages import FlowMessage


class ReverseNumberAtomicFlow(AtomicFlow):
    """Answers {"number": n} with {"output_number": n's digits in reverse order}."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)

    def run(self, input_message: FlowMessage) -> None:
        digits = str(input_message.data["number"])
        response = {"output_number": int(digits[::-1])}
        self.send_message(
            self.package_output_message(input_message=input_message, response=response)
        )
