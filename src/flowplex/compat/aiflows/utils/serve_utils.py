"""``aiflows.utils.serve_utils``: the name :mod:`.serving` had before aiflows 1.1."""

from .serving import (
    DEFAULT_DISPATCH_POINT,
    FlowInstanceException,
    _get_local_flow_instance_metadata,
    delete_all_flow_endpoints,
    delete_flow_endpoint,
    delete_flow_instance,
    get_flow_instance,
    is_flow_served,
    recursive_serve_flow,
    serve_flow,
    unserve_flow,
)

__all__ = [
    "DEFAULT_DISPATCH_POINT",
    "FlowInstanceException",
    "_get_local_flow_instance_metadata",
    "delete_all_flow_endpoints",
    "delete_flow_endpoint",
    "delete_flow_instance",
    "get_flow_instance",
    "is_flow_served",
    "recursive_serve_flow",
    "serve_flow",
    "unserve_flow",
]
