"""Every error flowplex raises, rooted at :class:`FlowplexError`.

Errors are subclassed by cause, so callers can catch as broadly or as narrowly as they need::

    FlowplexError
     ├── ConfigurationError         settings, YAML files, required keys
     │    ├── ClassPathError        a dotted class path whose module or class is missing
     │    ├── KeyFileError          a key file that is missing, unreadable or readable by others
     │    ├── CacheError            [mesh] a registry cache file that cannot be read or written
     │    └── MeshInputError        [mesh] a malformed record, URL or request body
     │         └── QueryError       [mesh] a /flows query that does not parse
     │              └── SortError   [mesh] a /flows sort key that does not exist
     ├── FlowDefinitionError        a flow class or flow config that cannot work
     │    └── FlowStateError        flow_state that is not JSON-serializable
     ├── FlowInstanceError          mounting or fetching a flow instance failed
     ├── MessagingError             a message that cannot be built, sent or answered
     │    ├── InterfaceError        data that does not fit a flow's input/output interface
     │    ├── UnknownInstanceError  a message addressed to an instance that does not exist
     │    ├── FlowError             the flow that handled a message raised (an error reply)
     │    └── RemoteError           another node refused a request or could not be reached
     ├── FlowTimeoutError           a wait ran out of time (also a builtin TimeoutError)
     ├── BackendError               the storage backend failed or cannot be reached
     │    ├── DuplicateKeyError     a row whose key exists already (a user, an instance id)
     │    ├── StorageUnwritableError  read-only, disk full, a deleted or replaced file
     │    └── OpStoreUnavailableError  [artifacts] the op store cannot be reached
     ├── EngineError                [engine] a task-graph run cannot go on
     │    ├── FlowSpecError         [engine] a spec with unknown precursors, cycles, ...
     │    ├── ContextPathError      [engine] a dot path or wiring that does not resolve
     │    ├── FlowFailedError       [engine] run_flow finished a run that ended FAILED
     │    ├── MaxTicksError         [engine] a run still pending after max_ticks
     │    ├── FlowNotFoundError     [engine] no stored run has that key
     │    ├── FlowExistsError       [engine] a stored run has that key already
     │    └── LeaseLostError        [engine] another runner took over the run's lease
     ├── UnknownSenderError         [mesh] an update from a registry that is not a peer
     ├── SignatureError             a request whose signature is missing, invalid or replayed
     ├── PermissionDeniedError      a signed request whose signer may not do what it asks
     └── ArtifactError              [artifacts] an op-store request that cannot be honoured
          ├── InvalidRequestError   [artifacts] a malformed name, version, body or base64
          ├── NotRegisteredError    [artifacts] an op or version never registered
          ├── ArtifactNotFoundError [artifacts] a version whose bytes were never saved
          ├── CorruptArtifactError  [artifacts] bytes that fail their content hash
          ├── ArtifactExistsError   [artifacts] other bytes for a version saved already
          └── VersionError          [artifacts] a load refused by the validated links

Classes marked ``[name]`` live in ``flowplex.<name>`` (imported from there, so ``import
flowplex`` stays light); a class with two bases is drawn under its first (``FlowSpecError`` is
also a ``FlowDefinitionError``, ``MeshInputError`` and ``InvalidRequestError`` also
``ValueError``, ``FlowNotFoundError`` also ``LookupError``).

Only :class:`FlowInstanceError`, :class:`FlowError` and :class:`RemoteError` carry structured
fields; the others are plain messages that name what is wrong.
"""

from __future__ import annotations

__all__ = [
    "BackendError",
    "ClassPathError",
    "ConfigurationError",
    "DuplicateKeyError",
    "FlowDefinitionError",
    "FlowError",
    "FlowInstanceError",
    "FlowStateError",
    "FlowTimeoutError",
    "FlowplexError",
    "InterfaceError",
    "KeyFileError",
    "MessagingError",
    "PermissionDeniedError",
    "RemoteError",
    "SignatureError",
    "StorageUnwritableError",
    "UnknownInstanceError",
]


