"""A minimal pipeline of versioned ops, saved to and loaded from an op store.

Saving registers each op's version with the op after it as a validated link, saves the bytes
of loadable ops, and registers the pipeline. Loading takes, for each loadable op the store
knows, the latest saved version (by creation time) — unless the op's in-memory major is not
among the stored ones, in which case the code is newer than anything stored and the in-memory
op is kept (as in the original op store). Before anything changes, each pair of neighbours is
checked (unless the downstream op allows version changes): if links are recorded for the pair
and the upstream's major is not among them, the load raises :class:`VersionError` and the pipeline
is left exactly as it was (the original left a mix of old and new ops).

A pipeline can be a step of another one: it is registered as an op whose version is the sum
of its steps' versions, saves its own steps when saved, and its ops join the outer load, so
that a load is all or nothing across the whole tree. Pipelines are linear: each step feeds
the next (no fan-out).
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import TYPE_CHECKING, Any, ClassVar, TypeAlias

from ._errors import VersionError
from ._names import check_name
from ._version import Version, VersionType
from ._versioned import Versioned

if TYPE_CHECKING:
    from ._client import OpStoreAPI

__all__ = ["LoadableOp", "Op", "Pipeline", "Step"]


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


class Op(Versioned, ABC):
    """A step of a :class:`Pipeline`: ``execute(value)`` returns the next step's input.

    ``name`` defaults to the snake-cased class name (it identifies the op in the store, so
    renaming the class loses its history unless ``name`` is pinned). ``version`` starts as
    the class's version (from its :class:`VersionedField` attributes) and changes with
    :meth:`mark_changed`, e.g. after training. ``allow_version_change`` skips the check of its
    upstream's version at load time (an op that is about to be retrained).
    """

    name: ClassVar[str] = "op"
    allow_version_change: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "name" not in vars(cls):
            cls.name = _snake(cls.__name__)
        check_name("op name", cls.name)

    @property
    def version(self) -> Version:
        """The version this op is at (its class version until changed or loaded)."""
        found: Version = self.__dict__.get("_op_version", type(self).__version__)
        return found

    @version.setter
    def version(self, value: Version) -> None:
        if not isinstance(value, Version):
            raise TypeError(f"an op version must be a Version, got {value!r}")
        self.__dict__["_op_version"] = value

    @abstractmethod
    def execute(self, value: Any) -> Any:
        """Compute this step's output from its input."""

    def mark_changed(self, version_type: VersionType, reason: object) -> Version:
        """Give this op a new version: its class version plus ``reason`` (e.g. the training
        time) affecting the ``version_type`` part. Returns the new version."""
        self.version = type(self).__version__ + Version.atomic(version_type, reason)
        return self.version


class LoadableOp(Op):
    """An op with state that the store keeps: ``serialize()`` and ``load(bytes)``."""

    @abstractmethod
    def serialize(self) -> bytes:
        """The op's state as bytes."""

    @abstractmethod
    def load(self, data: bytes) -> None:
        """Replace the op's state with ``data`` (from :meth:`serialize`)."""


#: A step of a pipeline: an op, or a whole pipeline used as one.
Step: TypeAlias = "Op | Pipeline"


@dataclass(frozen=True)
class _Planned:
    """What a load will do to one step: the version it will be at, and the bytes to load
    into the loadable ops inside it (the step itself, or a nested pipeline's ops)."""

    step: Step
    version: Version
    loads: tuple[tuple[LoadableOp, Version, bytes], ...]


