"""Helpful utility functions: serving, mounting, inspecting and deleting flows.

The steps of aiflows' "helpful utils" notebook, importing from flowplex.compat.aiflows. Run it
from this directory (``python helpful_utils.py``): the flow classes are found in
``ReverseNumberFlowModule`` beside it. ``FLOWPLEX_DB`` picks the database (a fresh SQLite file
in a temporary directory when unset).
"""

from flowplex.compat.aiflows.utils import colink_utils, serving
from flowplex.compat.aiflows.workers import run_dispatch_worker_thread


def status(cl):
    colink_utils.print_served_flows(cl)
    print("\nFlow Instances:")
    colink_utils.print_flow_instances(cl)


def main():
    cl = colink_utils.start_colink_server()

    run_dispatch_worker_thread(cl)
    run_dispatch_worker_thread(cl)

    print(
        serving.serve_flow(
            cl=cl,
            flow_class_name="ReverseNumberFlowModule.ReverseNumberAtomicFlow",
            flow_endpoint="reverse_number_atomic",
        )
    )
    print(
        serving.serve_flow(
            cl=cl,
            flow_class_name="ReverseNumberFlowModule.ReverseNumberSequentialFlow",
            flow_endpoint="reverse_number_sequential",
        )
    )
    colink_utils.print_served_flows(cl, print_values=True)

    # Mounts three instances: the sequential flow and, first, its two atomic subflows.
    flow = serving.get_flow_instance(cl=cl, flow_endpoint="reverse_number_sequential")
    status(cl)

    print(serving._get_local_flow_instance_metadata(cl, flow_id=flow.get_instance_id()))

    # Only stops new mounts: the instances already mounted keep working.
    serving.unserve_flow(cl, flow_endpoint="reverse_number_atomic")
    status(cl)
    print(serving.is_flow_served(cl, flow_endpoint="reverse_number_atomic"))

    try:
        serving.get_flow_instance(cl=cl, flow_endpoint="reverse_number_sequential")
    except serving.FlowInstanceException as exc:
        print(f"FlowInstanceException: {exc}")

    # Deletes the endpoint and every instance mounted on it.
    serving.delete_flow_endpoint(cl, flow_endpoint="reverse_number_atomic")
    status(cl)

    serving.delete_flow_instance(cl, flow_id=flow.get_instance_id())
    status(cl)

    serving.delete_all_flow_endpoints(cl)
    status(cl)
    return cl


if __name__ == "__main__":
    main()
