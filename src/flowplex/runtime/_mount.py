"""Mount planning: turning "an instance of what user U serves at endpoint E" into stored rows.

A mount builds the flow (its config merged from the class defaults and the overrides, its state
set up), mounting a composite's subflows first, depth first; a singleton endpoint gives its one
instance instead of a new one. Nothing is stored until the whole tree is planned, and then in
one transaction (:meth:`~flowplex.runtime.Backend.add_instances`), so a failed mount leaves
nothing behind.

Every failure is a :class:`~flowplex.FlowInstanceError` naming the endpoint, the serving user
and the reason: a class that does not import, a constructor that does not take
``(flow_config, flow_state)``, a ``set_up_flow_state`` that raises (whatever it raises), a
config or state that cannot be stored, a subflow that cannot be mounted ("Failed to get instance
of subflow {key}." and its own error below). Storage failures stay
:class:`~flowplex.BackendError`: they say nothing about the flow, and may go away on a retry.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from ..config import ensure_json_serializable
from ..errors import (
    BackendError,
    DuplicateKeyError,
    FlowDefinitionError,
    FlowInstanceError,
    FlowplexError,
)
from ..flows import CompositeFlow, SubflowSpec, build_flow, subflow_specs
from ..identity import is_user_id
from ..messages import new_id
from ._backend import EndpointRecord, InstanceRecord

if TYPE_CHECKING:
    from ._node import Node

__all__ = ["MountRequest", "mount", "remote_link", "serve_local_subflows"]

logger = logging.getLogger("flowplex.serving")

# Each retry finds one more singleton of the tree already mounted, so this bounds the depth of
# singleton nesting under heavy races, not the number of racers.
_MOUNT_ATTEMPTS = 8

_SINGLETON_NAMESPACE = uuid.UUID("5b7e6f1c-3d0a-4c55-9a51-8f3e2d9c6a10")


@dataclass(frozen=True)
class MountRequest:
    """What to mount: ``serving_user``'s ``endpoint``, for ``requester`` (see
    :meth:`Node.mount <flowplex.runtime.Node.mount>`, which builds it)."""

    requester: str
    serving_user: str
    endpoint: str
    config_overrides: Mapping[str, Any] | None = None
    initial_state: Mapping[str, Any] | None = None
    dispatch_point_override: str | None = None
    compose_locally: bool = False


@dataclass
class _Plan:
    """Instances to add in one transaction, and singletons already picked in this mount."""

    records: list[InstanceRecord] = field(default_factory=list)
    singletons: dict[tuple[str, str], str] = field(default_factory=dict)


def mount(node: Node, request: MountRequest) -> str:
    """Mount what ``request`` asks for on ``node``, subflows first; return the instance id.

    A singleton's id is derived from its endpoint, so when two mounts (threads or processes)
    race to create it, the database's primary key lets one win; the loser plans again and finds
    the winner's instance. Only that race is retried: every other failure, a flow's own
    exception included, is reported at once. Subflows on other nodes are mounted there while
    planning; a plan that is not committed here deletes them again.
    """
    for _attempt in range(_MOUNT_ATTEMPTS):
        plan = _Plan()
        try:
            flow_id = _plan_mount(
                node,
                plan,
                requester=request.requester,
                serving_user=request.serving_user,
                endpoint=request.endpoint,
                overrides=dict(request.config_overrides or {}),
                initial_state=request.initial_state,
                dispatch_point_override=request.dispatch_point_override,
                compose_locally=request.compose_locally,
            )
            if plan.records:  # none when the asked-for singleton exists already
                node.backend.add_instances(plan.records)
        except DuplicateKeyError:
            _unmount_remote(node, plan.records)
            if not plan.singletons:
                raise
            continue
        except BaseException:
            _unmount_remote(node, plan.records)
            raise
        for record in plan.records:
            logger.info(
                "mounted %s at %s:mounts:%s:%s",
                record.flow_id,
                record.endpoint,
                record.client_id,
                record.flow_id,
            )
        return flow_id
    raise FlowInstanceError(
        request.endpoint,
        request.serving_user,
        "Lost the race to mount a singleton subflow too often.",
    )


def _unmount_remote(node: Node, records: list[InstanceRecord]) -> None:
    """Delete the instances the links among ``records`` stand for on their nodes (a mount
    that failed here); one that cannot be deleted now is logged, for its owner to delete."""
    from ._remote import LINK_CLASS, local_key, node_api

    for record in records:
        if record.flow_class_name != LINK_CLASS:
            continue
        remote = record.config["remote_flow_id"]
        where = record.config["node_url"]
        try:
            api = node_api(where, local_key(node, record.user_id))
            api.request("DELETE", f"/instances/{quote(remote, safe='')}")
        except Exception as exc:
            logger.warning(
                "could not delete instance %s on %s, mounted for a mount that failed: %s",
                remote,
                where,
                exc,
            )


def singleton_id(user_id: str, endpoint: str, served_at: float) -> str:
    """The instance id of the singleton at ``endpoint`` (served at ``served_at``) of ``user_id``.

    Serving the endpoint again after deleting it gives a new id, so no old message reaches the
    new instance.
    """
    return str(uuid.uuid5(_SINGLETON_NAMESPACE, f"{user_id}/{endpoint}/{served_at!r}"))


@contextmanager
def _failures_as_instance_errors(endpoint: str, user_id: str) -> Iterator[None]:
    """Report whatever the block raises (a flow's own code included) as a FlowInstanceError."""
    try:
        yield
    except (FlowInstanceError, BackendError):
        raise
    except FlowplexError as exc:
        raise FlowInstanceError(endpoint, user_id, str(exc)) from exc
    except Exception as exc:
        raise FlowInstanceError(endpoint, user_id, f"{type(exc).__name__}: {exc}") from exc


def _plan_mount(
    node: Node,
    plan: _Plan,
    *,
    requester: str,
    serving_user: str,
    endpoint: str,
    overrides: dict[str, Any],
    initial_state: Mapping[str, Any] | None,
    dispatch_point_override: str | None,
    compose_locally: bool,
) -> str:
    """Plan the instance (and, first, its subflows) into ``plan``; return its id."""
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
    with _failures_as_instance_errors(endpoint, serving_user):
        cls = node.flow_class(record.flow_class_name)
        config = cls.get_config(**overrides)
        specs = subflow_specs(config) if issubclass(cls, CompositeFlow) else []
    for spec in specs:
        if spec.flow_id is not None:
            continue
        try:
            sub_id = _plan_subflow(node, plan, record, spec, compose_locally)
        except FlowInstanceError as exc:
            raise FlowInstanceError(
                endpoint, serving_user, f"Failed to get instance of subflow {spec.key}.\n{exc}"
            ) from exc
        config["subflows_config"][spec.key]["flow_id"] = sub_id
    flow_id = (
        singleton_id(serving_user, endpoint, record.created_at) if record.singleton else new_id()
    )
    config["flow_id"] = flow_id
    with _failures_as_instance_errors(endpoint, serving_user):
        flow = build_flow(cls, config, initial_state)  # config and state checked now
        ensure_json_serializable(config, f"config of {endpoint}")
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


def _plan_subflow(
    node: Node, plan: _Plan, parent: EndpointRecord, spec: SubflowSpec, compose_locally: bool
) -> str:
    """Plan one subflow of the composite served at ``parent``; return its instance id."""
    serving_user = parent.user_id
    if spec.node_url is not None or spec.registry is not None:
        return _plan_remote_subflow(node, plan, parent, spec)
    if compose_locally:
        endpoint = spec.flow_endpoint or spec.key
        _serve_on_first_use(node, parent, spec, endpoint)
    else:
        if spec.flow_endpoint is None:
            raise FlowInstanceError(
                parent.endpoint,
                serving_user,
                f"Subflow {spec.key} missing flow_endpoint in config.",
            )
        endpoint = spec.flow_endpoint
        if spec.user_id != "local":
            serving_user = spec.user_id
    return _plan_mount(
        node,
        plan,
        requester=parent.user_id,
        serving_user=serving_user,
        endpoint=endpoint,
        overrides=spec.overrides,
        initial_state=None,
        dispatch_point_override=None,
        compose_locally=compose_locally,
    )


def _plan_remote_subflow(node: Node, plan: _Plan, parent: EndpointRecord, spec: SubflowSpec) -> str:
    """Mount the subflow on its node now, and plan the local link standing for it."""
    if spec.flow_endpoint is None:
        raise FlowInstanceError(
            parent.endpoint, parent.user_id, f"Subflow {spec.key} missing flow_endpoint in config."
        )
    record = remote_link(
        node,
        parent.user_id,
        spec.flow_endpoint,
        node_url=spec.node_url,
        registry=spec.registry,
        remote_user=None if spec.user_id == "local" else spec.user_id,
        overrides=spec.overrides,
        name=spec.key,
        dispatch_point=parent.dispatch_point,
    )
    plan.records.append(record)
    return record.flow_id


def remote_link(
    node: Node,
    user_id: str,
    endpoint: str,
    *,
    node_url: str | None = None,
    registry: str | None = None,
    remote_user: str | None = None,
    overrides: Mapping[str, Any] | None = None,
    name: str | None = None,
    dispatch_point: str = "default",
) -> InstanceRecord:
    """Mount ``endpoint`` on the node at ``node_url`` (or the one ``registry`` lists for it) as
    ``user_id``, now, over HTTP; the record of the local link standing for it (not stored).

    ``remote_user`` names the user serving it there (default: its only server). Raises
    :class:`~flowplex.FlowInstanceError` with the other node's reason when it refuses.
    """
    from ._remote import LINK_CLASS, local_key, node_api, resolve_flow

    with _failures_as_instance_errors(endpoint, remote_user or "?"):
        if node_url is None:
            if registry is None:
                raise FlowDefinitionError("a remote flow needs node_url or registry.")
            node_url, endpoint = resolve_flow(endpoint, registry)
        api = node_api(node_url, local_key(node, user_id))
        answer = api.mount(endpoint, remote_user, overrides)
    link_id = new_id()
    config = {
        "name": name or endpoint,
        "description": f"{endpoint} on {api.base_url}",
        "flow_id": link_id,
        "node_url": api.base_url,
        "flow_endpoint": endpoint,
        "remote_flow_id": answer["flow_id"],
        "remote_user_id": answer["user_id"],
    }
    return InstanceRecord(
        flow_id=link_id,
        user_id=user_id,
        endpoint=f"{endpoint}@{api.base_url}",
        client_id="local",
        flow_class_name=LINK_CLASS,
        config=config,
        state={},
        dispatch_point=dispatch_point,
        dispatch_point_override=None,
        parallel_dispatch=False,
        created_at=time.time(),
    )


def _serve_on_first_use(
    node: Node, parent: EndpointRecord, spec: SubflowSpec, endpoint: str
) -> None:
    if node.is_served(parent.user_id, endpoint):
        return
    with _failures_as_instance_errors(endpoint, parent.user_id):
        if spec.flow_class_name is None:
            raise FlowDefinitionError(
                f"subflow {spec.key!r} has no flow_class_name, and nothing here serves "
                f"endpoint {endpoint!r}."
            )
        node.serve(
            parent.user_id,
            spec.flow_class_name,
            endpoint,
            dispatch_point=parent.dispatch_point,
            parallel_dispatch=spec.parallel_dispatch,
            singleton=spec.singleton,
        )


def serve_local_subflows(
    node: Node, user_id: str, flow_class_name: str, dispatch_point: str
) -> bool:
    """Serve, depth first, the subflows of ``flow_class_name`` that ``user_id`` serves itself
    (see :meth:`Node.serve`); False (logged) if one lacks ``flow_endpoint`` or
    ``flow_class_name``."""
    cls = node.flow_class(flow_class_name)
    if not issubclass(cls, CompositeFlow):
        return True
    for spec in subflow_specs(cls.get_config()):
        if spec.user_id != "local":
            continue
        if spec.flow_endpoint is None or spec.flow_class_name is None:
            missing = "flow_endpoint" if spec.flow_endpoint is None else "flow_class_name"
            logger.error("Subflow %s has no %s; cannot serve it.", spec.key, missing)
            return False
        served = node.serve(
            user_id,
            spec.flow_class_name,
            spec.flow_endpoint,
            dispatch_point=spec.dispatch_point or dispatch_point,
            parallel_dispatch=spec.parallel_dispatch,
            singleton=spec.singleton,
            with_subflows=True,
        )
        if not served:
            logger.info("Subflow %s already served.", spec.key)
    return True
