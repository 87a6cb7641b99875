"""Dot paths into a task's context: reading, writing, ``$ctx.`` interpolation and wirings.

A dot path such as ``ctx.flow.tasks.task_1.data.result`` starts at ``ctx`` (the task context:
``flow``, ``task``, ``engine`` and the caller's extra context) and steps through mapping keys,
list indices and public attributes. Pure logic: no database, web or CLI imports.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping, MutableMapping, MutableSequence, Sequence
from typing import Any

from ._errors import EngineError

__all__ = [
    "ContextPathError",
    "get_path",
    "interpolate",
    "map_items",
    "run_wiring",
    "set_path",
]

_CTX_PREFIX = "$ctx."


class ContextPathError(EngineError):
    """A dot path does not resolve, or a wiring or transform is malformed."""


def get_path(root: Mapping[str, Any], path: str) -> Any:
    """The value at ``path`` (``"ctx.a.b"``) under ``root`` (``{"ctx": ...}``)."""
    if not isinstance(path, str) or not path:
        raise ContextPathError(f"a dot path must be a non-empty string, got {path!r}.")
    cursor: Any = root
    parts = path.split(".")
    for i, part in enumerate(parts):
        found, cursor = _step(cursor, part)
        if not found:
            raise ContextPathError(
                f"{path!r} does not resolve: nothing at {'.'.join(parts[: i + 1])!r}."
            )
    return cursor


def set_path(root: Mapping[str, Any], path: str, value: Any) -> None:
    """Set ``path`` under ``root`` to ``value``, creating missing dicts along the way.

    Only mappings and lists are written to: a path cannot replace an object's attribute.
    """
    if not isinstance(path, str) or "." not in path:
        raise ContextPathError(f"a destination must be a dot path like 'ctx.a.b', got {path!r}.")
    parts = path.split(".")
    cursor: Any = root
    for i, part in enumerate(parts[:-1]):
        found, nxt = _step(cursor, part)
        if not found or nxt is None:
            if not isinstance(cursor, MutableMapping):
                raise ContextPathError(
                    f"cannot create {'.'.join(parts[: i + 1])!r} in {path!r}: its parent is "
                    f"not a mapping."
                )
            nxt = cursor[part] = {}
        cursor = nxt
    last = parts[-1]
    if isinstance(cursor, MutableMapping):
        cursor[last] = value
    elif isinstance(cursor, MutableSequence) and last.lstrip("-").isdigit():
        try:
            cursor[int(last)] = value
        except IndexError:
            raise ContextPathError(f"{path!r}: list index {last} is out of range.") from None
    else:
        raise ContextPathError(
            f"cannot set {path!r}: {'.'.join(parts[:-1])!r} is a {type(cursor).__name__}, "
            f"not a mapping or list."
        )


def _step(cursor: Any, part: str) -> tuple[bool, Any]:
    if isinstance(cursor, Mapping):
        if part in cursor:
            return True, cursor[part]
        return False, None
    if isinstance(cursor, Sequence) and not isinstance(cursor, str | bytes):
        try:
            return True, cursor[int(part)]
        except (ValueError, IndexError):
            return False, None
    # Attributes of context objects (a TaskFlow's tasks and data); never private ones.
    if part.startswith("_") or not hasattr(cursor, part):
        return False, None
    return True, getattr(cursor, part)


def interpolate(value: Any, root: Mapping[str, Any]) -> Any:
    """``value`` with every string ``"$ctx.path"`` replaced by the value at that path.

    A string starting with ``\\$`` loses the backslash and is otherwise left alone (the escape
    for a literal ``$ctx.``); other strings, and everything that is not a string, list or dict,
    pass through unchanged. Containers are rebuilt only where something changed.
    """
    if isinstance(value, str):
        if value.startswith(_CTX_PREFIX):
            return get_path(root, value[1:])
        if value.startswith("\\$"):
            return value[1:]
        return value
    if isinstance(value, dict):
        out = {k: interpolate(v, root) for k, v in value.items()}
        return value if all(out[k] is value[k] for k in value) else out
    if isinstance(value, list):
        items = [interpolate(v, root) for v in value]
        return value if all(a is b for a, b in zip(items, value, strict=True)) else items
    return value


def run_wiring(wiring: Any, ctx: Mapping[str, Any]) -> None:
    """Perform one wiring in the context ``ctx``.

    A wiring is ``"ctx.src => ctx.dest"`` or a dict with ``dest`` and either ``value`` or
    ``src`` (``source`` also works), plus an optional ``transform``: ``"json.dumps"``,
    ``"json.loads"``, or ``{"type": "mapping", "params": {"skeleton": ..., "wirings": [...]}}``
    (see :func:`map_items`).
    """
    root = {"ctx": ctx}
    if isinstance(wiring, str):
        src, sep, dest = wiring.partition("=>")
        if not sep or not src.strip() or not dest.strip():
            raise ContextPathError(f"a string wiring reads 'ctx.src => ctx.dest', got {wiring!r}.")
        spec: Mapping[str, Any] = {"src": src.strip(), "dest": dest.strip()}
    elif isinstance(wiring, Mapping):
        spec = wiring
    else:
        raise ContextPathError(f"a wiring is a string or a mapping, got {wiring!r}.")
    if "dest" not in spec:
        raise ContextPathError(f"wiring {dict(spec)!r} has no 'dest'.")
    if "value" in spec:
        value = spec["value"]
    elif "src" in spec or "source" in spec:
        value = get_path(root, spec.get("src", spec.get("source")))
    else:
        raise ContextPathError(f"wiring {dict(spec)!r} needs a 'value' or a 'src'.")
    if spec.get("transform") is not None:
        value = _transform(value, spec["transform"], ctx)
    set_path(root, spec["dest"], value)


def _transform(value: Any, transform: Any, ctx: Mapping[str, Any]) -> Any:
    kind = transform if isinstance(transform, str) else None
    if isinstance(transform, Mapping):
        kind = transform.get("type")
    if kind == "json.dumps":
        return json.dumps(value)
    if kind == "json.loads":
        if not isinstance(value, str | bytes):
            raise ContextPathError(f"json.loads needs a string, got {type(value).__name__}.")
        return json.loads(value)
    if kind == "mapping" and isinstance(transform, Mapping):
        return map_items(value, _mapping(transform.get("params")), ctx)
    raise ContextPathError(
        f"unknown transform {transform!r}: expected 'json.dumps', 'json.loads' or "
        f"{{'type': 'mapping', 'params': {{...}}}}."
    )


def map_items(items: Any, mapping_params: Mapping[str, Any], ctx: Mapping[str, Any]) -> list[Any]:
    """One copy of ``mapping_params["skeleton"]`` per item, wired by ``mapping_params["wirings"]``.

    ``items`` is a list (keys are indices) or a mapping. Each item's wirings see the context
    plus ``item`` (``{"key", "value", "idx"}``), ``items`` and ``skeleton`` (the copy being
    built), so ``"ctx.item.value => ctx.skeleton.task_params.msg"`` fills in a task spec.
    """
    if isinstance(items, Mapping):
        pairs = list(items.items())
    elif isinstance(items, Sequence) and not isinstance(items, str | bytes):
        pairs = list(enumerate(items))
    else:
        raise ContextPathError(f"items to map must be a list or a mapping, got {items!r}.")
    wirings = mapping_params.get("wirings", [])
    if not isinstance(wirings, list):
        raise ContextPathError("mapping 'wirings' must be a list.")
    mapped = []
    for idx, (key, value) in enumerate(pairs):
        skeleton = copy.deepcopy(mapping_params.get("skeleton", {}))
        item_ctx = {
            **ctx,
            "item": {"key": key, "value": value, "idx": idx},
            "items": items,
            "skeleton": skeleton,
        }
        for wiring in wirings:
            run_wiring(wiring, item_ctx)
        mapped.append(item_ctx["skeleton"])
    return mapped


def _mapping(value: Any) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ContextPathError(f"mapping params must be a mapping, got {value!r}.")
    return value
