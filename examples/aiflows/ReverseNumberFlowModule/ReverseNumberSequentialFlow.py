from typing import Any

from flowplex.compat.aiflows import logging
from flowplex.compat.aiflows.base_flows import CompositeFlow
from flowplex.compat.aiflows.interfaces.key_interface import KeyInterface
from flowplex.compat.aiflows.messages import FlowMessage

log = logging.get_logger(__name__)


class ReverseNumberSequentialFlow(CompositeFlow):
    """Reverses a number twice without blocking: each subflow's reply comes back as a new
    input message, and flow_state["current_call"] says which step it belongs to."""

    NEXT_CALL = {
        "first_reverse_flow": "second_reverse_flow",
        "second_reverse_flow": "reply_to_message",
        "reply_to_message": "first_reverse_flow",
    }

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.to_second_flow = KeyInterface(
            keys_to_rename={"output_number": "number"}, keys_to_select=["number"]
        )
        self.to_caller = KeyInterface(keys_to_select=["output_number"])

    def set_up_flow_state(self) -> None:
        super().set_up_flow_state()
        self.flow_state = {"current_call": "first_reverse_flow"}

    def run(self, input_message: FlowMessage) -> None:
        print("Called ReverseNumberSequential", "\n", "state", self.flow_state)
        step = self.flow_state["current_call"]
        if step == "first_reverse_flow":
            # The request itself is kept in the state until its answer is ready.
            self.flow_state["initial_message"] = input_message
            self.subflows["first_reverse_flow"].get_reply(input_message)
        elif step == "second_reverse_flow":
            request = self.package_input_message(self.to_second_flow(input_message).data)
            self.subflows["second_reverse_flow"].get_reply(request)
        else:
            answer = self.to_caller(input_message)
            self.send_message(
                self.package_output_message(
                    input_message=self.flow_state["initial_message"], response=answer.data
                )
            )
        self.flow_state["current_call"] = self.NEXT_CALL[step]
