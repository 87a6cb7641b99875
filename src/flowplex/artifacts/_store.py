"""The op store: versions, validated links, op bytes and pipelines on SQL (SQLAlchemy Core).

Semantics are the original ``OpStoreServer`` with its bugs fixed (see the package docstring):
versions are numbered against the latest one, the names are unique, registering a pipeline
twice changes nothing, and every client mistake raises an :class:`ArtifactError` subclass.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy import Table, bindparam, select
from sqlalchemy.engine import Connection

from ..db import DatabaseURL, create_engine, ensure_schema, is_retryable, transaction
from ..db.schema import (
    metadata,
    opstore_links,
    opstore_ops,
    opstore_pipelines,
    opstore_versions,
)
from ..errors import BackendError, ConfigurationError
from ._errors import (
    ArtifactNotFoundError,
    InvalidRequestError,
    NotRegisteredError,
    OpStoreUnavailableError,
)
from ._names import check_name, op_path
from ._savers import ArtifactReader, ArtifactWriter, Saver, StoredArtifact
from ._version import Version, VersionInfo, VersionNumber

if TYPE_CHECKING:
    from fastapi import APIRouter, FastAPI

    from ._client import LocalOpStoreClient

__all__ = ["OpStore"]

_T = TypeVar("_T")
#: Defaults of the limits: a JSON request body, a streamed artifact, a version's clock ahead.
MAX_REQUEST_BYTES = 64 << 20
MAX_ARTIFACT_BYTES = 256 << 20
CLOCK_SKEW = 300.0
_TABLES: list[Table] = [opstore_ops, opstore_versions, opstore_links, opstore_pipelines]
# A registration that lost a race (unique violation, deadlock) is simply run again.
_ATTEMPTS = 5


class OpStore:
    """Ops' serialized bytes by version, version numbers, validated links and pipelines.

    ``saver`` keeps the bytes; ``db_url`` keeps the rest: ``"sqlite://"`` (in memory, for one
    process; ``memory://`` and ``sqlite:///:memory:`` alike), ``"sqlite:///path.db"`` or
    ``"postgresql://..."`` (migrated to the schema head on open, shareable by many processes).
    ``.app`` is an ASGI (FastAPI) app serving the ``POST /v1/...`` routes plus streaming
    ``/v1/op_bytes``; ``.client()`` an in-process client. Methods raise :class:`ArtifactError`
    subclasses for client mistakes and :class:`OpStoreUnavailableError` when the database fails.

    Bytes of a version are written once (:class:`ArtifactExistsError` for other bytes; the
    same bytes again change nothing), and a version created more than ``clock_skew`` seconds
    in the future is refused. Over HTTP, the routes that change the store need a signed
    request (``insecure=True`` accepts unsigned ones, with a warning in the log); a JSON body
    is limited to ``max_request_bytes`` and a streamed upload to ``max_artifact_bytes`` (413).
    """

    def __init__(
        self,
        saver: Saver,
        db_url: str = "sqlite://",
        *,
        insecure: bool = False,
        max_request_bytes: int = MAX_REQUEST_BYTES,
        max_artifact_bytes: int = MAX_ARTIFACT_BYTES,
        clock_skew: float = CLOCK_SKEW,
    ) -> None:
        if not isinstance(saver, Saver):
            raise ConfigurationError(f"OpStore needs a Saver (e.g. FileSaver), got {saver!r}")
        for name, value in (
            ("max_request_bytes", max_request_bytes),
            ("max_artifact_bytes", max_artifact_bytes),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigurationError(f"{name} must be a positive byte count, got {value!r}")
        if isinstance(clock_skew, bool) or not isinstance(clock_skew, int | float):
            raise ConfigurationError(f"clock_skew must be seconds, got {clock_skew!r}")
        if not 0 <= clock_skew <= 86_400:
            raise ConfigurationError(f"clock_skew must be in [0, 86400] s, got {clock_skew!r}")
        self.insecure = bool(insecure)
        self.max_request_bytes = max_request_bytes
        self.max_artifact_bytes = max_artifact_bytes
        self.clock_skew = float(clock_skew)
        self._db = DatabaseURL.parse(db_url)
        self.saver = saver
        self.db_url = db_url
        self._engine = create_engine(self._db, name="the op store database")
        if self._db.volatile:
            with self._transaction() as conn:
                metadata.create_all(conn, tables=_TABLES)
        else:
            ensure_schema(self._db)
        self._app: FastAPI | None = None

    def __repr__(self) -> str:
        return f"OpStore({self.saver!r}, {self._db.redacted!r})"

    # -- adapters -------------------------------------------------------------------------------

    @property
    def router(self) -> APIRouter:
        """A FastAPI router with the op store's routes (``/v1/...``), to include elsewhere."""
        from ._http import create_router

        return create_router(self)

    @property
    def app(self) -> FastAPI:
        """The op store as a self-contained ASGI app (built once)."""
        if self._app is None:
            from ._http import create_app

            self._app = create_app(self)
        return self._app

    def client(self) -> LocalOpStoreClient:
        """An in-process client of this store (no HTTP)."""
        from ._client import LocalOpStoreClient

        return LocalOpStoreClient(self)

    def close(self) -> None:
        """Release the database connections."""
        self._engine.dispose()

    # -- queries --------------------------------------------------------------------------------

    def get_all_versions_of_op(self, op_name: str) -> list[Version] | None:
        """Every registered version of ``op_name`` (oldest number first), or None if the op
        has none."""
        infos = self.get_version_numbers(op_name)
        return [info.version for info in infos] or None

    def get_version_numbers(self, op_name: str) -> list[VersionInfo]:
        """Every registered version of ``op_name`` with its number, lowest number first."""
        check_name("op name", op_name)
        v = opstore_versions
        query = (
            select(v.c.major_hash, v.c.minor_hash, v.c.patch_hash, v.c.created_at)
            .add_columns(v.c.major_num, v.c.minor_num, v.c.patch_num)
            .join(opstore_ops, opstore_ops.c.id == v.c.op_id)
            .where(opstore_ops.c.op_name == op_name)
            .order_by(v.c.major_num, v.c.minor_num, v.c.patch_num)
        )
        with self._transaction(write=False) as conn:
            rows = conn.execute(query).all()
        return [VersionInfo(_version(row), VersionNumber(*row[4:7])) for row in rows]

    def get_validated_links(
        self, downstream_op_name: str, upstream_op_name: str
    ) -> list[Version] | None:
        """The versions of ``upstream_op_name`` that ``downstream_op_name`` was validated
        with, or None if there is no link between them."""
        check_name("downstream op name", downstream_op_name)
        check_name("upstream op name", upstream_op_name)
        down = opstore_ops.alias("down")
        up = opstore_ops.alias("up")
        v = opstore_versions
        link = opstore_links
        query = (
            select(v.c.major_hash, v.c.minor_hash, v.c.patch_hash, v.c.created_at)
            .select_from(link)
            .join(down, down.c.id == link.c.downstream_op_id)
            .join(up, up.c.id == link.c.upstream_op_id)
            .join(v, v.c.id == link.c.upstream_version_id)
            .where(down.c.op_name == downstream_op_name, up.c.op_name == upstream_op_name)
            .order_by(v.c.major_num, v.c.minor_num, v.c.patch_num)
        )
        with self._transaction(write=False) as conn:
            rows = conn.execute(query).all()
        return [_version(row) for row in rows] or None

    def pipeline_exists(self, pipeline_name: str) -> bool:
        """Whether a pipeline of that name was registered."""
        check_name("pipeline name", pipeline_name)
        p = opstore_pipelines
        with self._transaction(write=False) as conn:
            found = conn.execute(select(p.c.id).where(p.c.pipeline_name == pipeline_name))
            return found.first() is not None

    def list_ops(self) -> list[str]:
        """The names of every op with a registered version, sorted."""
        o, v = opstore_ops, opstore_versions
        query = select(o.c.op_name).where(o.c.id.in_(select(v.c.op_id))).order_by(o.c.op_name)
        with self._transaction(write=False) as conn:
            return [row[0] for row in conn.execute(query)]

    def list_pipelines(self) -> dict[str, str]:
        """Every registered pipeline and the name of its last op."""
        p, o = opstore_pipelines, opstore_ops
        query = select(p.c.pipeline_name, o.c.op_name).join(o, o.c.id == p.c.last_op_id)
        with self._transaction(write=False) as conn:
            return {row[0]: row[1] for row in conn.execute(query)}

    def registered_version(self, op_name: str, version: Version) -> Version:
        """The registered ``version`` of ``op_name``, with the creation time the store keeps
        (raises :class:`NotRegisteredError` if the op or the version is unknown)."""
        check_name("op name", op_name)
        _check_version(version)
        with self._transaction(write=False) as conn:
            return self._registered(conn, op_name, version)

    # -- registrations --------------------------------------------------------------------------

    def register_valid_link(
        self,
        downstream_op_name: str | None,
        upstream_op_name: str,
        upstream_op_version: Version,
    ) -> VersionInfo:
        """Register ``upstream_op_name`` at ``upstream_op_version`` (numbering it if new) and,
        unless ``downstream_op_name`` is None, that the downstream op works with it.

        Registering the same link again changes nothing. Returns the version's number.
        """
        if downstream_op_name is not None:
            check_name("downstream op name", downstream_op_name)
        check_name("upstream op name", upstream_op_name)
        _check_version(upstream_op_version)
        ahead = (upstream_op_version.creation_time - datetime.now(UTC)).total_seconds()
        if ahead > self.clock_skew:
            raise InvalidRequestError(
                f"version {upstream_op_version} was created {ahead:.0f} s in the future "
                f"(more than {self.clock_skew:g} s ahead of this store's clock)"
            )

        def register(conn: Connection) -> VersionInfo:
            up_id = _op_id(conn, upstream_op_name, lock=True)
            version_id, info = _register_version(conn, up_id, upstream_op_version)
            if downstream_op_name is not None:
                down_id = _op_id(conn, downstream_op_name, lock=False)
                _insert_ignore(
                    conn,
                    opstore_links,
                    downstream_op_id=down_id,
                    upstream_op_id=up_id,
                    upstream_version_id=version_id,
                )
            return info

        return self._retrying(register)

    def register_new_pipeline(self, pipeline_name: str, last_op_name: str) -> None:
        """Register a pipeline and its last op; registering a name again changes nothing."""
        check_name("pipeline name", pipeline_name)
        check_name("last op name", last_op_name)

        def register(conn: Connection) -> None:
            op_id = _op_id(conn, last_op_name, lock=False)
            _insert_ignore(conn, opstore_pipelines, pipeline_name=pipeline_name, last_op_id=op_id)

        self._retrying(register)

    # -- bytes ----------------------------------------------------------------------------------

    def save_op_bytes(self, op_name: str, version: Version, op_bytes: bytes) -> StoredArtifact:
        """Save the bytes of a registered op version at ``/models/<op>/<version>``, once:
        other bytes for it raise :class:`ArtifactExistsError`, the same bytes change nothing."""
        if not isinstance(op_bytes, (bytes, bytearray, memoryview)):
            raise InvalidRequestError(f"op bytes must be bytes, got {type(op_bytes).__name__}")
        writer = self.open_op_writer(op_name, version)
        try:
            writer.write(bytes(op_bytes))
        except BaseException:
            writer.abort()
            raise
        return writer.commit()

    def open_op_writer(self, op_name: str, version: Version) -> ArtifactWriter:
        """A streaming writer for the bytes of a registered op version; committing publishes
        them once (see :meth:`save_op_bytes`)."""
        registered = self.registered_version(op_name, version)
        return _WriteOnce(self.saver.open_writer(op_path(op_name, registered)))

    def get_op_bytes_for_version(self, op_name: str, version: Version) -> bytes:
        """The saved bytes of a registered op version, checked against their hash."""
        with self.open_op_reader(op_name, version) as reader:
            return b"".join(reader)

    def open_op_reader(self, op_name: str, version: Version) -> ArtifactReader:
        """A streaming reader of the saved bytes of a registered op version."""
        registered = self.registered_version(op_name, version)
        try:
            return self.saver.open_reader(op_path(op_name, registered))
        except ArtifactNotFoundError:
            raise ArtifactNotFoundError(
                f"no bytes were saved for op {op_name!r} at version {registered}"
            ) from None

    # -- plumbing -------------------------------------------------------------------------------

    def _registered(self, conn: Connection, op_name: str, version: Version) -> Version:
        op_id = conn.execute(_SELECT_OP, {"name": op_name}).scalar_one_or_none()
        if op_id is None:
            raise NotRegisteredError(
                f"op {op_name!r} is not registered: register one of its versions "
                f"(register_valid_link) first"
            )
        row = _find_version(conn, op_id, version)
        if row is None:
            raise NotRegisteredError(
                f"version {version} of op {op_name!r} is not registered: register it "
                f"(register_valid_link) first"
            )
        return _version(row[1:5])

    @contextmanager
    def _transaction(self, write: bool = True) -> Iterator[Connection]:
        with transaction(self._engine, write=write, error=OpStoreUnavailableError) as conn:
            yield conn

    def _retrying(self, work: Callable[[Connection], _T]) -> _T:
        """Run ``work`` in a transaction, again if it lost a race to another writer."""
        attempts = 0
        while True:
            attempts += 1
            try:
                with self._transaction() as conn:
                    return work(conn)
            except BackendError as exc:
                if not is_retryable(exc) or attempts >= _ATTEMPTS:
                    if isinstance(exc, OpStoreUnavailableError):
                        raise
                    raise OpStoreUnavailableError(str(exc)) from exc


class _WriteOnce(ArtifactWriter):
    """A writer whose commit never replaces bytes already saved (:meth:`commit_once`)."""

    def __init__(self, inner: ArtifactWriter) -> None:
        self._inner = inner

    def write(self, chunk: bytes) -> None:
        self._inner.write(chunk)

    def commit(self) -> StoredArtifact:
        return self._inner.commit_once()

    def commit_once(self) -> StoredArtifact:
        return self._inner.commit_once()

    def abort(self) -> None:
        self._inner.abort()


def _check_version(version: object) -> None:
    if not isinstance(version, Version):
        raise InvalidRequestError(f"expected a Version, got {type(version).__name__}")


def _version(row: Any) -> Version:
    return Version(row[0], row[1], row[2], row[3].replace(tzinfo=UTC))


# Statements built once: building and cache-keying a statement per call cost about as much
# as running it on SQLite.
_v = opstore_versions
_SELECT_OP = select(opstore_ops.c.id).where(opstore_ops.c.op_name == bindparam("name"))
_SELECT_OP_FOR_UPDATE = _SELECT_OP.with_for_update()
_FIND_VERSION = select(
    _v.c.id,
    _v.c.major_hash,
    _v.c.minor_hash,
    _v.c.patch_hash,
    _v.c.created_at,
    _v.c.major_num,
    _v.c.minor_num,
    _v.c.patch_num,
).where(
    _v.c.op_id == bindparam("op_id"),
    _v.c.major_hash == bindparam("major"),
    _v.c.minor_hash == bindparam("minor"),
    _v.c.patch_hash == bindparam("patch"),
)
_LATEST_VERSION = (
    select(_v.c.major_hash, _v.c.minor_hash, _v.c.major_num, _v.c.minor_num, _v.c.patch_num)
    .where(_v.c.op_id == bindparam("op_id"))
    .order_by(_v.c.major_num.desc(), _v.c.minor_num.desc(), _v.c.patch_num.desc())
    .limit(1)
)
_INSERT_VERSION = _v.insert().returning(_v.c.id)
_INSERT_IGNORE: dict[tuple[str, str], Any] = {}


def _insert_ignore(conn: Connection, table: Table, **values: Any) -> None:
    key = (conn.dialect.name, table.name)
    statement = _INSERT_IGNORE.get(key)
    if statement is None:
        if key[0] == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        else:
            from sqlalchemy.dialects.sqlite import insert  # type: ignore[assignment]
        statement = _INSERT_IGNORE[key] = insert(table).on_conflict_do_nothing()
    conn.execute(statement, values)


def _op_id(conn: Connection, op_name: str, *, lock: bool) -> int:
    """The id of ``op_name``, registering it if new; ``lock`` holds its row (PostgreSQL) so
    that versions of one op are numbered one registration at a time."""
    query = _SELECT_OP_FOR_UPDATE if lock else _SELECT_OP
    found = conn.execute(query, {"name": op_name}).scalar_one_or_none()
    if found is None:
        _insert_ignore(conn, opstore_ops, op_name=op_name)
        found = conn.execute(query, {"name": op_name}).scalar_one()
    return int(found)


def _find_version(conn: Connection, op_id: int, version: Version) -> Any:
    params = {
        "op_id": op_id,
        "major": version.major,
        "minor": version.minor,
        "patch": version.patch,
    }
    return conn.execute(_FIND_VERSION, params).first()


def _register_version(conn: Connection, op_id: int, version: Version) -> tuple[int, VersionInfo]:
    found = _find_version(conn, op_id, version)
    if found is not None:
        return int(found[0]), VersionInfo(_version(found[1:5]), VersionNumber(*found[5:8]))
    latest = conn.execute(_LATEST_VERSION, {"op_id": op_id}).first()
    if latest is None:
        number = VersionNumber(1, 0, 0)
    elif latest.major_hash != version.major:
        number = VersionNumber(latest.major_num + 1, 0, 0)
    elif latest.minor_hash != version.minor:
        number = VersionNumber(latest.major_num, latest.minor_num + 1, 0)
    else:
        number = VersionNumber(latest.major_num, latest.minor_num, latest.patch_num + 1)
    created = version.creation_time.astimezone(UTC).replace(tzinfo=None)
    new_id = conn.execute(
        _INSERT_VERSION,
        {
            "op_id": op_id,
            "major_hash": version.major,
            "minor_hash": version.minor,
            "patch_hash": version.patch,
            "major_num": number.major,
            "minor_num": number.minor,
            "patch_num": number.patch,
            "created_at": created,
        },
    ).scalar_one()
    return int(new_id), VersionInfo(version, number)
