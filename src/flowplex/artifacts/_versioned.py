"""Versioned fields and the versions of classes built from them (pure logic).

A class attribute wrapped in :class:`VersionedField` (or a :class:`VersionedFieldDict` of them)
contributes to the class's version: changing the field's value changes only the sub-hash its
:class:`VersionType` names; adding or removing a field changes all three. Plain attributes and
assignments at run time change nothing. Fields are summed in attribute-name order, starting
from the empty ``Version()``, and inherited fields count (as in Chariots' ``VersionableMeta``).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, ClassVar, overload

from ._version import Version, VersionType

__all__ = ["Versioned", "VersionedField", "VersionedFieldDict", "version_of"]


class VersionedField:
    """A class attribute whose value is part of the class's version.

    Reading the attribute gives the plain value; ``version`` is the field's own contribution.
    """

    def __init__(self, value: Any, affected_version: VersionType) -> None:
        if not isinstance(affected_version, VersionType):
            raise TypeError(f"affected_version must be a VersionType, got {affected_version!r}")
        self.value = value
        self.affected_version = affected_version

    @overload
    def __get__(self, instance: None, owner: type) -> Any: ...
    @overload
    def __get__(self, instance: object, owner: type | None = None) -> Any: ...
    def __get__(self, instance: object | None, owner: type | None = None) -> Any:
        return self.value

    @property
    def version(self) -> Version:
        """The version of this field alone: ``Version.atomic(affected_version, value)``."""
        return Version.atomic(self.affected_version, self.value)

    def __repr__(self) -> str:
        return f"VersionedField({self.value!r}, {self.affected_version})"


class VersionedFieldDict(Mapping[str, Any]):
    """A read-only mapping whose entries are each versioned (keys must be strings).

    A plain value affects the ``default_version`` part; a :class:`VersionedField` value its own.
    Reading an entry gives the plain value, so the dict can be passed on as keyword arguments.
    """

    def __init__(
        self, default_version: VersionType, fields: Mapping[str, Any] | None = None
    ) -> None:
        if not isinstance(default_version, VersionType):
            raise TypeError(f"default_version must be a VersionType, got {default_version!r}")
        self.default_version = default_version
        self._fields: dict[str, VersionedField] = {}
        for key, value in (fields or {}).items():
            if not isinstance(key, str):
                raise TypeError(f"VersionedFieldDict keys must be strings, got {key!r}")
            field = value if isinstance(value, VersionedField) else None
            self._fields[key] = field or VersionedField(value, default_version)

    def __getitem__(self, key: str) -> Any:
        return self._fields[key].value

    def __iter__(self) -> Iterator[str]:
        return iter(self._fields)

    def __len__(self) -> int:
        return len(self._fields)

    @property
    def version(self) -> Version:
        """``Version()`` plus each entry's version, in key order."""
        version = Version()
        for key in sorted(self._fields):
            version = version + self._fields[key].version
        return version

    def __repr__(self) -> str:
        return f"VersionedFieldDict({self.default_version}, {dict(self)!r})"


def version_of(cls: type) -> Version:
    """The version of ``cls`` from its versioned fields, inherited ones included."""
    if not isinstance(cls, type):
        raise TypeError(f"version_of needs a class, got {cls!r}")
    version = Version()
    for name in sorted(dir(cls)):
        for klass in cls.__mro__:
            if name in vars(klass):
                raw = vars(klass)[name]
                if isinstance(raw, (VersionedField, VersionedFieldDict)):
                    version = version + raw.version
                break
    return version


class Versioned:
    """A base class whose subclasses get ``__version__`` from their versioned fields when they
    are defined (see :func:`version_of`)."""

    __version__: ClassVar[Version] = Version()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.__version__ = version_of(cls)
