from typing import Any

from flowplex.compat.aiflows.base_flows import CompositeFlow
from flowplex.compat.aiflows.messages import FlowMessage


class ReverseNumberBlockingFlow(CompositeFlow):
    """Reverses a number twice, waiting for each subflow's reply inside run."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)

    def run(self, input_message: FlowMessage) -> None:
        number = input_message.data["number"]
        for key in ("first_reverse_flow", "second_reverse_flow"):
            subflow = self.subflows[key]
            future = subflow.get_reply_future(subflow.package_input_message({"number": number}))
            number = future.get_data()["output_number"]
        self.send_message(self.package_output_message(input_message, {"output_number": number}))
