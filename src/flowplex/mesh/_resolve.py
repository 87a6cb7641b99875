"""Finding the node that serves a flow a registry lists."""

from __future__ import annotations

from ..runtime import resolve_flow

__all__ = ["resolve"]


def resolve(name: str, registry: str) -> tuple[str, str]:
    """``(node_url, endpoint)`` of the flow ``name`` (its endpoint, or its listed name) that
    the registry at ``registry`` lists; a node listed online comes first.

    Raises :class:`~flowplex.RemoteError` when the registry cannot be reached and
    :class:`~flowplex.ConfigurationError` when it lists no such flow. Mount it with
    ``flowplex.connect(node_url, key).get_flow_instance(endpoint)``.
    """
    return resolve_flow(name, registry)
