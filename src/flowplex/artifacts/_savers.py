"""Where op bytes live: the :class:`Saver` seam and :class:`FileSaver`.

A saver stores bytes under a path such as ``/models/<op>/<version>``. Writers stream
(``write`` chunk after chunk, then ``commit``) and readers stream back, so an artifact never
has to sit in memory whole; ``save``/``load`` are the whole-bytes conveniences the base64
routes use.

:class:`FileSaver` keeps the bytes exactly as given, at ``<root>/<path>``: the layout of
the original ``FileSaver``, so either system reads a folder the other wrote. Their sha256 lives
beside them in ``<file>.sha256`` (``sha256sum``'s format, so ``sha256sum -c`` checks a folder
too) and every read checks it; a file without one (written by the original op store) is read
unchecked.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import sys
import tempfile
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Self

from ..errors import ConfigurationError
from ._errors import (
    ArtifactExistsError,
    ArtifactNotFoundError,
    CorruptArtifactError,
    InvalidRequestError,
)

__all__ = [
    "ArtifactReader",
    "ArtifactWriter",
    "FileSaver",
    "MemorySaver",
    "Saver",
    "StoredArtifact",
]

#: Read and write in pieces of this size.
CHUNK_SIZE = 1 << 20

#: The suffix of the file beside each artifact file that holds its sha256.
CHECKSUM_SUFFIX = ".sha256"
_CHECKSUM_LINE = re.compile(rb"\\?([0-9a-fA-F]{64})(?:[ \t*].*)?\n?", re.DOTALL)
# A checksum file is one line; anything much longer is not one.
_CHECKSUM_MAX = 4096


@dataclass(frozen=True)
class StoredArtifact:
    """What a saver knows of stored bytes: their ``size`` and hex ``sha256``."""

    size: int
    sha256: str


class ArtifactWriter(ABC):
    """Bytes being written to a saver; nothing is visible at the path until :meth:`commit`.

    Used as a context manager, it commits when the block ends normally and aborts otherwise.
    """

    @abstractmethod
    def write(self, chunk: bytes) -> None:
        """Append ``chunk``."""

    @abstractmethod
    def commit(self) -> StoredArtifact:
        """Publish everything written, replacing what was at the path."""

    @abstractmethod
    def abort(self) -> None:
        """Drop everything written; the path keeps what it had. Safe to call twice."""

    def commit_once(self) -> StoredArtifact:
        """Publish everything written unless the path holds bytes already: the same bytes
        are accepted (nothing changes), others raise :class:`ArtifactExistsError`.

        The check and the publish are one step, so two writers racing with different bytes
        cannot both win. Savers that cannot do that refuse (the default).
        """
        self.abort()
        raise ConfigurationError(f"{type(self).__name__} cannot write bytes once.")

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.abort()


class ArtifactReader(ABC):
    """Stored bytes being read back in chunks; iterating checks the content hash at the end
    and raises :class:`CorruptArtifactError` if it does not match."""

    info: StoredArtifact

    @abstractmethod
    def __iter__(self) -> Iterator[bytes]:
        """The bytes, chunk by chunk (once)."""

    @abstractmethod
    def verify(self) -> None:
        """Read everything once and check the hash, without handing out the bytes."""

    @abstractmethod
    def close(self) -> None:
        """Release the underlying file or connection."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class Saver(ABC):
    """The storage seam of the op store: bytes by path, streamed both ways."""

    @abstractmethod
    def open_writer(self, path: str) -> ArtifactWriter:
        """A writer that replaces the bytes at ``path`` atomically when committed."""

    @abstractmethod
    def open_reader(self, path: str) -> ArtifactReader:
        """A reader of the bytes at ``path``; raises :class:`ArtifactNotFoundError` if none."""

    @abstractmethod
    def exists(self, path: str) -> bool:
        """Whether bytes were saved at ``path``."""

    def save(self, serialized_object: bytes, path: str) -> StoredArtifact:
        """Store ``serialized_object`` at ``path``."""
        if not isinstance(serialized_object, (bytes, bytearray, memoryview)):
            raise InvalidRequestError(
                f"a saver stores bytes, got {type(serialized_object).__name__}"
            )
        writer = self.open_writer(path)
        try:
            writer.write(bytes(serialized_object))
        except BaseException:
            writer.abort()
            raise
        return writer.commit()

    def load(self, path: str) -> bytes:
        """The bytes at ``path``, checked against their content hash."""
        with self.open_reader(path) as reader:
            return b"".join(reader)


