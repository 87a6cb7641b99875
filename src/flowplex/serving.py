"""Serving flows: endpoints, mounted instances, and the tree that shows them.

The API of aiflows' ``serving`` module, on flowplex's node database::

    cl = flowplex.start_node()
    serving.serve_flow(cl, "flowplex.examples.ReverseNumberAtomicFlow", "reverse_number")
    flow = serving.get_flow_instance(cl, "reverse_number")
    flow.get_reply_future(flow.package_input_message({"number": 1234})).get_data(timeout=5)

A user serves a flow class at an endpoint; anyone on the node (the user itself, ``"local"``, or
another user) mounts instances of it with :func:`get_flow_instance` and talks to them through
the returned proxy. Each instance has its own persisted state, unless the endpoint is a
``singleton``, whose one instance everybody shares. Composite flows get their subflow instances
mounted first, recursively, in the same transaction.

Differences from aiflows, each a fix: serving checks that the class imports and is a Flow;
deletes leave nothing behind and log no errors; a message to a deleted instance gets an error
reply; another user's instance state cannot be read.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from .errors import FlowInstanceError, FlowplexError
from .flows import FlowProxy, InstanceAddress
from .runtime import Client, InstanceRecord, RemoteClient, local_key, resolve_flow

__all__ = [
    "delete_all_flow_endpoints",
    "delete_flow_endpoint",
    "delete_flow_instance",
    "format_flow_instances",
    "format_served_flows",
    "get_flow_instance",
    "get_flow_instance_metadata",
    "get_flow_state",
    "is_flow_served",
    "print_flow_instances",
    "print_served_flows",
    "recursive_serve_flow",
    "serve_flow",
    "unserve_flow",
]

_ENDPOINT_RE = re.compile(r"^[A-Za-z0-9_.\-]{1,200}$")


def _check_client(cl: Any) -> Client:
    if not isinstance(cl, Client):
        raise TypeError(f"expected a flowplex client handle (from start_node), got {cl!r}.")
    return cl


def _check_endpoint(flow_endpoint: Any) -> str:
    if not isinstance(flow_endpoint, str) or not _ENDPOINT_RE.match(flow_endpoint):
        raise FlowplexError(
            f"invalid flow endpoint {flow_endpoint!r}: use 1-200 letters, digits, '_', '-' or '.'."
        )
    return flow_endpoint


def _check_dispatch_point(dispatch_point: Any, what: str = "dispatch_point") -> str:
    if not isinstance(dispatch_point, str) or not _ENDPOINT_RE.match(dispatch_point):
        raise FlowplexError(
            f"invalid {what} {dispatch_point!r}: use letters, digits, '_', '-', '.'."
        )
    return dispatch_point


# -- serving ---------------------------------------------------------------------------------


def serve_flow(
    cl: Client,
    flow_class_name: str,
    flow_endpoint: str,
    dispatch_point: str = "default",
    parallel_dispatch: bool = False,
    singleton: bool = False,
) -> bool:
    """Serve ``flow_class_name`` at ``flow_endpoint`` for user ``cl``.

    Returns True, or False if the endpoint is already served (and changes nothing). Raises a
    :class:`~flowplex.ClassPathError` or :class:`~flowplex.FlowDefinitionError` if the class does
    not import or is not a Flow. ``parallel_dispatch=True`` lets an instance handle several
    messages at once; its state is then not persisted between messages.
    """
    options = (dispatch_point, parallel_dispatch, singleton)
    return _serve(cl, flow_class_name, flow_endpoint, *options, with_subflows=False)


def recursive_serve_flow(
    cl: Client,
    flow_class_name: str,
    flow_endpoint: str,
    dispatch_point: str = "default",
    parallel_dispatch: bool = False,
    singleton: bool = False,
) -> bool:
    """Serve a flow and, depth first, every subflow of it that the same user serves.

    Subflows with ``user_id`` absent or ``"local"`` are served at their ``flow_endpoint`` with
    their ``flow_class_name``, ``singleton``, ``parallel_dispatch`` and ``dispatch_point``.
    Returns False (logging why) if a subflow lacks ``flow_endpoint`` or ``flow_class_name``;
    otherwise what :func:`serve_flow` returns for the top flow.
    """
    options = (dispatch_point, parallel_dispatch, singleton)
    return _serve(cl, flow_class_name, flow_endpoint, *options, with_subflows=True)


def _serve(
    cl: Any,
    flow_class_name: Any,
    flow_endpoint: Any,
    dispatch_point: Any,
    parallel_dispatch: bool,
    singleton: bool,
    *,
    with_subflows: bool,
) -> bool:
    client = _check_client(cl)
    _check_endpoint(flow_endpoint)
    _check_dispatch_point(dispatch_point)
    if not isinstance(flow_class_name, str):
        raise FlowplexError(
            f"flow_class_name must be a dotted class path, got {flow_class_name!r}."
        )
    return client.node.serve(
        client.get_user_id(),
        flow_class_name,
        flow_endpoint,
        dispatch_point=dispatch_point,
        parallel_dispatch=parallel_dispatch,
        singleton=singleton,
        with_subflows=with_subflows,
    )


def is_flow_served(cl: Client, flow_endpoint: str) -> bool:
    """True if user ``cl`` serves ``flow_endpoint`` (and has not unserved it)."""
    cl = _check_client(cl)
    return cl.node.is_served(cl.get_user_id(), _check_endpoint(flow_endpoint))


def unserve_flow(cl: Client, flow_endpoint: str) -> bool:
    """Stop serving ``flow_endpoint``: existing instances keep working, new mounts fail.

    Returns False if the endpoint does not exist.
    """
    cl = _check_client(cl)
    return cl.node.unserve(cl.get_user_id(), _check_endpoint(flow_endpoint))


def delete_flow_endpoint(cl: Client, flow_endpoint: str) -> list[str]:
    """Delete an endpoint and every instance mounted on it; returns the deleted instance ids."""
    cl = _check_client(cl)
    return cl.node.delete_endpoint(cl.get_user_id(), _check_endpoint(flow_endpoint))


def delete_all_flow_endpoints(cl: Client) -> list[str]:
    """Delete every endpoint of user ``cl`` and their instances; returns the instance ids."""
    cl = _check_client(cl)
    ids: list[str] = []
    for record in cl.node.endpoints(cl.get_user_id()):
        ids.extend(cl.node.delete_endpoint(cl.get_user_id(), record.endpoint))
    return ids


def delete_flow_instance(cl: Client, flow_id: str) -> bool:
    """Delete one instance served by user ``cl``; False if it has none with that id.

    Messages still queued for it, and any sent later, are answered with an error naming the
    unknown instance.
    """
    cl = _check_client(cl)
    return cl.node.delete_instance(cl.get_user_id(), str(flow_id))


def get_flow_instance_metadata(cl: Client, flow_id: str) -> dict[str, str] | None:
    """``{"flow_endpoint", "user_id"}`` of an instance user ``cl`` serves, else None.

    ``user_id`` is the client that mounted it: ``"local"`` for ``cl`` itself.
    """
    cl = _check_client(cl)
    return cl.node.instance_metadata(cl.get_user_id(), str(flow_id))


def get_flow_state(cl: Client, flow_id: str) -> dict[str, Any]:
    """The persisted ``flow_state`` of an instance user ``cl`` serves.

    Raises :class:`~flowplex.UnknownInstanceError` for an unknown id or another user's instance:
    users cannot read each other's state.
    """
    cl = _check_client(cl)
    return cl.node.instance_state(cl.get_user_id(), str(flow_id))


# -- mounting --------------------------------------------------------------------------------


def get_flow_instance(
    cl: Client,
    flow_endpoint: str,
    user_id: str = "local",
    config_overrides: Mapping[str, Any] | None = None,
    initial_state: Mapping[str, Any] | None = None,
    dispatch_point_override: str | None = None,
) -> FlowProxy:
    """Mount an instance of the flow ``user_id`` serves at ``flow_endpoint``; return its proxy.

    ``user_id`` is ``"local"`` (``cl``'s own endpoints) or another user's id on the node. A new
    instance is mounted per call, unless the endpoint is a singleton: then everybody gets its
    one instance (and ``config_overrides`` are ignored). ``config_overrides`` are deep-merged
    over the class's default config; ``initial_state`` over its initial state;
    ``dispatch_point_override`` moves this instance to another worker pool. Subflows of a
    composite are mounted first. Everything is committed in one transaction, or nothing.

    ``flow_endpoint`` may also be ``"name@registry_url"``: the flow a registry lists under
    that endpoint (or name), mounted on the node serving it, over HTTP, as user ``cl``; the
    proxy then talks to that node directly (``user_id`` names its serving user, if several).

    Raises :class:`~flowplex.FlowInstanceError` with the reason for every failure of the flow
    or a subflow ("Not serving at {endpoint}.", "Failed to get instance of subflow {key}.", a
    class that does not import, a constructor or ``set_up_flow_state`` that raised, ...).
    """
    cl = _check_client(cl)
    if isinstance(flow_endpoint, str) and "@" in flow_endpoint:
        return _get_listed_instance(cl, flow_endpoint, user_id, config_overrides, initial_state)
    _check_endpoint(flow_endpoint)
    if dispatch_point_override is not None:
        _check_dispatch_point(dispatch_point_override, "dispatch_point_override")
    serving_user = cl.get_user_id() if user_id == "local" else user_id
    flow_id = cl.node.mount(
        cl.get_user_id(),
        serving_user,
        flow_endpoint,
        config_overrides,
        initial_state,
        dispatch_point_override,
    )
    return FlowProxy(cl, InstanceAddress(serving_user, flow_id), flow_endpoint=flow_endpoint)


def _get_listed_instance(
    cl: Client,
    listed: str,
    user_id: str,
    config_overrides: Mapping[str, Any] | None,
    initial_state: Mapping[str, Any] | None,
) -> FlowProxy:
    name, _, registry = listed.rpartition("@")
    try:
        node_url, endpoint = resolve_flow(name, registry)
    except FlowplexError as exc:
        raise FlowInstanceError(listed, user_id, str(exc)) from exc
    remote = RemoteClient(node_url, local_key(cl.node, cl.get_user_id()))
    return remote.get_flow_instance(
        endpoint, None if user_id == "local" else user_id, config_overrides, initial_state
    )


# -- the tree ----------------------------------------------------------------------------------


def _value(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True)
    return str(value)


def format_served_flows(cl: Client, print_values: bool = False) -> str:
    """The served-flow tree of user ``cl`` as text (what :func:`print_served_flows` prints)."""
    cl = _check_client(cl)
    node, user_id = cl.node, cl.get_user_id()
    lines: list[str] = []

    def leaf(indent: int, key: str, value: Any) -> None:
        pad = " " * indent
        lines.append(f"{pad}{key}: {_value(value)}" if print_values else f"{pad}{key}")

    for ep in node.endpoints(user_id):
        lines.append(f" {ep.endpoint}/")
        leaf(3, "init", ep.served)
        leaf(3, "singleton", ep.singleton)
        leaf(3, "parallel_dispatch", ep.parallel_dispatch)
        leaf(3, "flow_class_name", ep.flow_class_name)
        leaf(3, "default_dispatch_point", ep.dispatch_point)
        instances = node.instances(user_id, ep.endpoint)
        if not instances:
            continue
        lines.append("   mounts/")
        by_client: dict[str, list[InstanceRecord]] = {}
        for inst in instances:
            by_client.setdefault(inst.client_id, []).append(inst)
        for client_id, group in by_client.items():
            lines.append(f"     {client_id}/")
            for inst in group:
                lines.append(f"       {inst.flow_id}/")
                leaf(9, "init", True)
                leaf(9, "config_overrides", inst.config)
                leaf(9, "state", inst.state)
                if inst.dispatch_point_override is not None:
                    leaf(9, "dispatch_point_override", inst.dispatch_point_override)
    return "\n".join(lines)


def print_served_flows(cl: Client, print_values: bool = False) -> None:
    """Print user ``cl``'s endpoints and the instances mounted on them, as a tree.

    ``print_values=True`` adds values (booleans as true/false, config and state as JSON).
    """
    print(format_served_flows(cl, print_values))


def format_flow_instances(cl: Client, print_values: bool = False) -> str:
    """The ids of every instance user ``cl`` serves, one per line (what
    :func:`print_flow_instances` prints)."""
    cl = _check_client(cl)
    node, user_id = cl.node, cl.get_user_id()
    lines = []
    for ep in node.endpoints(user_id):
        for inst in node.instances(user_id, ep.endpoint):
            line = f" {inst.flow_id}"
            if print_values:
                metadata = {"flow_endpoint": inst.endpoint, "user_id": inst.client_id}
                line += f": {_value(metadata)}"
            lines.append(line)
    return "\n".join(lines)


def print_flow_instances(cl: Client, print_values: bool = False) -> None:
    """Print the ids of every instance user ``cl`` serves.

    ``print_values=True`` adds each one's metadata (as :func:`get_flow_instance_metadata`).
    """
    print(format_flow_instances(cl, print_values))


#: The aiflows name of :func:`get_flow_instance_metadata`.
_get_local_flow_instance_metadata = get_flow_instance_metadata
