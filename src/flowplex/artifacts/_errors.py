"""The op store's errors, each a :class:`~flowplex.errors.FlowplexError`.

::

    FlowplexError
     ├── ArtifactError                  an op-store request that cannot be honoured
     │    ├── InvalidRequestError       a malformed name, version string, body or base64 (HTTP 422)
     │    ├── NotRegisteredError        an op or a version the store has never registered (404)
     │    ├── ArtifactNotFoundError     a registered version whose bytes were never saved (404)
     │    ├── CorruptArtifactError      stored bytes that fail their content-hash check (500)
     │    ├── ArtifactExistsError       other bytes for a version whose bytes are saved (409)
     │    └── VersionError              a load refused: an upstream version is not validated
     └── BackendError
          └── OpStoreUnavailableError   the op store's database or server cannot be reached

The HTTP layer sends the class name in the ``X-Flowplex-Error`` header, so
:class:`~flowplex.artifacts.OpStoreClient` raises the same class the store raised.
"""

from __future__ import annotations

from ..errors import BackendError, FlowplexError

__all__ = [
    "ArtifactError",
    "ArtifactExistsError",
    "ArtifactNotFoundError",
    "CorruptArtifactError",
    "InvalidRequestError",
    "NotRegisteredError",
    "OpStoreUnavailableError",
    "VersionError",
]


class ArtifactError(FlowplexError):
    """An op-store request that cannot be honoured; the message names what is wrong."""


class InvalidRequestError(ArtifactError, ValueError):
    """A malformed op name, version string, request body or base64 payload."""


class NotRegisteredError(ArtifactError):
    """An op or an op version that the store has never registered."""


class ArtifactNotFoundError(ArtifactError):
    """A registered op version whose bytes were never saved."""


class CorruptArtifactError(ArtifactError):
    """Stored bytes that no longer match the content hash written with them."""


class ArtifactExistsError(ArtifactError):
    """Other bytes for an op version whose bytes are saved already: version bytes are
    written once (the same bytes again are accepted and change nothing)."""


class VersionError(ArtifactError):
    """A load was refused: an upstream op's major version is not among the versions its
    downstream op was validated with. Nothing was changed by the refused load."""


class OpStoreUnavailableError(BackendError):
    """The op store's database or HTTP server cannot be reached, or failed."""


def shown(value: object, limit: int = 80) -> str:
    """``repr(value)``, cut to ``limit`` characters: error messages name the bad input
    without echoing megabytes of it back."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 12]}… ({len(text)} chars)"


#: Error classes by name, for the client to re-raise what the server raised.
ERRORS_BY_NAME: dict[str, type[FlowplexError]] = {
    cls.__name__: cls
    for cls in (
        ArtifactError,
        ArtifactExistsError,
        ArtifactNotFoundError,
        CorruptArtifactError,
        InvalidRequestError,
        NotRegisteredError,
        OpStoreUnavailableError,
        VersionError,
    )
}

#: The HTTP status each error travels with.
HTTP_STATUS: dict[type[FlowplexError], int] = {
    InvalidRequestError: 422,
    NotRegisteredError: 404,
    ArtifactNotFoundError: 404,
    VersionError: 409,
    ArtifactExistsError: 409,
    CorruptArtifactError: 500,
    OpStoreUnavailableError: 503,
    ArtifactError: 400,
}
