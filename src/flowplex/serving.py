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
import logging
import re
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .config import ensure_json_serializable
from .errors import DuplicateKeyError, FlowInstanceError, FlowplexError, UnknownInstanceError
from .flows import CompositeFlow, FlowProxy, InstanceAddress, subflow_specs
from .identity import is_user_id
from .messages import new_id
from .runtime import Client, EndpointRecord, InstanceRecord

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

logger = logging.getLogger("flowplex.serving")

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
    cl = _check_client(cl)
    _check_endpoint(flow_endpoint)
    _check_dispatch_point(dispatch_point)
    if not isinstance(flow_class_name, str):
        raise FlowplexError(
            f"flow_class_name must be a dotted class path, got {flow_class_name!r}."
        )
    cl.node.flow_class(flow_class_name)  # fails now, not at the first mount
    record = EndpointRecord(
        user_id=cl.get_user_id(),
        endpoint=flow_endpoint,
        flow_class_name=flow_class_name,
        singleton=bool(singleton),
        parallel_dispatch=bool(parallel_dispatch),
        dispatch_point=dispatch_point,
        served=True,
        created_at=time.time(),
    )
    if not cl.node.backend.serve_endpoint(record):
        logger.info("already serving at %s", flow_endpoint)
        return False
    logger.info(
        "started serving %s at %s (dispatch_point=%s, parallel_dispatch=%s, singleton=%s)",
        flow_class_name,
        flow_endpoint,
        dispatch_point,
        parallel_dispatch,
        singleton,
    )
    return True


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
    cl = _check_client(cl)
    cls = cl.node.flow_class(flow_class_name)
    if issubclass(cls, CompositeFlow):
        for spec in subflow_specs(cls.get_config()):
            if spec.user_id != "local":
                continue
            if spec.flow_endpoint is None or spec.flow_class_name is None:
                missing = "flow_endpoint" if spec.flow_endpoint is None else "flow_class_name"
                logger.error("Subflow %s has no %s; cannot serve it.", spec.key, missing)
                return False
            served = recursive_serve_flow(
                cl,
                spec.flow_class_name,
                spec.flow_endpoint,
                spec.dispatch_point or dispatch_point,
                spec.parallel_dispatch,
                spec.singleton,
            )
            if not served:
                logger.info("Subflow %s already served.", spec.key)
    return serve_flow(
        cl, flow_class_name, flow_endpoint, dispatch_point, parallel_dispatch, singleton
    )


def is_flow_served(cl: Client, flow_endpoint: str) -> bool:
    """True if user ``cl`` serves ``flow_endpoint`` (and has not unserved it)."""
    cl = _check_client(cl)
    record = cl.node.backend.get_endpoint(cl.get_user_id(), _check_endpoint(flow_endpoint))
    return record is not None and record.served


def unserve_flow(cl: Client, flow_endpoint: str) -> bool:
    """Stop serving ``flow_endpoint``: existing instances keep working, new mounts fail.

    Returns False if the endpoint does not exist.
    """
    cl = _check_client(cl)
    done = cl.node.backend.set_served(cl.get_user_id(), _check_endpoint(flow_endpoint), False)
    if done:
        logger.info("stopped serving at %s", flow_endpoint)
    return done


def delete_flow_endpoint(cl: Client, flow_endpoint: str) -> list[str]:
    """Delete an endpoint and every instance mounted on it; returns the deleted instance ids."""
    cl = _check_client(cl)
    ids = cl.node.backend.delete_endpoint(cl.get_user_id(), _check_endpoint(flow_endpoint))
    for flow_id in ids:
        logger.info("deleted flow instance %s", flow_id)
    logger.info("deleted endpoint %s", flow_endpoint)
    return ids


def delete_all_flow_endpoints(cl: Client) -> list[str]:
    """Delete every endpoint of user ``cl`` and their instances; returns the instance ids."""
    cl = _check_client(cl)
    ids: list[str] = []
    for record in cl.node.backend.list_endpoints(cl.get_user_id()):
        ids.extend(delete_flow_endpoint(cl, record.endpoint))
    return ids


def delete_flow_instance(cl: Client, flow_id: str) -> bool:
    """Delete one instance served by user ``cl``; False if it has none with that id.

    Messages still queued for it, and any sent later, are answered with an error naming the
    unknown instance.
    """
    cl = _check_client(cl)
    record = cl.node.backend.get_instance(str(flow_id))
    if record is None or record.user_id != cl.get_user_id():
        return False
    deleted = cl.node.backend.delete_instance(record.flow_id)
    if deleted:
        logger.info("deleted flow instance %s", flow_id)
    return deleted


