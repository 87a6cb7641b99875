"""Blocking and non-blocking composites, on one worker.

The atomic flow answers on its own; the sequential flow reverses twice without blocking
(get_reply: each reply is a new input message); the blocking flow waits for each reply inside
run (get_reply_future). Run it from this directory; ``FLOWPLEX_DB`` picks the database.
"""

from flowplex.compat.aiflows.utils import colink_utils, serving
from flowplex.compat.aiflows.workers import run_dispatch_worker_thread


def ask(cl, flow_endpoint, number):
    flow = serving.get_flow_instance(cl=cl, flow_endpoint=flow_endpoint)
    input_message = flow.package_input_message({"id": 0, "number": number})
    reply_data = flow.get_reply_future(input_message).get_data()
    print(f"{flow_endpoint}: {number} -> {reply_data}")
    return reply_data


def main():
    cl = colink_utils.start_colink_server()
    # One worker is enough, even for the blocking flow.
    run_dispatch_worker_thread(cl)

    serving.serve_flow(
        cl=cl,
        flow_class_name="ReverseNumberFlowModule.ReverseNumberAtomicFlow",
        flow_endpoint="reverse_number_atomic",
    )
    for endpoint, class_name in (
        ("reverse_number_sequential", "ReverseNumberSequentialFlow"),
        ("reverse_number_blocking", "ReverseNumberBlockingFlow"),
    ):
        serving.serve_flow(
            cl=cl,
            flow_class_name=f"ReverseNumberFlowModule.{class_name}",
            flow_endpoint=endpoint,
        )

    ask(cl, "reverse_number_atomic", 12345)
    ask(cl, "reverse_number_sequential", 1234)
    ask(cl, "reverse_number_blocking", 1234)
    return cl


if __name__ == "__main__":
    main()
