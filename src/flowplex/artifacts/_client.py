"""Clients of the op store: :class:`OpStoreClient` over HTTP, :class:`LocalOpStoreClient` in
process, both behind the :class:`OpStoreAPI` seam that pipelines and flows use."""

from __future__ import annotations

import base64
import hashlib
import os
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from typing import IO, TYPE_CHECKING, Any, Self
from urllib.parse import urlsplit

from ..errors import (
    ConfigurationError,
    FlowplexError,
    PermissionDeniedError,
    SignatureError,
)
from ..identity import KeyPair, content_digest, sign_request
from ._errors import (
    ERRORS_BY_NAME,
    CorruptArtifactError,
    InvalidRequestError,
    NotRegisteredError,
    OpStoreUnavailableError,
)
from ._names import check_name
from ._savers import CHUNK_SIZE, StoredArtifact, check_chunk
from ._store import OpStore
from ._version import Version, VersionInfo, VersionNumber, VersionType

if TYPE_CHECKING:
    import httpx

__all__ = [
    "LocalOpStoreClient",
    "OpStoreAPI",
    "OpStoreClient",
    "connect",
    "load_artifact",
    "save_artifact",
]

_ERROR_HEADER = "X-Flowplex-Error"


class OpStoreAPI(ABC):
    """What a client of the op store can do; every method raises the store's typed errors
    (:class:`ArtifactError` subclasses, :class:`OpStoreUnavailableError`)."""

    @abstractmethod
    def get_all_versions_of_op(self, op_name: str) -> list[Version] | None:
        """Every registered version of ``op_name``, or None."""

    @abstractmethod
    def get_version_numbers(self, op_name: str) -> list[VersionInfo]:
        """Every registered version of ``op_name`` with its number (empty if none)."""

    @abstractmethod
    def get_validated_links(
        self, downstream_op_name: str, upstream_op_name: str
    ) -> list[Version] | None:
        """The upstream versions the downstream op was validated with, or None."""

    @abstractmethod
    def register_valid_link(
        self, downstream_op_name: str | None, upstream_op_name: str, upstream_op_version: Version
    ) -> None:
        """Register the upstream op version and (unless None) the validated link."""

    @abstractmethod
    def get_op_bytes_for_version(self, op_name: str, version: Version) -> bytes:
        """The saved bytes of a registered op version."""

    @abstractmethod
    def save_op_bytes(self, op_name: str, version: Version, op_bytes: bytes) -> None:
        """Save the bytes of a registered op version."""

    @abstractmethod
    def upload_op_bytes(
        self, op_name: str, version: Version, chunks: Iterable[bytes]
    ) -> StoredArtifact:
        """Save the bytes of a registered op version from ``chunks``, streaming."""

    @abstractmethod
    def download_op_bytes(self, op_name: str, version: Version, sink: IO[bytes]) -> StoredArtifact:
        """Write the saved bytes of a registered op version to ``sink``, streaming, and
        check them against their hash."""

    @abstractmethod
    def pipeline_exists(self, pipeline_name: str) -> bool:
        """Whether the pipeline was registered."""

    @abstractmethod
    def register_new_pipeline(self, pipeline_name: str, last_op_name: str) -> None:
        """Register a pipeline and its last op (again: no change)."""

    @abstractmethod
    def close(self) -> None:
        """Release connections."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class LocalOpStoreClient(OpStoreAPI):
    """A client calling an :class:`OpStore` in this process (the embedded default).

    ``owns_store`` closes the store with the client.
    """

    def __init__(self, store: OpStore, *, owns_store: bool = False) -> None:
        if not isinstance(store, OpStore):
            raise ConfigurationError(f"LocalOpStoreClient needs an OpStore, got {store!r}")
        self.store = store
        self._owns_store = owns_store

    def __repr__(self) -> str:
        return f"LocalOpStoreClient({self.store!r})"

    def get_all_versions_of_op(self, op_name: str) -> list[Version] | None:
        """See :class:`OpStoreAPI`."""
        return self.store.get_all_versions_of_op(op_name)

    def get_version_numbers(self, op_name: str) -> list[VersionInfo]:
        """See :class:`OpStoreAPI`."""
        return self.store.get_version_numbers(op_name)

    def get_validated_links(
        self, downstream_op_name: str, upstream_op_name: str
    ) -> list[Version] | None:
        """See :class:`OpStoreAPI`."""
        return self.store.get_validated_links(downstream_op_name, upstream_op_name)

    def register_valid_link(
        self, downstream_op_name: str | None, upstream_op_name: str, upstream_op_version: Version
    ) -> None:
        """See :class:`OpStoreAPI`."""
        self.store.register_valid_link(downstream_op_name, upstream_op_name, upstream_op_version)

    def get_op_bytes_for_version(self, op_name: str, version: Version) -> bytes:
        """See :class:`OpStoreAPI`."""
        return self.store.get_op_bytes_for_version(op_name, version)

    def save_op_bytes(self, op_name: str, version: Version, op_bytes: bytes) -> None:
        """See :class:`OpStoreAPI`."""
        self.store.save_op_bytes(op_name, version, op_bytes)

    def upload_op_bytes(
        self, op_name: str, version: Version, chunks: Iterable[bytes]
    ) -> StoredArtifact:
        """See :class:`OpStoreAPI`."""
        writer = self.store.open_op_writer(op_name, version)
        try:
            for chunk in chunks:
                writer.write(chunk)
        except BaseException:
            writer.abort()
            raise
        return writer.commit()

    def download_op_bytes(self, op_name: str, version: Version, sink: IO[bytes]) -> StoredArtifact:
        """See :class:`OpStoreAPI`."""
        with self.store.open_op_reader(op_name, version) as reader:
            for chunk in reader:
                sink.write(chunk)
            return reader.info

    def pipeline_exists(self, pipeline_name: str) -> bool:
        """See :class:`OpStoreAPI`."""
        return self.store.pipeline_exists(pipeline_name)

    def register_new_pipeline(self, pipeline_name: str, last_op_name: str) -> None:
        """See :class:`OpStoreAPI`."""
        self.store.register_new_pipeline(pipeline_name, last_op_name)

    def close(self) -> None:
        """Close the store if this client owns it."""
        if self._owns_store:
            self.store.close()


class OpStoreClient(OpStoreAPI):
    """A client of an op store served over HTTP at ``url`` (e.g. ``http://127.0.0.1:8765``,
    or the prefix the store is mounted at).

    Errors the server reports come back as the same classes (from the ``X-Flowplex-Error``
    header); an unreachable server raises :class:`OpStoreUnavailableError`. ``http_client``
    lets a caller supply a configured :class:`httpx.Client`; requests still go to ``url``.
    ``key`` (a :class:`~flowplex.identity.KeyPair`) signs every request: the store's writes
    (registrations, bytes) need it unless the store is insecure. A signed upload is read
    whole before it is sent (the signature covers its digest).
    """

    def __init__(
        self,
        url: str,
        *,
        timeout: float = 60.0,
        http_client: httpx.Client | None = None,
        key: KeyPair | None = None,
    ) -> None:
        import httpx

        from .._httpsign import SigningAuth

        if not isinstance(url, str):
            raise ConfigurationError(f"the op store URL must be a string, got {url!r}")
        try:
            parts = urlsplit(url)
            httpx.URL(url)  # what urlsplit lets through but no request could use: a bad port
        except (ValueError, httpx.InvalidURL) as exc:
            raise ConfigurationError(f"invalid op store URL {url!r}: {exc}") from None
        if parts.scheme not in {"http", "https"} or not parts.netloc:
            raise ConfigurationError(
                f"invalid op store URL {url!r}: expected http://host:port[/prefix]"
            )
        self.url = url.rstrip("/")
        if key is not None and http_client is not None:
            raise ConfigurationError("pass key or http_client (with its own auth), not both")
        auth = SigningAuth(key) if key is not None else None
        self._key = key
        self._http = (
            http_client if http_client is not None else httpx.Client(timeout=timeout, auth=auth)
        )
        self._owns_http = http_client is None

    def __repr__(self) -> str:
        return f"OpStoreClient({self.url!r})"

    # -- the op store's POST routes ---------------------------------------------------------

    def get_all_versions_of_op(self, op_name: str) -> list[Version] | None:
        """See :class:`OpStoreAPI`."""
        found = self._post("get_all_versions_of_op", {"desired_op_name": op_name})
        if found is None:
            return None
        return [Version.parse(text) for text in found["all_versions"]]

    def get_version_numbers(self, op_name: str) -> list[VersionInfo]:
        """See :class:`OpStoreAPI`."""
        found = self._post("get_version_numbers", {"desired_op_name": op_name})
        if found is None:
            return []
        return [
            VersionInfo(
                Version.parse(item["version"]),
                VersionNumber(*(int(part) for part in item["number"].split("."))),
            )
            for item in found["versions"]
        ]

    def get_validated_links(
        self, downstream_op_name: str, upstream_op_name: str
    ) -> list[Version] | None:
        """See :class:`OpStoreAPI`."""
        found = self._post(
            "get_validated_links",
            {"downstream_op_name": downstream_op_name, "upstream_op_name": upstream_op_name},
        )
        if found is None:
            return None
        return [Version.parse(text) for text in found["upstream_versions"]]

    def register_valid_link(
        self, downstream_op_name: str | None, upstream_op_name: str, upstream_op_version: Version
    ) -> None:
        """See :class:`OpStoreAPI`."""
        self._post(
            "register_valid_link",
            {
                "downstream_op_name": downstream_op_name,
                "upstream_op_name": upstream_op_name,
                "upstream_op_version": _wire_version(upstream_op_version),
            },
        )

    def get_op_bytes_for_version(self, op_name: str, version: Version) -> bytes:
        """See :class:`OpStoreAPI`."""
        found = self._post(
            "get_op_bytes_for_version",
            {"desired_op_name": op_name, "version": _wire_version(version)},
        )
        return base64.b64decode(found["bytes"])

    def save_op_bytes(self, op_name: str, version: Version, op_bytes: bytes) -> None:
        """See :class:`OpStoreAPI`."""
        if not isinstance(op_bytes, (bytes, bytearray, memoryview)):
            raise InvalidRequestError(f"op bytes must be bytes, got {type(op_bytes).__name__}")
        self._post(
            "save_op_bytes",
            {
                "op_name": op_name,
                "version": _wire_version(version),
                "bytes": base64.b64encode(op_bytes).decode("ascii"),
            },
        )

    def pipeline_exists(self, pipeline_name: str) -> bool:
        """See :class:`OpStoreAPI`."""
        return bool(self._post("pipeline_exists", {"pipeline_name": pipeline_name})["exists"])

    def register_new_pipeline(self, pipeline_name: str, last_op_name: str) -> None:
        """See :class:`OpStoreAPI`."""
        self._post(
            "register_new_pipeline",
            {"pipeline_name": pipeline_name, "last_op_name": last_op_name},
        )

    # -- streaming ------------------------------------------------------------------------------

    def upload_op_bytes(
        self, op_name: str, version: Version, chunks: Iterable[bytes]
    ) -> StoredArtifact:
        """See :class:`OpStoreAPI`."""
        check_name("op name", op_name)
        params = {"op_name": op_name, "version": _wire_version(version)}
        if self._key is None:
            content = (bytes(check_chunk(chunk)) for chunk in chunks)
            response = self._send("PUT", "op_bytes", params=params, content=content)
            found = _json(response)
            return StoredArtifact(int(found["size"]), str(found["sha256"]))
        # The signature covers the body's digest: spool the chunks (to disk beyond a few
        # megabytes) while hashing them, then sign and stream the spool.
        with tempfile.SpooledTemporaryFile(max_size=4 * CHUNK_SIZE) as spool:
            digest = hashlib.sha256()
            for chunk in chunks:
                spool.write(check_chunk(chunk))
                digest.update(chunk)
            spool.seek(0)
            request = self._http.build_request(
                "PUT", self._url("op_bytes"), params=params, content=_read_chunks(spool)
            )
            target = request.url.raw_path.decode("ascii")
            request.headers.update(
                sign_request(self._key, "PUT", target, digest=content_digest(digest.digest()))
            )
            response = self._send_request(request)
        found = _json(response)
        return StoredArtifact(int(found["size"]), str(found["sha256"]))

    def download_op_bytes(self, op_name: str, version: Version, sink: IO[bytes]) -> StoredArtifact:
        """See :class:`OpStoreAPI`."""
        import httpx

        check_name("op name", op_name)
        params = {"op_name": op_name, "version": _wire_version(version)}
        digest = hashlib.sha256()
        size = 0
        try:
            with self._http.stream("GET", self._url("op_bytes"), params=params) as response:
                if response.status_code >= 400:
                    response.read()
                    raise _error(response)
                expected = response.headers.get("X-Content-SHA256", "")
                for chunk in response.iter_bytes():
                    digest.update(chunk)
                    size += len(chunk)
                    sink.write(chunk)
        except httpx.HTTPError as exc:
            raise OpStoreUnavailableError(f"op store at {self.url} failed: {exc}") from exc
        if digest.hexdigest() != expected:
            raise CorruptArtifactError(
                f"the bytes of op {op_name!r} at {version} arrived damaged: sha256 "
                f"{digest.hexdigest()} but the store sent {expected or 'none'}"
            )
        return StoredArtifact(size, expected)

    def close(self) -> None:
        """Close the HTTP connections (unless the caller supplied the client)."""
        if self._owns_http:
            self._http.close()

    # -- plumbing -------------------------------------------------------------------------------

    def _url(self, route: str) -> str:
        return f"{self.url}/v1/{route}"

    def _post(self, route: str, body: dict[str, Any]) -> Any:
        return _json(self._send("POST", route, json=body))

    def _send(self, method: str, route: str, **kwargs: Any) -> httpx.Response:
        return self._send_request(self._http.build_request(method, self._url(route), **kwargs))

    def _send_request(self, request: httpx.Request) -> httpx.Response:
        import httpx

        try:
            # A request signed already goes as it is (auth=None); others get the client's.
            if "signature" in request.headers:
                response = self._http.send(request, auth=None)
            else:
                response = self._http.send(request)
        except httpx.HTTPError as exc:
            raise OpStoreUnavailableError(
                f"cannot reach the op store at {self.url}: {exc}"
            ) from exc
        if response.status_code >= 400:
            raise _error(response)
        return response


def _read_chunks(spool: IO[bytes]) -> Iterator[bytes]:
    while chunk := spool.read(CHUNK_SIZE):
        yield chunk


def _wire_version(version: object) -> str:
    if not isinstance(version, Version):
        raise InvalidRequestError(f"expected a Version, got {type(version).__name__}")
    return str(version)


def _json(response: httpx.Response) -> Any:
    """The JSON body of a successful answer; anything else did not come from an op store."""
    try:
        return response.json()
    except ValueError:
        raise OpStoreUnavailableError(
            f"the answer from {response.request.url} (HTTP {response.status_code}) is not "
            f"JSON; is this the URL of a flowplex op store?"
        ) from None


def _error(response: httpx.Response) -> FlowplexError:
    """The typed error an op store error response stands for."""
    try:
        detail = response.json().get("detail", response.text)
    except ValueError:
        detail = response.text
    if not isinstance(detail, str):
        detail = str(detail)
    message = f"{detail} (HTTP {response.status_code} from {response.request.url})"
    cls = ERRORS_BY_NAME.get(response.headers.get(_ERROR_HEADER, ""))
    if cls is None:
        # Without the header the answer did not come from an op store route: a body the
        # framework refused, or a URL that serves something else.
        if response.status_code in {400, 422}:
            cls = InvalidRequestError
        elif response.status_code == 401:
            cls = SignatureError
        elif response.status_code == 403:
            cls = PermissionDeniedError
        elif response.status_code == 413:
            cls = InvalidRequestError
        else:
            cls = OpStoreUnavailableError
            message += "; is this the URL of a flowplex op store?"
    return cls(message)


def connect(
    target: str | None = None,
    *,
    root: str | os.PathLike[str] | None = None,
    key: KeyPair | None = None,
) -> OpStoreAPI:
    """A client of the op store at ``target``.

    - ``None``: the embedded default, in process: the node database (``FLOWPLEX_DB``, by
      default a SQLite file in ``FLOWPLEX_HOME``) and op bytes under
      ``FLOWPLEX_HOME/artifacts``;
    - ``"http://..."``: an op store served over HTTP (:class:`OpStoreClient`, signing its
      requests with ``key``, by default the key file ``FLOWPLEX_HOME/keys/client.pem``,
      created on first use);
    - a database URL (``sqlite://``, ``sqlite:///file.db``, ``postgresql://...``): an
      in-process store on it, with op bytes under ``root`` (default
      ``FLOWPLEX_HOME/artifacts``).
    """
    from ..config import Settings
    from ._savers import FileSaver

    if target is not None and not isinstance(target, str):
        raise ConfigurationError(f"an op store target must be a URL string, got {target!r}")
    settings = Settings.from_env()
    if target is not None and target.split("://", 1)[0].lower() in {"http", "https"}:
        if key is None:
            from ..identity import load_or_create_key_pair

            key = load_or_create_key_pair(settings.home / "keys" / "client.pem")
        return OpStoreClient(target, key=key)
    saver = FileSaver(root if root is not None else settings.home / "artifacts")
    return LocalOpStoreClient(OpStore(saver, target or settings.db_url), owns_store=True)


def save_artifact(
    store: OpStoreAPI,
    name: str,
    data: bytes,
    version: Version | None = None,
    *,
    validated_with: Iterable[tuple[str, Version]] = (),
) -> Version:
    """Save ``data`` as artifact ``name`` through ``store`` and return its version.

    Without a ``version``, the version is derived from the content (a PATCH change):
    saving the bytes of the latest version again registers nothing new, and bytes saved
    before but no longer the latest get a new version, so that the latest version is always
    what was saved last. Each
    ``(upstream_name, upstream_version)`` in ``validated_with`` is recorded as a validated
    link from that upstream artifact to this one. For use in a flow's ``run``::

        with connect(self.flow_config.get("opstore")) as store:
            version = save_artifact(store, "tokenizer", blob)
    """
    check_name("artifact name", name)
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise InvalidRequestError(f"artifact data must be bytes, got {type(data).__name__}")
    if version is None:
        version = _content_version(store, name, hashlib.sha256(data).hexdigest())
    store.register_valid_link(None, name, version)
    for upstream_name, upstream_version in validated_with:
        store.register_valid_link(name, upstream_name, upstream_version)
    store.save_op_bytes(name, version, bytes(data))
    return version


def _content_version(store: OpStoreAPI, name: str, digest: str) -> Version:
    """The version of content ``digest`` of artifact ``name``: the latest version if it holds
    that content, else one never registered (content saved before, then replaced, must not
    come back as an old version that ``load_artifact`` would not pick)."""
    registered = store.get_all_versions_of_op(name) or []
    latest = max(registered, key=lambda v: v.creation_time, default=None)
    attempt = 0
    while True:
        tag = digest if attempt == 0 else f"{digest}#{attempt}"
        candidate = Version() + Version.atomic(VersionType.PATCH, tag)
        if candidate == latest or candidate not in registered:
            return candidate
        attempt += 1


def load_artifact(
    store: OpStoreAPI, name: str, version: Version | None = None
) -> tuple[Version, bytes]:
    """The bytes of artifact ``name`` at ``version`` (default: the latest created) and that
    version; raises :class:`NotRegisteredError` if the artifact has no versions."""
    check_name("artifact name", name)
    if version is None:
        versions = store.get_all_versions_of_op(name)
        if not versions:
            raise NotRegisteredError(f"artifact {name!r} has no saved versions")
        version = max(versions, key=lambda v: v.creation_time)
    return version, store.get_op_bytes_for_version(name, version)