def get_flow_instance_metadata(cl: Client, flow_id: str) -> dict[str, str] | None:
    """``{"flow_endpoint", "user_id"}`` of an instance user ``cl`` serves, else None.

    ``user_id`` is the client that mounted it: ``"local"`` for ``cl`` itself.
    """
    cl = _check_client(cl)
    record = cl.node.backend.get_instance(str(flow_id))
    if record is None or record.user_id != cl.get_user_id():
        return None
    return {"flow_endpoint": record.endpoint, "user_id": record.client_id}


def get_flow_state(cl: Client, flow_id: str) -> dict[str, Any]:
    """The persisted ``flow_state`` of an instance user ``cl`` serves.

    Raises :class:`~flowplex.UnknownInstanceError` for an unknown id or another user's instance:
    users cannot read each other's state.
    """
    cl = _check_client(cl)
    record = cl.node.backend.get_instance(str(flow_id))
    if record is None or record.user_id != cl.get_user_id():
        raise UnknownInstanceError(f"user {cl.get_user_id()} serves no flow instance {flow_id}.")
    return record.state


# -- mounting --------------------------------------------------------------------------------


@dataclass
class _MountPlan:
    """Instances to add in one transaction, and singletons already picked in this call."""

    records: list[InstanceRecord] = field(default_factory=list)
    singletons: dict[tuple[str, str], str] = field(default_factory=dict)


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

    Raises :class:`~flowplex.FlowInstanceError` ("Not serving at {endpoint}.", "Failed to get
    instance of subflow {key}.", ...).
    """
    cl = _check_client(cl)
    _check_endpoint(flow_endpoint)
    if config_overrides is not None and not isinstance(config_overrides, Mapping):
        raise FlowplexError("config_overrides must be a mapping.")
    if initial_state is not None and not isinstance(initial_state, Mapping):
        raise FlowplexError("initial_state must be a mapping.")
    if dispatch_point_override is not None:
        _check_dispatch_point(dispatch_point_override, "dispatch_point_override")
    serving_user = cl.get_user_id() if user_id == "local" else user_id
    # A singleton's id is derived from its endpoint, so when two mounts (threads or processes)
    # race to create it, the database's primary key lets one win; the loser mounts again and
    # finds the winner's instance.
    for _attempt in range(_MOUNT_ATTEMPTS):
        plan = _MountPlan()
        try:
            flow_id = _mount_and_store(
                cl,
                serving_user,
                flow_endpoint,
                config_overrides,
                initial_state,
                dispatch_point_override,
                plan,
            )
        except DuplicateKeyError:
            if not plan.singletons:
                raise
            continue
        return FlowProxy(cl, InstanceAddress(serving_user, flow_id), flow_endpoint=flow_endpoint)
    raise FlowInstanceError(
        flow_endpoint, serving_user, "Lost the race to mount a singleton subflow too often."
    )


# Each retry finds one more singleton of the tree already mounted, so this bounds the depth of
# singleton nesting under heavy races, not the number of racers.
_MOUNT_ATTEMPTS = 8


def _singleton_id(user_id: str, endpoint: str, served_at: float) -> str:
    """The instance id of the singleton at ``endpoint`` (served at ``served_at``) of ``user_id``.

    Serving the endpoint again after deleting it gives a new id, so no old message reaches the
    new instance.
    """
    return str(uuid.uuid5(_SINGLETON_NAMESPACE, f"{user_id}/{endpoint}/{served_at!r}"))


_SINGLETON_NAMESPACE = uuid.UUID("5b7e6f1c-3d0a-4c55-9a51-8f3e2d9c6a10")


def _mount_and_store(
    cl: Client,
    serving_user: str,
    flow_endpoint: str,
    config_overrides: Mapping[str, Any] | None,
    initial_state: Mapping[str, Any] | None,
    dispatch_point_override: str | None,
    plan: _MountPlan,
) -> str:
    flow_id = _mount(
        cl,
        requester=cl.get_user_id(),
        serving_user=serving_user,
        endpoint=flow_endpoint,
        overrides=dict(config_overrides or {}),
        initial_state=initial_state,
        dispatch_point_override=dispatch_point_override,
        plan=plan,
    )
    if plan.records:
        cl.node.backend.add_instances(plan.records)
    for record in plan.records:
        logger.info(
            "mounted %s at %s:mounts:%s:%s",
            record.flow_id,
            record.endpoint,
            record.client_id,
            record.flow_id,
        )
    return flow_id


def _mount(
    cl: Client,
    *,
    requester: str,
    serving_user: str,
    endpoint: str,
    overrides: dict[str, Any],
    initial_state: Mapping[str, Any] | None,
    dispatch_point_override: str | None,
    plan: _MountPlan,
) -> str:
    node = cl.node
    if not is_user_id(serving_user):
        raise FlowInstanceError(endpoint, serving_user, f"Invalid participant id {serving_user}")
    if not node.has_user(serving_user):
        raise FlowInstanceError(
            endpoint, serving_user, f"No user {serving_user} on this node ({node.url})."
        )
    record = node.backend.get_endpoint(serving_user, endpoint)
    if record is None or not record.served:
        raise FlowInstanceError(endpoint, serving_user, f"Not serving at {endpoint}.")
    if record.singleton:
        key = (serving_user, endpoint)
        if key in plan.singletons:
            return plan.singletons[key]
        existing = node.backend.list_instances(serving_user, endpoint)
        if existing:
            logger.info("fetched singleton %s at %s", existing[0].flow_id, endpoint)
            return existing[0].flow_id
    try:
        cls = node.flow_class(record.flow_class_name)
        config = cls.get_config(**overrides)
    except FlowplexError as exc:
        raise FlowInstanceError(endpoint, serving_user, str(exc)) from exc
    if issubclass(cls, CompositeFlow):
        try:
            specs = subflow_specs(config)
        except FlowplexError as exc:
            raise FlowInstanceError(endpoint, serving_user, str(exc)) from exc
        for spec in specs:
            if spec.flow_id is not None:
                continue
            if spec.flow_endpoint is None:
                raise FlowInstanceError(
                    endpoint, serving_user, f"Subflow {spec.key} missing flow_endpoint in config."
                )
            sub_user = serving_user if spec.user_id == "local" else spec.user_id
            try:
                sub_id = _mount(
                    cl,
                    requester=serving_user,
                    serving_user=sub_user,
                    endpoint=spec.flow_endpoint,
                    overrides=spec.overrides,
                    initial_state=None,
                    dispatch_point_override=None,
                    plan=plan,
                )
            except FlowInstanceError as exc:
                raise FlowInstanceError(
                    endpoint, serving_user, f"Failed to get instance of subflow {spec.key}.\n{exc}"
                ) from exc
            config["subflows_config"][spec.key]["flow_id"] = sub_id
    flow_id = (
        _singleton_id(serving_user, endpoint, record.created_at) if record.singleton else new_id()
    )
    config["flow_id"] = flow_id
    try:
        flow = cls(config, initial_state)  # validates config and state now, not at first use
        ensure_json_serializable(config, f"config of {endpoint}")
    except FlowplexError as exc:
        raise FlowInstanceError(endpoint, serving_user, str(exc)) from exc
    plan.records.append(
        InstanceRecord(
            flow_id=flow_id,
            user_id=serving_user,
            endpoint=endpoint,
            client_id="local" if requester == serving_user else requester,
            flow_class_name=record.flow_class_name,
            config=config,
            state=flow.flow_state,
            dispatch_point=dispatch_point_override or record.dispatch_point,
            dispatch_point_override=dispatch_point_override,
            parallel_dispatch=record.parallel_dispatch,
            created_at=time.time(),
        )
    )
    if record.singleton:
        plan.singletons[(serving_user, endpoint)] = flow_id
    return flow_id


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
    backend = cl.node.backend
    lines: list[str] = []

    def leaf(indent: int, key: str, value: Any) -> None:
        pad = " " * indent
        lines.append(f"{pad}{key}: {_value(value)}" if print_values else f"{pad}{key}")

    for ep in backend.list_endpoints(cl.get_user_id()):
        lines.append(f" {ep.endpoint}/")
        leaf(3, "init", ep.served)
        leaf(3, "singleton", ep.singleton)
        leaf(3, "parallel_dispatch", ep.parallel_dispatch)
        leaf(3, "flow_class_name", ep.flow_class_name)
        leaf(3, "default_dispatch_point", ep.dispatch_point)
        instances = backend.list_instances(cl.get_user_id(), ep.endpoint)
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


def format_flow_instances(cl: Client) -> str:
    """The ids of every instance user ``cl`` serves, one per line."""
    cl = _check_client(cl)
    backend = cl.node.backend
    ids = [
        inst.flow_id
        for ep in backend.list_endpoints(cl.get_user_id())
        for inst in backend.list_instances(cl.get_user_id(), ep.endpoint)
    ]
    return "\n".join(f" {flow_id}" for flow_id in ids)


def print_flow_instances(cl: Client) -> None:
    """Print the ids of every instance user ``cl`` serves."""
    print(format_flow_instances(cl))


#: The aiflows name of :func:`get_flow_instance_metadata`.
_get_local_flow_instance_metadata = get_flow_instance_metadata
