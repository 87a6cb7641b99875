"""``aiflows.interfaces.key_interface``: aiflows' ``KeyInterface``, built on flowplex's.

``KeyInterface(keys_to_rename=..., keys_to_copy=..., keys_to_set=...,
additional_transformations=..., keys_to_select=..., keys_to_delete=...)`` applies, in that order,
renames, copies, set values, the additional transformations, the selection and the deletions to
a dict or to a message's data. Unlike aiflows' it returns a new message instead of changing the
one it is given, and a key to rename that is missing raises instead of being skipped.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, overload

from ....config import resolve_class_path
from ....errors import FlowDefinitionError, InterfaceError
from ....flows import KeyInterface as _CoreInterface
from ....messages import FlowMessage

__all__ = ["KeyInterface"]

Transformation = Callable[..., dict[str, Any]]


class KeyInterface:
    """Reshapes message data: rename, copy, set, additional transformations, select, delete.

    An additional transformation is a callable ``fn(data_dict, **kwargs) -> dict`` or a mapping
    ``{"_target_": "pkg.module.Class", ...}`` naming a class to build with the other keys.
    """

    def __init__(
        self,
        keys_to_rename: Mapping[str, str] | None = None,
        keys_to_copy: Mapping[str, str] | None = None,
        keys_to_set: Mapping[str, Any] | None = None,
        additional_transformations: Sequence[Transformation | Mapping[str, Any]] | None = None,
        keys_to_select: Sequence[str] | None = None,
        keys_to_delete: Sequence[str] | None = None,
    ) -> None:
        what = "KeyInterface"
        self._before = _CoreInterface.parse(
            {
                "keys_to_rename": dict(keys_to_rename or {}),
                "keys_to_copy": dict(keys_to_copy or {}),
                "keys_to_set": dict(keys_to_set or {}),
            },
            what,
        )
        after: dict[str, Any] = {"keys_to_delete": list(keys_to_delete or [])}
        if keys_to_select:
            after["keys_to_select"] = list(keys_to_select)
        self._after = _CoreInterface.parse(after, what)
        self.transformations = [_transformation(t) for t in additional_transformations or []]

    @overload
    def __call__(self, data: FlowMessage, **kwargs: Any) -> FlowMessage: ...

    @overload
    def __call__(self, data: Mapping[str, Any], **kwargs: Any) -> dict[str, Any]: ...

    def __call__(
        self, data: FlowMessage | Mapping[str, Any], **kwargs: Any
    ) -> FlowMessage | dict[str, Any]:
        """The reshaped data, or a new message carrying it; ``kwargs`` go to the additional
        transformations."""
        if isinstance(data, FlowMessage):
            return data.replace(data=self(data.data, **kwargs))
        if not isinstance(data, Mapping):
            raise InterfaceError(
                f"a KeyInterface applies to a dict or a FlowMessage, got {type(data).__name__}."
            )
        out = dict(data) if self._before is None else self._before(data)
        for transformation in self.transformations:
            out = transformation(data_dict=out, **kwargs)
            if not isinstance(out, dict):
                raise InterfaceError(
                    f"the KeyInterface transformation {transformation!r} returned "
                    f"{type(out).__name__}, not a dict."
                )
        return out if self._after is None else self._after(out)


def _transformation(spec: Transformation | Mapping[str, Any]) -> Transformation:
    if isinstance(spec, Mapping):
        params = dict(spec)
        target = params.pop("_target_", None)
        if not isinstance(target, str):
            raise FlowDefinitionError(
                f"a KeyInterface transformation given as a mapping needs a '_target_' class "
                f"path, got {spec!r}."
            )
        built = resolve_class_path(target)(**params)
        if not callable(built):
            raise FlowDefinitionError(f"the KeyInterface transformation {target} is not callable.")
        return built  # type: ignore[no-any-return]
    if not callable(spec):
        raise FlowDefinitionError(
            f"a KeyInterface transformation must be callable or a mapping, got {spec!r}."
        )
    return spec
