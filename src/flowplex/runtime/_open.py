"""Opening a backend by its database URL."""

from __future__ import annotations

from ..errors import ConfigurationError
from ._backend import Backend

__all__ = ["open_backend"]


def open_backend(url: str) -> Backend:
    """Open the backend a URL names, creating or migrating its schema as needed.

    ``memory://`` (in-process, volatile), ``sqlite:///path/to/file.db`` (the embedded default)
    or ``postgresql://user@host:port/db`` (needs the ``postgres`` extra).
    """
    if not isinstance(url, str) or "://" not in url:
        raise ConfigurationError(
            f"invalid database URL {url!r}: expected memory://, sqlite:///<file> or "
            f"postgresql://..."
        )
    scheme = url.split("://", 1)[0].lower()
    if scheme == "memory":
        from .memory import MemoryBackend

        return MemoryBackend(url)
    if scheme == "sqlite":
        from .sqlite import SQLiteBackend

        return SQLiteBackend(url)
    if scheme in {"postgresql", "postgres", "postgresql+psycopg"}:
        try:
            from .postgres import PostgresBackend
        except ImportError as exc:  # pragma: no cover - depends on the installed extras
            raise ConfigurationError(
                f"PostgreSQL support needs the postgres extra: pip install 'flowplex[postgres]' "
                f"({exc})"
            ) from exc
        return PostgresBackend(url)
    raise ConfigurationError(
        f"unsupported database URL scheme {scheme!r} in {url!r}: use memory://, sqlite:/// "
        f"or postgresql://"
    )
