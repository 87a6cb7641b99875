"""Where op bytes live: the :class:`Saver` seam and :class:`FileSaver`.

A saver stores bytes under a path such as ``/models/<op>/<version>``. Writers stream
(``write`` chunk after chunk, then ``commit``) and readers stream back, so an artifact never
has to sit in memory whole; ``save``/``load`` are the whole-bytes conveniences the seed's
base64 routes use.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Self

from ._errors import ArtifactNotFoundError, CorruptArtifactError, InvalidRequestError

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

# FileSaver's trailer: a marker and the sha256 of everything before it. One file holds both,
# so the one os.replace that publishes the bytes publishes their hash with them.
_MAGIC = b"\x00flowplex-sha256"
_TRAILER = len(_MAGIC) + 32


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
        """Store ``serialized_object`` at ``path`` (the seed's argument order)."""
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
    """Stores each path as a file under ``root`` (``/models/a/b`` is ``root/models/a/b``).

    Writes go to a temporary file in the same directory, are flushed to disk, then renamed over
    the target, so readers see the old bytes or the new ones, never a mix. The sha256 of the
    bytes is stored in a 48-byte trailer of the same file and checked when they are read.
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        if not isinstance(root, (str, os.PathLike)) or not str(root):
            raise InvalidRequestError(f"FileSaver needs a root directory, got {root!r}")
        self.root = Path(root).expanduser().resolve()

    def __repr__(self) -> str:
        return f"FileSaver({str(self.root)!r})"

    def file_for(self, path: str) -> Path:
        """The file that holds ``path``; refuses paths that would leave the root."""
        return self.root.joinpath(*_segments(path))

    def open_writer(self, path: str) -> ArtifactWriter:
        """See :meth:`Saver.open_writer`."""
        return _FileWriter(self.file_for(path))

    def open_reader(self, path: str) -> ArtifactReader:
        """See :meth:`Saver.open_reader`."""
        target = self.file_for(path)
        try:
            handle = target.open("rb")
        except FileNotFoundError:
            raise ArtifactNotFoundError(f"no bytes saved at {path}") from None
        try:
            return _FileReader(handle, target)
        except BaseException:
            handle.close()
            raise

    def exists(self, path: str) -> bool:
        """See :meth:`Saver.exists`."""
        return self.file_for(path).is_file()


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
        if self._result is not None:
            return self._result
        if self._file is None:
            raise InvalidRequestError(f"the writer of {self._target} was aborted")
        file, self._file = self._file, None
        try:
            file.write(_MAGIC + self._hash.digest())
            file.flush()
            os.fsync(file.fileno())
            file.close()
            os.replace(self._tmp, self._target)
            _fsync_directory(self._target.parent)  # so the rename survives a power cut too
        except BaseException:
            file.close()
            _unlink(self._tmp)
            raise
        self._result = StoredArtifact(self._size, self._hash.hexdigest())
        return self._result

    def abort(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
            _unlink(self._tmp)


def _fsync_directory(directory: Path) -> None:
    if os.name != "posix":  # directories cannot be opened for fsync on Windows
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class _FileReader(ArtifactReader):
    def __init__(self, handle: IO[bytes], target: Path) -> None:
        self._handle = handle
        self._target = target
        total = os.fstat(handle.fileno()).st_size
        if total < _TRAILER:
            raise self._corrupt("it is shorter than its content-hash trailer")
        handle.seek(total - _TRAILER)
        trailer = handle.read(_TRAILER)
        if not trailer.startswith(_MAGIC):
            raise self._corrupt("its content-hash trailer is missing or damaged")
        self._expected = trailer[len(_MAGIC) :]
        self.info = StoredArtifact(total - _TRAILER, self._expected.hex())

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

    def _publish(self, key: tuple[str, ...], data: bytes, digest: bytes) -> None:
        with self._lock:
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
        data = b"".join(self._chunks)
        self._chunks = None
        digest = hashlib.sha256(data).digest()
        self._saver._publish(self._key, data, digest)
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
