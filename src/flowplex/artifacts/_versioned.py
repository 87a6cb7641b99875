"""Versioned fields and the versions of classes built from them (pure logic).

A class attribute wrapped in :class:`VersionedField` contributes to the class's version, and so
does each entry of a :class:`VersionedFieldDict` attribute: changing a value changes only the
sub-hash its :class:`VersionType` names; adding or removing a field or an entry changes all
three. Plain attributes and assignments at run time change nothing.

The class version is the empty ``Version()`` plus one atomic version per field, in name order,
where a dict's entries are named by their own keys (not by the attribute holding the dict).
This is the formula of the original ``VersionableMeta``, so the hashes its documentation lists hold
here too. Two deliberate differences, both where the original silently lost a field: a dict key
that repeats another field's name is refused (the original kept only one of the two), and fields
inherited from any ancestor count (the original read only the direct bases' own attributes).
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

    A plain value affects the ``default_version`` part (MAJOR unless given); a
    :class:`VersionedField` value its own. Entries come from ``fields`` and keyword arguments.
    Reading an entry gives the plain value, so the dict can be passed on as keyword arguments.
    As a class attribute, each entry counts in the class's version under its own key.
    """

    def __init__(
        self,
        default_version: VersionType = VersionType.MAJOR,
        fields: Mapping[str, Any] | None = None,
        **entries: Any,
    ) -> None:
        if not isinstance(default_version, VersionType):
            raise TypeError(f"default_version must be a VersionType, got {default_version!r}")
        if fields is not None and not isinstance(fields, Mapping):
            raise TypeError(f"VersionedFieldDict fields must be a mapping, got {fields!r}")
        self.default_version = default_version
        self._fields: dict[str, VersionedField] = {}
        for key, value in {**(fields or {}), **entries}.items():
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
    def version_dict(self) -> dict[str, Version]:
        """Each key with the atomic version of its value (what the entry adds to a class)."""
        return {key: field.version for key, field in self._fields.items()}

    @property
    def version(self) -> Version:
        """``Version()`` plus each entry's version, in key order: the version of a class whose
        only versioned attribute is this dict."""
        return _sum(self.version_dict)

    def __repr__(self) -> str:
        return f"VersionedFieldDict({self.default_version}, {dict(self)!r})"


def _sum(versions: Mapping[str, Version]) -> Version:
    total = Version()
    for name in sorted(versions):
        total = total + versions[name]
    return total


def version_of(cls: type) -> Version:
    """The version of ``cls`` from its versioned fields, inherited ones included.

    Raises :class:`TypeError` if a :class:`VersionedFieldDict` key repeats the name of another
    field (or of another dict's key): both would count under one name, and one would be lost.
    """
    if not isinstance(cls, type):
        raise TypeError(f"version_of needs a class, got {cls!r}")
    versions: dict[str, Version] = {}
    origins: dict[str, str] = {}

    def add(name: str, version: Version, origin: str) -> None:
        if name in versions:
            raise TypeError(
                f"{cls.__qualname__}: the versioned field {name!r} is defined twice "
                f"({origins[name]} and {origin}); rename one of them"
            )
        versions[name] = version
        origins[name] = origin

    for name in dir(cls):
        # The definition an attribute lookup finds: a subclass's plain value hides an
        # ancestor's field.
        owner = next((k for k in cls.__mro__ if name in vars(k)), None)
        raw = vars(owner).get(name) if owner is not None else None
        if isinstance(raw, VersionedField):
            add(name, raw.version, f"attribute {name!r}")
        elif isinstance(raw, VersionedFieldDict):
            for key, version in raw.version_dict.items():
                add(key, version, f"key {key!r} of {name!r}")
    return _sum(versions)


class Versioned:
    """A base class whose subclasses get ``__version__`` from their versioned fields when they
    are defined (see :func:`version_of`)."""

    __version__: ClassVar[Version] = Version()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.__version__ = version_of(cls)
