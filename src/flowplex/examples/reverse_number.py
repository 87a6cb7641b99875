"""The ReverseNumber example flows: reverse a number once, or twice through subflows."""

from __future__ import annotations

from typing import Any

from ..flows import AtomicFlow, CompositeFlow
from ..messages import FlowMessage


def reverse_digits(number: int) -> int:
    """1234 -> 4321, -120 -> -21."""
    sign = -1 if number < 0 else 1
    return sign * int(str(abs(number))[::-1])


class ReverseNumberAtomicFlow(AtomicFlow):
    """Replies ``{"output_number": digits reversed}`` to ``{"number": n}``."""

    def run(self, input_message: FlowMessage) -> dict[str, Any]:
        number = input_message.data["number"]
        if isinstance(number, bool) or not isinstance(number, int):
            raise TypeError(f"'number' must be an integer, got {number!r}.")
        return {"output_number": reverse_digits(number)}


class ReverseNumberSequentialFlow(CompositeFlow):
    """Reverses a number twice, non-blocking: each subflow's reply comes back as a new message.

    ``flow_state["current_call"]`` says which step the next reply is for: the first reply (sent
    on to the second subflow) or the second (answered to the original sender, kept in
    ``flow_state["initial_message"]``). A request that arrives while another is in flight waits
    in ``flow_state["waiting"]`` and starts once the current one is answered (the original
    original took it for a subflow's reply).
    """

    def set_up_flow_state(self) -> None:
        self.flow_state["current_call"] = "first_reverse_flow"
        self.flow_state["waiting"] = []

    def run(self, input_message: FlowMessage) -> None:
        if not input_message.is_reply:
            if self.flow_state["current_call"] == "first_reverse_flow":
                self._start(input_message)
            else:
                self.flow_state["waiting"].append(input_message.to_dict())
            return
        if input_message.error is not None:
            failure = RuntimeError(
                f"subflow {input_message.src_flow} failed: {input_message.data['error']}"
            )
            self._finish(self.package_error_message(self._initial(), failure))
        elif self.flow_state["current_call"] == "second_reverse_flow":
            self.subflows["second_reverse_flow"].get_reply(
                self.package_input_message({"number": input_message.data["output_number"]})
            )
            self.flow_state["current_call"] = "reply_to_sender"
        else:
            self._finish(self.package_output_message(self._initial(), dict(input_message.data)))

    def _start(self, request: FlowMessage) -> None:
        self.flow_state["initial_message"] = request.to_dict()
        self.subflows["first_reverse_flow"].get_reply(
            self.package_input_message({"number": request.data["number"]})
        )
        self.flow_state["current_call"] = "second_reverse_flow"

    def _initial(self) -> FlowMessage:
        return FlowMessage.from_dict(self.flow_state.pop("initial_message"))

    def _finish(self, answer: FlowMessage) -> None:
        """Answer the request in flight, then start the next waiting one, if any."""
        self.send_message(answer)
        self.flow_state["current_call"] = "first_reverse_flow"
        if self.flow_state["waiting"]:
            self._start(FlowMessage.from_dict(self.flow_state["waiting"].pop(0)))


class ReverseNumberBlockingSequentialFlow(CompositeFlow):
    """Reverses a number twice, blocking: waits on each subflow's reply inside ``run``."""

    def run(self, input_message: FlowMessage) -> dict[str, Any]:
        number = input_message.data["number"]
        for key in ("first_reverse_flow", "second_reverse_flow"):
            subflow = self.subflows[key]
            reply = subflow.get_reply_future(subflow.package_input_message({"number": number}))
            number = reply.get_data()["output_number"]
        return {"output_number": number}