class FileSaver(Saver):
    """Stores each path as a file under ``root`` (``/models/a/b`` is ``root/models/a/b``),
    holding exactly the bytes saved, with their sha256 in ``root/models/a/b.sha256``.

    Writes go to temporary files in the same directory, are flushed to disk, then renamed over
    the targets, so readers see the old bytes or the new ones, never a mix. Publishing and
    opening happen under a lock on the directory, so a reader always gets a checksum that
    belongs to the bytes it opened. A file without a checksum beside it (one another tool
    wrote) is read too: its sha256 is computed when it is opened. Paths whose last segment ends
    in ``.sha256`` are refused, since they name checksum files.
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        if not isinstance(root, (str, os.PathLike)) or not str(root):
            raise InvalidRequestError(f"FileSaver needs a root directory, got {root!r}")
        self.root = Path(root).expanduser().resolve()

    def __repr__(self) -> str:
        return f"FileSaver({str(self.root)!r})"

    def file_for(self, path: str) -> Path:
        """The file that holds ``path``; refuses paths that would leave the root or that name
        a checksum file."""
        segments = _segments(path)
        if segments[-1].endswith(CHECKSUM_SUFFIX):
            raise InvalidRequestError(
                f"invalid artifact path {path!r}: names ending in {CHECKSUM_SUFFIX!r} hold "
                f"checksums"
            )
        return self.root.joinpath(*segments)

    def open_writer(self, path: str) -> ArtifactWriter:
        """See :meth:`Saver.open_writer`."""
        return _FileWriter(self.file_for(path))

    def open_reader(self, path: str) -> ArtifactReader:
        """See :meth:`Saver.open_reader`."""
        target = self.file_for(path)
        try:
            with _directory_lock(target.parent, exclusive=False):
                handle = target.open("rb")
                try:
                    expected = _read_checksum(_checksum_file(target))
                except BaseException:
                    handle.close()
                    raise
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            raise ArtifactNotFoundError(f"no bytes saved at {path}") from None
        try:
            return _FileReader(handle, target, expected)
        except BaseException:
            handle.close()
            raise

    def exists(self, path: str) -> bool:
        """See :meth:`Saver.exists`."""
        return self.file_for(path).is_file()


def _checksum_file(target: Path) -> Path:
    return target.with_name(target.name + CHECKSUM_SUFFIX)


def _checksum_line(digest: str, name: str) -> bytes:
    """``sha256sum``'s line for ``name`` (which escapes a name holding a backslash or a
    newline, and marks the line with a leading backslash)."""
    if "\\" in name or "\n" in name:
        escaped = name.replace("\\", "\\\\").replace("\n", "\\n")
        return f"\\{digest}  {escaped}\n".encode()
    return f"{digest}  {name}\n".encode()


def _read_checksum(checksum_file: Path) -> bytes | None:
    """The sha256 digest ``checksum_file`` holds, None if there is none; raises
    :class:`CorruptArtifactError` if it is not a checksum line."""
    try:
        with checksum_file.open("rb") as handle:
            text = handle.read(_CHECKSUM_MAX + 1)
    except FileNotFoundError:
        return None
    match = _CHECKSUM_LINE.fullmatch(text) if len(text) <= _CHECKSUM_MAX else None
    if match is None:
        raise CorruptArtifactError(
            f"the checksum file {checksum_file} is damaged: expected a sha256 line "
            f"('<64 hex digits>  <name>')"
        )
    return bytes.fromhex(match.group(1).decode("ascii"))


if sys.platform == "win32":  # pragma: no cover - no flock; one process per folder there
    _WINDOWS_LOCK = threading.Lock()

    @contextlib.contextmanager
    def _directory_lock(directory: Path, exclusive: bool) -> Iterator[None]:
        if not directory.is_dir():
            raise FileNotFoundError(directory)
        with _WINDOWS_LOCK:
            yield

else:
    import fcntl

    @contextlib.contextmanager
    def _directory_lock(directory: Path, exclusive: bool) -> Iterator[None]:
        """Hold a lock on ``directory`` (shared for readers, exclusive for publishers).

        flock locks an open file description, so it separates threads of one process as well
        as processes sharing the folder. It is held only to rename or open two small files.
        """
        fd = os.open(directory, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
            yield
        finally:
            os.close(fd)  # closing releases the lock


class _FileWriter(ArtifactWriter):
    def __init__(self, target: Path) -> None:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
        self._target = target
        self._tmp = tmp
        self._file: IO[bytes] | None = os.fdopen(fd, "wb")
        self._hash = hashlib.sha256()
        self._size = 0
        self._result: StoredArtifact | None = None

    def write(self, chunk: bytes) -> None:
        if self._file is None:
            raise InvalidRequestError(f"the writer of {self._target} is already closed")
        check_chunk(chunk)
        self._file.write(chunk)
        self._hash.update(chunk)
        self._size += len(chunk)

    def commit(self) -> StoredArtifact:
        return self._commit(once=False)

    def commit_once(self) -> StoredArtifact:
        return self._commit(once=True)

    def _commit(self, *, once: bool) -> StoredArtifact:
        if self._result is not None:
            return self._result
        if self._file is None:
            raise InvalidRequestError(f"the writer of {self._target} was aborted")
        file, self._file = self._file, None
        target = self._target
        checksum = _checksum_file(target)
        digest = self._hash.hexdigest()
        tmp_checksum: str | None = None
        try:
            _close_durably(file)
            fd, tmp_checksum = tempfile.mkstemp(
                dir=target.parent, prefix=f".{checksum.name}.", suffix=".tmp"
            )
            with os.fdopen(fd, "wb") as sums:
                sums.write(_checksum_line(digest, target.name))
                _close_durably(sums)
            kept = None
            with _directory_lock(target.parent, exclusive=True):
                if once and target.exists():
                    kept = _existing(target, checksum, digest, self._size)
                else:
                    # Drop the old checksum first: whatever a crash interrupts, no checksum
                    # is left beside bytes it does not describe (bytes without one read
                    # unchecked).
                    _unlink(str(checksum))
                    os.replace(self._tmp, target)
                    os.replace(tmp_checksum, checksum)
            if kept is not None:  # these very bytes are there already: nothing to publish
                _unlink(self._tmp)
                _unlink(tmp_checksum)
                self._result = kept
                return kept
            _fsync_directory(target.parent)  # so the renames survive a power cut too
        except BaseException:
            file.close()
            _unlink(self._tmp)
            if tmp_checksum is not None:
                _unlink(tmp_checksum)
            raise
        self._result = StoredArtifact(self._size, digest)
        return self._result

    def abort(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
            _unlink(self._tmp)


def _existing(target: Path, checksum: Path, digest: str, size: int) -> StoredArtifact:
    """What is at ``target`` if it is the bytes of ``digest``; else ArtifactExistsError."""
    expected = _read_checksum(checksum) if checksum.exists() else None
    if expected is None:
        with open(target, "rb") as handle:
            expected = _sha256_of(handle, target.stat().st_size)
    if expected.hex() != digest:
        raise ArtifactExistsError(
            f"other bytes are saved at {target.name} already (sha256 {expected.hex()[:16]}...): "
            "version bytes are written once; register a new version instead"
        )
    return StoredArtifact(size, digest)


def _close_durably(file: IO[bytes]) -> None:
    file.flush()
    os.fsync(file.fileno())
    file.close()


def _fsync_directory(directory: Path) -> None:
    if os.name != "posix":  # directories cannot be opened for fsync on Windows
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# Files written by flowplex before checksums moved beside them end with this marker and the
# sha256 of the bytes before it. A file without a checksum beside it that ends so (and whose
# hash matches) is read without its trailer.
_EARLIER_MAGIC = b"\x00flowplex-sha256"
_TRAILER = len(_EARLIER_MAGIC) + 32


def _earlier_trailer(handle: IO[bytes], size: int) -> bytes | None:
    """The sha256 an earlier-format trailer holds, if the file ends with one."""
    if size < _TRAILER:
        return None
    handle.seek(size - _TRAILER)
    tail = handle.read(_TRAILER)
    return tail[len(_EARLIER_MAGIC) :] if tail.startswith(_EARLIER_MAGIC) else None


def _sha256_of(handle: IO[bytes], size: int) -> bytes:
    handle.seek(0)
    digest = hashlib.sha256()
    remaining = size
    while remaining > 0 and (piece := handle.read(min(CHUNK_SIZE, remaining))):
        digest.update(piece)
        remaining -= len(piece)
    return digest.digest()


class _FileReader(ArtifactReader):
    def __init__(self, handle: IO[bytes], target: Path, expected: bytes | None) -> None:
        self._handle = handle
        self._target = target
        size = os.fstat(handle.fileno()).st_size
        if expected is None:
            trailer = _earlier_trailer(handle, size)
            if trailer is not None:
                size -= _TRAILER
            # No checksum beside the file: hash it now, so that ``info`` is known before the
            # bytes are streamed and a change while they are read is still noticed.
            expected = _sha256_of(handle, size)
            if trailer is not None and trailer != expected:
                # The trailer's end looked right but the hash does not: the bytes are whole.
                size += _TRAILER
                expected = _sha256_of(handle, size)
        self._expected = expected
        self.info = StoredArtifact(size, expected.hex())

    def _corrupt(self, why: str) -> CorruptArtifactError:
        return CorruptArtifactError(f"the artifact file {self._target} is corrupted: {why}")

    def __iter__(self) -> Iterator[bytes]:
        self._handle.seek(0)
        digest = hashlib.sha256()
        remaining = self.info.size
        while remaining > 0:
            chunk = self._handle.read(min(CHUNK_SIZE, remaining))
            if not chunk:
                raise self._corrupt("it ended early")
            remaining -= len(chunk)
            digest.update(chunk)
            if remaining == 0 and digest.digest() != self._expected:
                raise self._corrupt("its bytes do not match their sha256")
            yield chunk
        if self.info.size == 0 and digest.digest() != self._expected:
            raise self._corrupt("its bytes do not match their sha256")

    def verify(self) -> None:
        for _ in self:
            pass

    def close(self) -> None:
        self._handle.close()


class MemorySaver(Saver):
    """Keeps bytes in this process's memory: the in-memory twin of :class:`FileSaver`, for
    tests and throwaway stores. Same contract: atomic commits, hashes checked on read."""

    def __init__(self) -> None:
        self._blobs: dict[tuple[str, ...], tuple[bytes, bytes]] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"MemorySaver({len(self._blobs)} artifacts)"

    def open_writer(self, path: str) -> ArtifactWriter:
        """See :meth:`Saver.open_writer`."""
        return _MemoryWriter(self, _segments(path))

    def open_reader(self, path: str) -> ArtifactReader:
        """See :meth:`Saver.open_reader`."""
        with self._lock:
            found = self._blobs.get(_segments(path))
        if found is None:
            raise ArtifactNotFoundError(f"no bytes saved at {path}")
        return _MemoryReader(path, *found)

    def exists(self, path: str) -> bool:
        """See :meth:`Saver.exists`."""
        with self._lock:
            return _segments(path) in self._blobs

    def corrupt(self, path: str) -> None:
        """Flip a bit of the bytes at ``path`` (tests use it to check that reads notice)."""
        key = _segments(path)
        with self._lock:
            data, digest = self._blobs[key]
            self._blobs[key] = (bytes([data[0] ^ 1]) + data[1:] if data else b"\0", digest)

    def _publish(
        self, key: tuple[str, ...], data: bytes, digest: bytes, *, once: bool = False
    ) -> None:
        with self._lock:
            found = self._blobs.get(key)
            if once and found is not None:
                if found[1] != digest:
                    raise ArtifactExistsError(
                        f"other bytes are saved at {'/'.join(key)} already: version bytes "
                        "are written once; register a new version instead"
                    )
                return
            self._blobs[key] = (data, digest)


class _MemoryWriter(ArtifactWriter):
    def __init__(self, saver: MemorySaver, key: tuple[str, ...]) -> None:
        self._saver = saver
        self._key = key
        self._chunks: list[bytes] | None = []
        self._result: StoredArtifact | None = None

    def write(self, chunk: bytes) -> None:
        if self._chunks is None:
            raise InvalidRequestError(f"the writer of {'/'.join(self._key)} is already closed")
        self._chunks.append(bytes(check_chunk(chunk)))

    def commit(self) -> StoredArtifact:
        if self._result is not None:
            return self._result
        if self._chunks is None:
            raise InvalidRequestError(f"the writer of {'/'.join(self._key)} was aborted")
        return self._commit(once=False)

    def commit_once(self) -> StoredArtifact:
        if self._result is not None:
            return self._result
        if self._chunks is None:
            raise InvalidRequestError(f"the writer of {'/'.join(self._key)} was aborted")
        return self._commit(once=True)

    def _commit(self, *, once: bool) -> StoredArtifact:
        assert self._chunks is not None
        data = b"".join(self._chunks)
        self._chunks = None
        digest = hashlib.sha256(data).digest()
        self._saver._publish(self._key, data, digest, once=once)
        self._result = StoredArtifact(len(data), digest.hex())
        return self._result

    def abort(self) -> None:
        self._chunks = None


class _MemoryReader(ArtifactReader):
    def __init__(self, path: str, data: bytes, digest: bytes) -> None:
        self._path = path
        self._data = data
        self._digest = digest
        self.info = StoredArtifact(len(data), digest.hex())

    def __iter__(self) -> Iterator[bytes]:
        if hashlib.sha256(self._data).digest() != self._digest:
            raise CorruptArtifactError(
                f"the artifact at {self._path} is corrupted: its bytes do not match their sha256"
            )
        view = memoryview(self._data)
        for start in range(0, len(view), CHUNK_SIZE):
            yield bytes(view[start : start + CHUNK_SIZE])

    def verify(self) -> None:
        for _ in self:
            pass

    def close(self) -> None:
        """Nothing to release."""


def check_chunk(chunk: object) -> bytes | bytearray | memoryview:
    """``chunk`` if it is bytes-like, else :class:`InvalidRequestError` (``bytes(3)`` would
    silently be three zero bytes, and iterating over bytes gives ints)."""
    if not isinstance(chunk, (bytes, bytearray, memoryview)):
        raise InvalidRequestError(
            f"a chunk of artifact bytes must be bytes, got {type(chunk).__name__} (pass an "
            f"iterable of bytes chunks, e.g. [data])"
        )
    return chunk


def _segments(path: str) -> tuple[str, ...]:
    """The segments of an artifact path; refuses paths that could escape a root."""
    if not isinstance(path, str) or not path.strip("/"):
        raise InvalidRequestError(f"invalid artifact path {path!r}")
    parts = tuple(path.strip("/").split("/"))
    if any(part in {"", ".", ".."} or "\x00" in part for part in parts):
        raise InvalidRequestError(
            f"invalid artifact path {path!r}: empty, '.' or '..' segments are not allowed"
        )
    return parts


def _unlink(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
