"""Getting flow instances from other users.

The steps of aiflows' "multiple users" notebook, importing from flowplex.compat.aiflows. User 0
serves the atomic flow as a singleton; user 1 composes it into its sequential flow and also
talks to it directly. Run it from this directory; ``FLOWPLEX_DB`` picks the database.
"""

from flowplex.compat.aiflows.utils import colink_utils, serving
from flowplex.compat.aiflows.workers import (
    run_dispatch_worker_thread,
    run_get_instance_worker_thread,
)


def status(cl):
    colink_utils.print_served_flows(cl, print_values=False)
    print("\nAll flow instances:")
    colink_utils.print_flow_instances(cl)


def main():
    cls = colink_utils.start_colink_server_with_users(num_users=2)
    print("User 0 id:", cls[0].get_user_id())
    print("User 1 id:", cls[1].get_user_id())

    # USER 0 serves the atomic flow that user 1 will use as a subflow.
    run_dispatch_worker_thread(cls[0])
    run_get_instance_worker_thread(cls[0])
    print(
        serving.serve_flow(
            cl=cls[0],
            flow_class_name="ReverseNumberFlowModule.ReverseNumberAtomicFlow",
            flow_endpoint="reverse_number_atomic",
            singleton=True,
        )
    )

    # USER 1 serves a composite whose subflows are served by user 0.
    run_dispatch_worker_thread(cls[1])
    run_get_instance_worker_thread(cls[1])
    print(
        serving.serve_flow(
            cl=cls[1],
            flow_class_name="ReverseNumberFlowModule.ReverseNumberSequentialFlow",
            flow_endpoint="reverse_number_sequential",
        )
    )

    # The users are new on every run, so their ids go in as config overrides.
    cfg_overrides = {
        "subflows_config": {
            "first_reverse_flow": {"user_id": cls[0].get_user_id()},
            "second_reverse_flow": {"user_id": cls[0].get_user_id()},
        }
    }
    flow = serving.get_flow_instance(
        cl=cls[1],
        flow_endpoint="reverse_number_sequential",
        user_id="local",
        config_overrides=cfg_overrides,
    )

    input_data = {"id": 0, "number": 1234}
    input_message = flow.package_input_message(input_data)
    future = flow.get_reply_future(input_message)
    reply_data = future.get_data()
    print("Data sent:\n", input_data, "\n")
    print("REPLY:\n", reply_data, "\n")

    # User 1 can also get user 0's flow directly: the singleton both subflows share.
    remote_flow = serving.get_flow_instance(
        cl=cls[1],
        flow_endpoint="reverse_number_atomic",
        user_id=cls[0].get_user_id(),
    )
    input_message = remote_flow.package_input_message({"id": 0, "number": 1234})
    print(remote_flow.get_reply_future(input_message).get_data())

    status(cls[0])
    status(cls[1])
    return cls


if __name__ == "__main__":
    main()
