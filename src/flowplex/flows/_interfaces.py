"""Input and output interfaces: which keys a flow takes and gives, and under what names.

A flow config may declare ``input_interface`` (applied to each input message's data before
``run``) and ``output_interface`` (applied to the data of each reply it packages). Either is:

- a list of keys: those keys are required and selected; any other key is dropped (a single key
  may be written bare, ``input_interface: number``);
- a mapping with any of ``keys_to_rename`` ({old: new}), ``keys_to_copy`` ({src: dst}),
  ``keys_to_set`` ({key: value}), ``keys_to_select`` ([keys]) and ``keys_to_delete`` ([keys]),
  applied in that order (the order of the original ``KeyInterface``, which the original never
  applied).

A missing required key raises :class:`~flowplex.InterfaceError` naming it. A parsed interface is
also a function of message data (or of a whole :class:`~flowplex.FlowMessage`), for flows that
reshape data by hand between subflows.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, overload

from ..errors import FlowDefinitionError, InterfaceError
from ..messages import FlowMessage

__all__ = ["KeyInterface"]

_SPEC_KEYS = {"keys_to_rename", "keys_to_copy", "keys_to_set", "keys_to_select", "keys_to_delete"}


def _str_list(value: Any, what: str) -> tuple[str, ...]:
    if not isinstance(value, list | tuple) or not all(isinstance(k, str) for k in value):
        raise FlowDefinitionError(f"{what} must be a list of key names, got {value!r}.")
    return tuple(value)


def _str_map(value: Any, what: str) -> dict[str, str]:
    if not isinstance(value, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise FlowDefinitionError(f"{what} must map key names to key names, got {value!r}.")
    return dict(value)


@dataclass(frozen=True)
class KeyInterface:
    """A parsed interface; :meth:`apply` turns message data into what the other side expects."""

    rename: dict[str, str] = field(default_factory=dict)
    copy: dict[str, str] = field(default_factory=dict)
    set: dict[str, Any] = field(default_factory=dict)
    select: tuple[str, ...] | None = None
    delete: tuple[str, ...] = ()

    @classmethod
    def parse(cls, spec: Any, what: str) -> KeyInterface | None:
        """Parse an interface declaration (see the module doc); None or empty means no interface."""
        if spec is None or (isinstance(spec, list | tuple | Mapping) and not spec):
            return None
        if isinstance(spec, str):
            if not spec.strip():
                raise FlowDefinitionError(f"{what} must name a key, got an empty string.")
            return cls(select=(spec,))
        if isinstance(spec, list | tuple):
            return cls(select=_str_list(spec, what))
        if isinstance(spec, Mapping):
            unknown = set(spec) - _SPEC_KEYS - {"_target_"}
            if unknown:
                raise FlowDefinitionError(
                    f"{what} has unknown keys {sorted(unknown)}; expected a list of keys or a "
                    f"mapping of {sorted(_SPEC_KEYS)}."
                )
            keys_to_set = spec.get("keys_to_set") or {}
            if not isinstance(keys_to_set, Mapping):
                raise FlowDefinitionError(f"{what}.keys_to_set must be a mapping.")
            select = spec.get("keys_to_select")
            return cls(
                rename=_str_map(spec.get("keys_to_rename") or {}, f"{what}.keys_to_rename"),
                copy=_str_map(spec.get("keys_to_copy") or {}, f"{what}.keys_to_copy"),
                set=dict(keys_to_set),
                select=None if select is None else _str_list(select, f"{what}.keys_to_select"),
                delete=_str_list(spec.get("keys_to_delete") or [], f"{what}.keys_to_delete"),
            )
        raise FlowDefinitionError(
            f"{what} must be a key, a list of keys or a mapping, got {type(spec).__name__}."
        )

    @overload
    def __call__(self, data: FlowMessage) -> FlowMessage: ...

    @overload
    def __call__(self, data: Mapping[str, Any]) -> dict[str, Any]: ...

    def __call__(self, data: FlowMessage | Mapping[str, Any]) -> FlowMessage | dict[str, Any]:
        """Apply the interface to message data, or to a message: a new message with the new data
        (the given one is left as it was)."""
        if isinstance(data, FlowMessage):
            return data.replace(data=self.apply(data.data, "KeyInterface"))
        if not isinstance(data, Mapping):
            raise InterfaceError(
                f"a KeyInterface applies to a dict or a FlowMessage, got {type(data).__name__}."
            )
        return self.apply(data, "KeyInterface")

    def apply(self, data: Mapping[str, Any], what: str) -> dict[str, Any]:
        """Return a new dict: ``data`` renamed, copied, set, selected and pruned, in that order."""
        out = dict(data)
        for old, new in self.rename.items():
            if old not in out:
                raise InterfaceError(
                    f"{what}: key {old!r} to rename is missing from {sorted(out)}."
                )
            out[new] = out.pop(old)
        for src, dst in self.copy.items():
            if src not in out:
                raise InterfaceError(f"{what}: key {src!r} to copy is missing from {sorted(out)}.")
            out[dst] = out[src]
        out.update(self.set)
        if self.select is not None:
            missing = [k for k in self.select if k not in out]
            if missing:
                raise InterfaceError(
                    f"{what}: required key(s) {missing} missing; got {sorted(out)}."
                )
            out = {k: out[k] for k in self.select}
        for key in self.delete:
            out.pop(key, None)
        return out