class Pipeline:
    """Steps (ops, or pipelines used as ops) run in sequence under a ``name``; see the module
    docstring for save and load. A pipeline's version is the sum of its steps' versions."""

    #: A pipeline used as a step checks its upstream like any op.
    allow_version_change: ClassVar[bool] = False

    def __init__(self, name: str, ops: Sequence[Step]) -> None:
        check_name("pipeline name", name)
        steps = tuple(ops)
        if not steps:
            raise ValueError(f"pipeline {name!r} needs at least one op")
        for op in steps:
            if not isinstance(op, (Op, Pipeline)):
                raise TypeError(f"pipeline {name!r}: {op!r} is neither an Op nor a Pipeline")
        names: list[str] = [op.name for op in steps]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"pipeline {name!r} uses op names more than once: {duplicates}")
        self.name: str = name
        self.ops: tuple[Step, ...] = steps

    def __repr__(self) -> str:
        return f"Pipeline({self.name!r}, {[op.name for op in self.ops]})"

    @property
    def version(self) -> Version:
        """``Version()`` plus each step's version, in order."""
        return _sum(op.version for op in self.ops)

    def run(self, value: Any) -> Any:
        """Feed ``value`` through every step in order and return the last step's output."""
        for op in self.ops:
            value = op.execute(value)
        return value

    def execute(self, value: Any) -> Any:
        """Run the pipeline (so that it can be a step of another one)."""
        return self.run(value)

    def versions(self) -> dict[str, Version]:
        """Each step's current version, by name."""
        return {op.name: op.version for op in self.ops}

    def save(self, store: OpStoreAPI) -> dict[str, Version]:
        """Register every step's version, validated with the step after it, save the loadable
        ops' bytes (nested pipelines save themselves the same way) and register the pipeline.
        Returns the saved versions by step name. The bytes of a version are written once:
        an op whose bytes changed must change its version (else :class:`ArtifactExistsError`).
        """
        downstream: list[Step | None] = [*self.ops[1:], None]
        for op, after in zip(self.ops, downstream, strict=True):
            store.register_valid_link(after.name if after else None, op.name, op.version)
            if isinstance(op, LoadableOp):
                store.save_op_bytes(op.name, op.version, op.serialize())
            elif isinstance(op, Pipeline):
                op.save(store)
        store.register_new_pipeline(self.name, self.ops[-1].name)
        return self.versions()

    def load(self, store: OpStoreAPI) -> dict[str, Version]:
        """Load the latest compatible saved version of each loadable op (nested pipelines
        included), all or nothing.

        Raises :class:`VersionError` (and changes nothing) when an upstream's major is not
        among the versions its downstream was validated with. Returns the versions now in
        use by step name.
        """
        _apply(self._plan(store).loads)
        return self.versions()

    def _plan(self, store: OpStoreAPI) -> _Planned:
        """What a load would do, checked, without changing anything."""
        parts = [_plan_step(op, store) for op in self.ops]
        for up, down in pairwise(parts):
            if down.step.allow_version_change:
                continue
            links = store.get_validated_links(down.step.name, up.step.name)
            if links is not None and up.version.major not in {v.major for v in links}:
                raise VersionError(
                    f"cannot load pipeline {self.name!r}: {up.step.name} version {up.version} "
                    f"has a major version {down.step.name} was never validated with; retrain "
                    f"and save {down.step.name} with it first"
                )
        loads = tuple(load for part in parts for load in part.loads)
        return _Planned(self, _sum(part.version for part in parts), loads)


def _sum(versions: Iterable[Version]) -> Version:
    total = Version()
    for version in versions:
        total = total + version
    return total


def _plan_step(step: Step, store: OpStoreAPI) -> _Planned:
    if isinstance(step, Pipeline):
        return step._plan(store)
    if not isinstance(step, LoadableOp):
        return _Planned(step, step.version, ())
    stored = store.get_all_versions_of_op(step.name)
    if not stored or step.version.major not in {v.major for v in stored}:
        # Unknown to the store, or the code is newer than anything stored: keep it.
        return _Planned(step, step.version, ())
    latest = max(stored, key=lambda v: v.creation_time)
    data = store.get_op_bytes_for_version(step.name, latest)
    return _Planned(step, latest, ((step, latest, data),))


def _apply(loads: Iterable[tuple[LoadableOp, Version, bytes]]) -> None:
    """Load the planned bytes; if one op fails to load, restore those already loaded."""
    done: list[tuple[LoadableOp, Version, bytes]] = []
    try:
        for op, version, data in loads:
            done.append((op, op.version, op.serialize()))
            op.load(data)
            op.version = version
    except BaseException:
        for op, version, previous in reversed(done):
            op.load(previous)
            op.version = version
        raise
