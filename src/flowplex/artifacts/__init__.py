"""Versioned op artifacts: ``flowplex.artifacts``.

- **Versions**: :class:`Version` (major/minor/patch sha1 hashes plus creation time),
  :class:`VersionType`, :class:`VersionedField`, :class:`VersionedFieldDict`, and
  :func:`version_of` / :class:`Versioned` for the version of a class from its fields.
- **Store**: :class:`OpStore` ``(saver, db_url)`` keeps versions (numbered per op), validated
  links and pipelines in SQL (the node database's one metadata) and op bytes in a
  :class:`Saver`: :class:`FileSaver`, or :class:`MemorySaver` (its in-memory twin).
  ``OpStore(...).app`` serves the ``POST /v1/...`` routes (plus streaming
  ``PUT``/``GET /v1/op_bytes``); run it alone with ``flowplex opstore serve --db URL --root
  DIR``.
- **Clients**: :class:`OpStoreClient` (HTTP) and :class:`LocalOpStoreClient` (in process),
  both :class:`OpStoreAPI`; :func:`connect` picks one. Flows save and load artifacts with
  :func:`save_artifact` / :func:`load_artifact`.
- **Pipelines**: :class:`Pipeline` of :class:`Op` / :class:`LoadableOp` (or nested
  pipelines), with ``save`` and an all-or-nothing ``load`` that raises :class:`VersionError`.

On purpose (``docs/migrating.md`` says which earlier bugs these fix): versions are
numbered against the **latest** version of the op, not the lowest-numbered one (patch,
patch, minor, major from 1.0.0 gives 1.0.1, 1.0.2, 1.1.0, 2.0.0); :class:`OpStoreClient`
uses its URL; op, version, link and pipeline names are unique, so registering a pipeline
twice changes nothing; a refused load changes nothing; an op without stored versions is kept
rather than crashing the load; client mistakes are 4xx with a JSON ``detail`` (never 500); a
:class:`FileSaver` keeps each file's sha256 beside it and checks it on every read.

Importing this package imports only the standard library: the store and its clients (which
need SQLAlchemy) load on first use, the web framework and the HTTP client only when
``.app``/``.router`` or :class:`OpStoreClient` are used.
"""

from typing import TYPE_CHECKING, Any

from ._errors import (
    ArtifactError,
    ArtifactExistsError,
    ArtifactNotFoundError,
    CorruptArtifactError,
    InvalidRequestError,
    NotRegisteredError,
    OpStoreUnavailableError,
    VersionError,
)
from ._names import op_path
from ._pipeline import LoadableOp, Op, Pipeline
from ._savers import (
    ArtifactReader,
    ArtifactWriter,
    FileSaver,
    MemorySaver,
    Saver,
    StoredArtifact,
)
from ._version import EMPTY_HASH, Version, VersionInfo, VersionNumber, VersionType
from ._versioned import Versioned, VersionedField, VersionedFieldDict, version_of

if TYPE_CHECKING:
    from ._client import (
        LocalOpStoreClient,
        OpStoreAPI,
        OpStoreClient,
        connect,
        load_artifact,
        save_artifact,
    )
    from ._store import OpStore

# The names that need SQLAlchemy (the store and its clients) load on first use, so that
# ``flowplex --help`` and the pure versioning API stay light.
_LAZY = {
    "OpStore": "_store",
    "LocalOpStoreClient": "_client",
    "OpStoreAPI": "_client",
    "OpStoreClient": "_client",
    "connect": "_client",
    "load_artifact": "_client",
    "save_artifact": "_client",
}

__all__ = [
    "EMPTY_HASH",
    "ArtifactError",
    "ArtifactExistsError",
    "ArtifactNotFoundError",
    "ArtifactReader",
    "ArtifactWriter",
    "CorruptArtifactError",
    "FileSaver",
    "InvalidRequestError",
    "LoadableOp",
    "LocalOpStoreClient",
    "MemorySaver",
    "NotRegisteredError",
    "Op",
    "OpStore",
    "OpStoreAPI",
    "OpStoreClient",
    "OpStoreUnavailableError",
    "Pipeline",
    "Saver",
    "StoredArtifact",
    "Version",
    "VersionError",
    "VersionInfo",
    "VersionNumber",
    "VersionType",
    "Versioned",
    "VersionedField",
    "VersionedFieldDict",
    "connect",
    "load_artifact",
    "op_path",
    "save_artifact",
    "version_of",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib import import_module

    value = getattr(import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value
