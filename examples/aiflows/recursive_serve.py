"""Recursive serving: serve a composite flow and, with it, its local subflows.

The steps of aiflows' "recursive serve" notebook, importing from flowplex.compat.aiflows. Run
it from this directory; ``FLOWPLEX_DB`` picks the database.
"""

import json
import os

from flowplex.compat.aiflows.utils import colink_utils, serving
from flowplex.compat.aiflows.utils.general_helpers import read_yaml_file
from flowplex.compat.aiflows.workers import run_dispatch_worker_thread

HERE = os.path.dirname(os.path.abspath(__file__))


def main():
    cl = colink_utils.start_colink_server()
    run_dispatch_worker_thread(cl)
    run_dispatch_worker_thread(cl)

    # The subflows' flow_class_name and singleton fields tell recursive serving what to serve.
    cfg = read_yaml_file(
        os.path.join(HERE, "ReverseNumberFlowModule", "ReverseNumberSequentialFlow.yaml")
    )
    print(json.dumps(cfg, indent=4))

    # Serves reverse_number_atomic too.
    print(
        serving.recursive_serve_flow(
            cl=cl,
            flow_class_name="ReverseNumberFlowModule.ReverseNumberSequentialFlow",
            flow_endpoint="reverse_number_sequential",
        )
    )

    flow = serving.get_flow_instance(cl=cl, flow_endpoint="reverse_number_sequential")
    input_data = {"id": 0, "number": 1234}
    reply_data = flow.get_reply_future(flow.package_input_message(input_data)).get_data()
    print("Data sent:\n", input_data, "\n")
    print("REPLY:\n", reply_data, "\n")

    colink_utils.print_served_flows(cl)
    return cl


if __name__ == "__main__":
    main()
