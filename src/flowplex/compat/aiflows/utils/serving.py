"""``aiflows.utils.serving``: serving, mounting and deleting flows, with aiflows' defaults.

Every function is :mod:`flowplex.serving`'s, with these differences for aiflows' callers:

- ``serve_flow`` and ``recursive_serve_flow`` use aiflows' default dispatch point,
  ``"coflows_dispatch"`` (the compat workers' default too; flowplex's own is ``"default"``);
- ``get_flow_instance`` returns a proxy whose futures answer a message to a deleted instance
  with ``{"error": "Unknown flow instance!"}``;
- ``FlowInstanceException`` is :class:`flowplex.FlowInstanceError`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .... import serving as _serving
from ....errors import FlowInstanceError
from ....runtime import Client
from .._proxies import FlowProxy

__all__ = [
    "DEFAULT_DISPATCH_POINT",
    "FlowInstanceException",
    "delete_all_flow_endpoints",
    "delete_flow_endpoint",
    "delete_flow_instance",
    "get_flow_instance",
    "is_flow_served",
    "recursive_serve_flow",
    "serve_flow",
    "unserve_flow",
]

#: aiflows' default dispatch point.
DEFAULT_DISPATCH_POINT = "coflows_dispatch"

#: aiflows' name of :class:`flowplex.FlowInstanceError` (its ``flow_endpoint`` is the endpoint,
#: where aiflows' was a 1-tuple holding it).
FlowInstanceException = FlowInstanceError

is_flow_served = _serving.is_flow_served
unserve_flow = _serving.unserve_flow
delete_flow_endpoint = _serving.delete_flow_endpoint
delete_all_flow_endpoints = _serving.delete_all_flow_endpoints
delete_flow_instance = _serving.delete_flow_instance
_get_local_flow_instance_metadata = _serving.get_flow_instance_metadata


def serve_flow(
    cl: Client,
    flow_class_name: str,
    flow_endpoint: str,
    dispatch_point: str = DEFAULT_DISPATCH_POINT,
    parallel_dispatch: bool = False,
    singleton: bool = False,
) -> bool:
    """Serve ``flow_class_name`` at ``flow_endpoint`` (see :func:`flowplex.serving.serve_flow`);
    False if the endpoint is already served."""
    return _serving.serve_flow(
        cl, flow_class_name, flow_endpoint, dispatch_point, parallel_dispatch, singleton
    )


def recursive_serve_flow(
    cl: Client,
    flow_class_name: str,
    flow_endpoint: str,
    dispatch_point: str = DEFAULT_DISPATCH_POINT,
    parallel_dispatch: bool = False,
    singleton: bool = False,
) -> bool:
    """Serve a flow and, depth first, its subflows served by the same user (see
    :func:`flowplex.serving.recursive_serve_flow`)."""
    return _serving.recursive_serve_flow(
        cl, flow_class_name, flow_endpoint, dispatch_point, parallel_dispatch, singleton
    )


def get_flow_instance(
    cl: Client,
    flow_endpoint: str,
    user_id: str = "local",
    config_overrides: Mapping[str, Any] | None = None,
    initial_state: Mapping[str, Any] | None = None,
    dispatch_point_override: str | None = None,
) -> FlowProxy:
    """Mount an instance of ``flow_endpoint`` served by ``user_id`` and return its proxy (see
    :func:`flowplex.serving.get_flow_instance`); raises :data:`FlowInstanceException`."""
    proxy = _serving.get_flow_instance(
        cl, flow_endpoint, user_id, config_overrides, initial_state, dispatch_point_override
    )
    return FlowProxy.of(proxy, cl)
