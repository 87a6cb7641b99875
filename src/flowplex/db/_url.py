"""``DatabaseURL``: what a database URL means, decided once for every part of flowplex.

Three kinds of database, whatever opens them (the runtime, the flow store, the op store,
migrations, the CLI):

``memory``
    ``memory://``, ``sqlite://`` or ``sqlite:///:memory:``: volatile, private to the object
    that opens it (the runtime keeps it in dicts, the SQL stores in an in-memory SQLite).
``sqlite``
    ``sqlite:///relative/path.db`` or ``sqlite:////absolute/path.db`` (``~`` expanded): a file,
    shared by every process that opens it.
``postgresql``
    ``postgresql://``, ``postgres://`` or ``postgresql+psycopg://`` followed by a libpq URL
    (``user:password@host:port/dbname?options=...``).

Parsing is SQLAlchemy's :func:`~sqlalchemy.engine.make_url`, imported only when a URL other
than ``memory://`` is parsed, so an in-process runtime never loads SQLAlchemy.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from ..errors import ConfigurationError

__all__ = ["ACCEPTED_FORMS", "DatabaseURL", "redact"]

Kind = Literal["memory", "sqlite", "postgresql"]

#: The forms a database URL may take, as error messages list them.
ACCEPTED_FORMS = (
    "memory:// (or sqlite://, sqlite:///:memory:), sqlite:///relative/path.db, "
    "sqlite:////absolute/path.db or postgresql://user:password@host:port/dbname"
)

_POSTGRES_SCHEMES = frozenset({"postgresql", "postgres", "postgresql+psycopg"})
_MEMORY_SQLITE = frozenset({"", ":memory:"})
# user:password@ in a URL that did not parse, so even a rejected URL is never echoed with it.
_USERINFO_PASSWORD = re.compile(r"(://[^/?#@:]*):[^/?#@]*@")
_QUERY_PASSWORD = re.compile(r"([?&]password=)[^&#]*", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class DatabaseURL:
    """A parsed database URL; build one with :meth:`parse` (see the module doc for the forms).

    ``text`` is the URL as given, ``kind`` one of ``"memory"``, ``"sqlite"``,
    ``"postgresql"``; ``path`` the absolute file of a SQLite URL (else None). ``str()`` of it
    is :attr:`redacted`, so it can go into messages and logs as it is.
    """

    text: str
    kind: Kind
    path: Path | None = None
    # The libpq URL after its scheme (PostgreSQL only): kept as written, percent-escapes and
    # all, since libpq parses it again.
    _rest: str = field(default="", repr=False)

    @classmethod
    def parse(cls, url: str | DatabaseURL) -> DatabaseURL:
        """The :class:`DatabaseURL` of ``url``; :class:`ConfigurationError` naming the accepted
        forms if it is not one of them."""
        if isinstance(url, DatabaseURL):
            return url
        if not isinstance(url, str):
            raise ConfigurationError(
                f"a database URL must be a string, got {type(url).__name__}: use {ACCEPTED_FORMS}."
            )
        scheme, sep, rest = url.partition("://")
        scheme = scheme.lower()
        if not sep:
            raise _invalid(url, "it does not start with scheme://")
        if scheme == "memory":
            if rest:
                raise _invalid(url, "memory:// takes nothing after the scheme")
            return cls(url, "memory")
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ArgumentError

        try:
            parsed = make_url(url)
        except (ArgumentError, ValueError) as exc:
            raise _invalid(url, f"it does not parse ({exc})") from None
        if scheme == "sqlite":
            if parsed.query:
                raise _invalid(url, "SQLite URLs take no query parameters")
            if parsed.host or parsed.username or parsed.port:
                raise _invalid(url, "a SQLite URL names a file, not a host")
            database = parsed.database or ""
            if database in _MEMORY_SQLITE:
                if rest not in {"", "/:memory:"}:
                    raise _invalid(url, "it names no database file")
                return cls(url, "memory")
            return cls(url, "sqlite", Path(database).expanduser().absolute())
        if scheme in _POSTGRES_SCHEMES:
            if not rest:
                raise _invalid(url, "it names no server or database")
            return cls(url, "postgresql", None, rest)
        raise _invalid(url, f"the scheme {scheme!r} is not supported")

    # -- what callers need ----------------------------------------------------------------------

    @property
    def volatile(self) -> bool:
        """True for ``memory``: nothing survives the object that opened it."""
        return self.kind == "memory"

    @property
    def sqlalchemy_url(self) -> str:
        """The URL for :func:`sqlalchemy.create_engine` (SQLite file paths made absolute,
        PostgreSQL through psycopg 3)."""
        if self.kind == "memory":
            return "sqlite://"
        if self.kind == "sqlite":
            return f"sqlite:///{self.path}"
        return f"postgresql+psycopg://{self._rest}"

    @property
    def conninfo(self) -> str:
        """The libpq URL psycopg connects with (PostgreSQL URLs only)."""
        if self.kind != "postgresql":
            raise ConfigurationError(f"{self} is not a PostgreSQL URL.")
        return f"postgresql://{self._rest}"

    @property
    def redacted(self) -> str:
        """The URL with any password replaced by ``***``, fit for messages."""
        return redact(self.text)

    @property
    def key(self) -> str | None:
        """A string naming the database itself (None for ``memory``, which nobody can open
        twice): equal for two URLs that open the same database (a relative and an absolute
        path to one file, two spellings of one scheme, different passwords)."""
        if self.kind == "memory":
            return None
        if self.kind == "sqlite":
            assert self.path is not None
            return f"sqlite:///{self.path.resolve()}"
        from sqlalchemy.engine import URL, make_url

        url = make_url(self.conninfo)
        return URL.create(
            "postgresql",
            username=url.username,
            host=url.host,
            port=url.port,
            database=url.database,
            query={k: v for k, v in url.query.items() if k.lower() != "password"},
        ).render_as_string()

    def __str__(self) -> str:
        return self.redacted

    def __repr__(self) -> str:
        return f"DatabaseURL({self.redacted!r})"


def redact(url: str) -> str:
    """``url`` with the password of its user part and any ``password=`` parameter replaced by
    ``***`` (works on strings that do not parse as URLs too)."""
    return _QUERY_PASSWORD.sub(r"\1***", _USERINFO_PASSWORD.sub(r"\1:***@", url, count=1))


def _invalid(url: str, why: str) -> ConfigurationError:
    return ConfigurationError(f"invalid database URL {redact(url)!r}: {why}; use {ACCEPTED_FORMS}.")
