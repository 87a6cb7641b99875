"""``CompositeFlow``: a flow that delegates to subflows through proxies."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from ..errors import FlowDefinitionError
from ._base import Flow
from ._transport import FlowProxy, InstanceAddress, Transport

__all__ = ["CompositeFlow", "SubflowSpec", "subflow_specs"]

#: Keys of a ``subflows_config`` entry that say where the subflow is, not how it is configured.
ROUTING_KEYS = frozenset(
    {
        "flow_endpoint",
        "user_id",
        "flow_class_name",
        "singleton",
        "parallel_dispatch",
        "dispatch_point",
        "flow_id",
        "node_url",
        "registry",
        "_target_",
    }
)


@dataclass(frozen=True)
class SubflowSpec:
    """One entry of ``subflows_config``, split into routing and config overrides.

    ``user_id`` is ``"local"`` (the composite's own user) or another user's id. ``node_url``
    names the node serving it when that is another node (``registry``: a registry listing it,
    ``flow_endpoint`` then being the endpoint or listed name to look up). ``flow_id`` is set
    once the subflow instance is mounted; ``overrides`` are deep-merged into the subflow's
    config when it is mounted.
    """

    key: str
    flow_endpoint: str | None
    user_id: str = "local"
    flow_class_name: str | None = None
    singleton: bool = False
    parallel_dispatch: bool = False
    dispatch_point: str | None = None
    flow_id: str | None = None
    node_url: str | None = None
    registry: str | None = None
    overrides: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def parse(cls, key: str, entry: Any, parent: str) -> SubflowSpec:
        """Validate one ``subflows_config`` entry; errors name the parent and the key."""
        where = f"{parent}.subflows_config[{key!r}]"
        if not isinstance(entry, Mapping):
            raise FlowDefinitionError(f"{where} must be a mapping, got {type(entry).__name__}.")
        strings = ("flow_endpoint", "user_id", "flow_class_name", "dispatch_point", "flow_id")
        for name in (*strings, "node_url", "registry"):
            value = entry.get(name)
            if value is not None and (not isinstance(value, str) or not value):
                raise FlowDefinitionError(f"{where}.{name} must be a non-empty string.")
        for name in ("node_url", "registry"):
            value = entry.get(name)
            if value is not None and not value.startswith(("http://", "https://")):
                raise FlowDefinitionError(f"{where}.{name} must be an http(s) URL.")
        for name in ("singleton", "parallel_dispatch"):
            if not isinstance(entry.get(name, False), bool):
                raise FlowDefinitionError(f"{where}.{name} must be true or false.")
        return cls(
            key=key,
            flow_endpoint=entry.get("flow_endpoint"),
            user_id=entry.get("user_id") or "local",
            flow_class_name=entry.get("flow_class_name"),
            singleton=bool(entry.get("singleton", False)),
            parallel_dispatch=bool(entry.get("parallel_dispatch", False)),
            dispatch_point=entry.get("dispatch_point"),
            flow_id=entry.get("flow_id"),
            node_url=entry.get("node_url"),
            registry=entry.get("registry"),
            overrides={k: v for k, v in entry.items() if k not in ROUTING_KEYS},
        )


def subflow_specs(config: Mapping[str, Any]) -> list[SubflowSpec]:
    """The parsed ``subflows_config`` of a composite's config, in declaration order."""
    name = str(config.get("name", "composite flow"))
    raw = config.get("subflows_config")
    if not isinstance(raw, Mapping) or not raw:
        raise FlowDefinitionError(
            f"{name}: a CompositeFlow needs a non-empty subflows_config mapping."
        )
    return [SubflowSpec.parse(str(key), entry, name) for key, entry in raw.items()]


class CompositeFlow(Flow):
    """A flow whose ``run`` sends messages to subflows (``self.subflows[key]``).

    ``subflows_config`` maps each key to where the subflow is served (``flow_endpoint``,
    ``user_id``: ``"local"`` or another user's id) and, optionally, ``flow_class_name``,
    ``singleton`` and config overrides. The runtime mounts every subflow before the composite,
    so by the time ``run`` is called each ``self.subflows[key]`` is a :class:`FlowProxy`:

    - ``get_reply_future(msg).get_data()`` waits for the reply inside ``run`` (blocking style);
    - ``get_reply(msg)`` returns at once, and the reply arrives later as a new input message
      to this flow (non-blocking style; keep where you are in ``flow_state``).
    """

    REQUIRED_CONFIG_KEYS: ClassVar[tuple[str, ...]] = (
        *Flow.REQUIRED_CONFIG_KEYS,
        "subflows_config",
    )
    keeps_origin = True

    def __init__(
        self, flow_config: Mapping[str, Any], flow_state: Mapping[str, Any] | None = None
    ) -> None:
        super().__init__(flow_config, flow_state)
        self.subflow_specs = subflow_specs(self.flow_config)
        self.subflows: dict[str, FlowProxy] = {}

    def attach(self, transport: Transport) -> None:
        """Connect to the runtime and build a proxy per mounted subflow."""
        super().attach(transport)
        subflows = {}
        for spec in self.subflow_specs:
            if spec.flow_id is None:
                raise FlowDefinitionError(
                    f"{self.name}: subflow {spec.key!r} has no flow_id; subflows are mounted by "
                    f"the runtime before the composite (get_flow_instance / LocalRuntime)."
                )
            # A subflow on another node is reached through a local link instance.
            remote = spec.node_url is not None or spec.registry is not None
            user = transport.user_id if spec.user_id == "local" or remote else spec.user_id
            subflows[spec.key] = FlowProxy(
                transport,
                InstanceAddress(user, spec.flow_id),
                flow_endpoint=spec.flow_endpoint or spec.key,
                name=spec.key,
                owner=self,
            )
        self.subflows = subflows
