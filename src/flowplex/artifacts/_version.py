"""Op versions: three sha1 sub-hashes (major, minor, patch) and a creation time.

Pure logic: no database, web or CLI import. The hashing follows the original op store exactly, so
the hashes its documentation lists still hold (``tests/test_artifacts.py`` checks them):

- the empty version has ``sha1(b"")`` for each part (``da39a3ee...``);
- ``a + b`` has, for each part, ``sha1(a.part + b.part)`` over the hex digests;
- :meth:`Version.atomic` (one value affecting one part) hashes the hex ``sha1`` of the value
  once more; the two other parts stay empty.
"""

from __future__ import annotations

import enum
import hashlib
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import NamedTuple

from ._errors import InvalidRequestError, shown

__all__ = ["EMPTY_HASH", "Version", "VersionInfo", "VersionNumber", "VersionType"]

#: ``sha1(b"")``: each part of the empty version.
EMPTY_HASH = hashlib.sha1(b"").hexdigest()

_HASH = re.compile(r"[0-9a-f]{40}")
_VERSION = re.compile(r"([0-9a-f]{40})\.([0-9a-f]{40})\.([0-9a-f]{40})_(.+)", re.DOTALL)


class VersionType(enum.Enum):
    """Which part of a version a change affects.

    MAJOR breaks downstream ops (they must be revalidated), MINOR and PATCH do not.
    """

    MAJOR = "major"
    MINOR = "minor"
    PATCH = "patch"


def _sha1(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8")).hexdigest()


class Version:
    """An immutable op version: ``major``, ``minor`` and ``patch`` sha1 hex digests plus a
    timezone-aware UTC ``creation_time``.

    Versions are equal when their three hashes are; ``a > b`` means they differ and ``a`` was
    created later. ``str(v)`` is ``<major>.<minor>.<patch>_<YYYY-MM-DD HH:MM:SS.ffffff>`` (UTC,
    without the fraction when the microseconds are 0) and :meth:`parse` reverses it.
    """

    __slots__ = ("_creation_time", "_major", "_minor", "_patch")

    def __init__(
        self,
        major: str = EMPTY_HASH,
        minor: str = EMPTY_HASH,
        patch: str = EMPTY_HASH,
        creation_time: datetime | None = None,
    ) -> None:
        for part, value in (("major", major), ("minor", minor), ("patch", patch)):
            if not isinstance(value, str) or not _HASH.fullmatch(value):
                raise InvalidRequestError(
                    f"invalid {part} hash {shown(value)}: expected 40 lowercase hex digits (sha1)"
                )
        if creation_time is None:
            creation_time = datetime.now(UTC)
        elif not isinstance(creation_time, datetime):
            raise InvalidRequestError(
                f"invalid creation_time {creation_time!r}: expected a datetime"
            )
        elif creation_time.tzinfo is None:
            # Naive datetimes are read as UTC, like version strings always were.
            creation_time = creation_time.replace(tzinfo=UTC)
        else:
            try:
                creation_time = creation_time.astimezone(UTC)
            except OverflowError:
                raise InvalidRequestError(
                    f"invalid creation_time {creation_time!r}: out of range in UTC"
                ) from None
        self._major = major
        self._minor = minor
        self._patch = patch
        self._creation_time = creation_time

    @classmethod
    def atomic(cls, version_type: VersionType, value: object) -> Version:
        """The version of one value (hashed as ``str(value)``) affecting one part."""
        if not isinstance(version_type, VersionType):
            raise TypeError(f"version_type must be a VersionType, got {version_type!r}")
        parts = dict.fromkeys(VersionType, EMPTY_HASH)
        parts[version_type] = _sha1(_sha1(str(value)))
        return cls(parts[VersionType.MAJOR], parts[VersionType.MINOR], parts[VersionType.PATCH])

    @classmethod
    def parse(cls, text: str) -> Version:
        """The version ``str(version)`` printed; raises :class:`InvalidRequestError` (a
        ``ValueError``) naming what is wrong with a malformed string."""
        if not isinstance(text, str):
            raise InvalidRequestError(f"a version must be a string, got {type(text).__name__}")
        match = _VERSION.fullmatch(text)
        if match is None:
            raise InvalidRequestError(
                f"invalid version string {shown(text)}: expected "
                f"<major>.<minor>.<patch>_<YYYY-MM-DD HH:MM:SS.ffffff> with 40-hex-digit hashes"
            )
        major, minor, patch, when = match.groups()
        try:
            created = datetime.fromisoformat(when)
        except ValueError:
            raise InvalidRequestError(
                f"invalid creation time {shown(when)} in version string: expected "
                f"YYYY-MM-DD HH:MM:SS.ffffff"
            ) from None
        return cls(major, minor, patch, created)

    @property
    def major(self) -> str:
        """The major sub-hash (hex sha1)."""
        return self._major

    @property
    def minor(self) -> str:
        """The minor sub-hash (hex sha1)."""
        return self._minor

    @property
    def patch(self) -> str:
        """The patch sub-hash (hex sha1)."""
        return self._patch

    @property
    def creation_time(self) -> datetime:
        """When the version was made (timezone-aware UTC)."""
        return self._creation_time

    def part(self, version_type: VersionType) -> str:
        """The sub-hash ``version_type`` names."""
        return str(getattr(self, version_type.value))

    def __add__(self, other: object) -> Version:
        if not isinstance(other, Version):
            return NotImplemented
        return Version(
            _sha1(self._major + other._major),
            _sha1(self._minor + other._minor),
            _sha1(self._patch + other._patch),
        )

    def _hashes(self) -> tuple[str, str, str]:
        return (self._major, self._minor, self._patch)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Version):
            return NotImplemented
        return self._hashes() == other._hashes()

    def __hash__(self) -> int:
        return hash(self._hashes())

    def __gt__(self, other: object) -> bool:
        if not isinstance(other, Version):
            return NotImplemented
        return self != other and self._creation_time > other._creation_time

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, Version):
            return NotImplemented
        return self != other and self._creation_time < other._creation_time

    def __ge__(self, other: object) -> bool:
        if not isinstance(other, Version):
            return NotImplemented
        return self == other or self > other

    def __le__(self, other: object) -> bool:
        if not isinstance(other, Version):
            return NotImplemented
        return self == other or self < other

    def __str__(self) -> str:
        # str() of the naive UTC datetime, exactly as the original op store names its files (no
        # fraction when the microseconds are 0): op bytes live at /models/<op>/<str(version)>, so a
        # folder the original op store wrote is read at the same paths. parse() reads both forms.
        when = self._creation_time.replace(tzinfo=None)
        return f"{self._major}.{self._minor}.{self._patch}_{when}"

    def __repr__(self) -> str:
        return (
            f"Version(major={self._major[:7]}…, minor={self._minor[:7]}…, "
            f"patch={self._patch[:7]}…, created={self._creation_time.isoformat()})"
        )


class VersionNumber(NamedTuple):
    """The human number the store gives a version of an op, e.g. ``1.0.2``."""

    major: int
    minor: int
    patch: int

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}.{self.patch}"


@dataclass(frozen=True)
class VersionInfo:
    """A registered version of an op and its number."""

    version: Version
    number: VersionNumber