class FlowplexError(Exception):
    """The root of every error flowplex raises on purpose."""


class ConfigurationError(FlowplexError):
    """A setting, a YAML file or a required configuration key is missing or invalid."""


class ClassPathError(ConfigurationError):
    """A dotted class path (``"pkg.module.Class"``) names a module or attribute that is missing."""


class KeyFileError(ConfigurationError):
    """A key file is missing, unreadable, not an Ed25519 key, or readable by others."""


class SignatureError(FlowplexError):
    """A request's signature is missing, malformed, too old, replayed or not the signer's.

    HTTP services answer it with 401: the caller did not prove who it is.
    """


class PermissionDeniedError(FlowplexError):
    """A request was signed, but its signer may not do what it asks (HTTP 403)."""


class FlowDefinitionError(FlowplexError):
    """A flow class or its configuration cannot produce a working flow."""


class FlowStateError(FlowDefinitionError):
    """A flow's ``flow_state`` cannot be stored because it is not JSON-serializable."""


class FlowInstanceError(FlowplexError):
    """Getting (mounting or fetching) a flow instance failed.

    The text follows the serving contract::

        Failed to get flow instance at {flow_endpoint} served by user {user_id}.
        Message: {reason}
    """

    def __init__(self, flow_endpoint: str, user_id: str, reason: str) -> None:
        self.flow_endpoint = flow_endpoint
        self.user_id = user_id
        self.reason = reason
        super().__init__(
            f"Failed to get flow instance at {flow_endpoint} served by user {user_id}.\n"
            f"Message: {reason}"
        )


class MessagingError(FlowplexError):
    """A message could not be built, delivered or answered."""


class InterfaceError(MessagingError):
    """Message data does not fit the input or output interface a flow declares."""


class UnknownInstanceError(MessagingError):
    """A message was addressed to a flow instance that does not exist (or was deleted)."""


class FlowError(MessagingError):
    """The flow that handled a message raised; this is its error reply, raised at the caller.

    ``remote_type``, ``remote_message`` and ``remote_traceback`` describe the original exception
    as text, since the exception object itself may live in another process.
    """

    def __init__(
        self,
        remote_type: str,
        remote_message: str,
        remote_traceback: str = "",
        flow_id: str | None = None,
    ) -> None:
        self.remote_type = remote_type
        self.remote_message = remote_message
        self.remote_traceback = remote_traceback
        self.flow_id = flow_id
        where = f" in flow instance {flow_id}" if flow_id else ""
        text = f"{remote_type}{where}: {remote_message}"
        if remote_traceback:
            text = f"{text}\n\nRemote traceback:\n{remote_traceback.rstrip()}"
        super().__init__(text)


class RemoteError(MessagingError):
    """Another node refused a request (``status``: its HTTP status) or could not be reached
    (``status`` None). ``retryable`` says whether sending the same request again may succeed."""

    def __init__(self, message: str, *, status: int | None = None, retryable: bool = False):
        super().__init__(message)
        self.status = status
        self.retryable = retryable


class FlowTimeoutError(FlowplexError, TimeoutError):
    """A wait (for a reply, an instance, a worker) ran out of time."""


class BackendError(FlowplexError):
    """The storage backend failed, or cannot be reached."""


class DuplicateKeyError(BackendError):
    """A row could not be stored because its key exists already (a user id, an instance id).

    Raised at the storage seam only; callers that race to create the same row (two mounts of
    one singleton) catch it and read the winner's row instead.
    """


class StorageUnwritableError(BackendError):
    """The database cannot be written and will not be by retrying: it is read-only, its disk
    is full, or its SQLite file was deleted or replaced while open. A worker stops on it (with
    this one-line message) instead of retrying."""
