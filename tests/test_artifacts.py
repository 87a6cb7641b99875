"""flowplex.artifacts without HTTP: versions, versioned fields, savers, the store on SQL, and
pipelines through the in-process client. (``test_artifacts_http.py`` runs the reference's
scenarios over HTTP against real servers.)"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

import flowplex.artifacts as art
from flowplex.artifacts import (
    ArtifactNotFoundError,
    CorruptArtifactError,
    FileSaver,
    InvalidRequestError,
    LoadableOp,
    NotRegisteredError,
    Op,
    OpStore,
    Pipeline,
    Version,
    VersionedField,
    VersionedFieldDict,
    VersionError,
    VersionNumber,
    VersionType,
    version_of,
)
from flowplex.errors import BackendError, ConfigurationError, FlowplexError

EXPORTS = [
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


def test_exports_are_pinned_and_documented() -> None:
    assert sorted(art.__all__) == sorted(EXPORTS)
    for name in art.__all__:
        obj = getattr(art, name)
        if name != "EMPTY_HASH":
            assert obj.__doc__, f"flowplex.artifacts.{name} has no docstring"


def test_import_is_light_until_the_store_is_used() -> None:
    code = (
        "import sys, flowplex.artifacts as a, flowplex.cli\n"
        "heavy = ('sqlalchemy', 'fastapi', 'httpx', 'uvicorn')\n"
        "print(sorted(m for m in heavy if m in sys.modules))\n"
        "a.OpStore\n"
        "print('sqlalchemy' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split("\n")[:2] == ["[]", "True"]


def test_errors_are_flowplex_errors() -> None:
    for name in ("ArtifactError", "InvalidRequestError", "NotRegisteredError", "VersionError"):
        assert issubclass(getattr(art, name), FlowplexError)
    assert issubclass(art.OpStoreUnavailableError, BackendError)
    assert issubclass(InvalidRequestError, ValueError)


# -- versions ------------------------------------------------------------------------------


def test_str_parse_round_trip_and_equality() -> None:
    v = Version()
    text = str(v)
    assert text.startswith("da39a3ee5e6b4b0d3255bfef95601890afd80709.")
    assert " " in text.split("_", 1)[1]  # the seed's "YYYY-MM-DD HH:MM:SS.ffffff"
    parsed = Version.parse(text)
    assert parsed == v
    assert parsed.creation_time == v.creation_time
    assert str(parsed) == text


def test_two_new_versions_are_equal_and_neither_is_greater() -> None:
    a, b = Version(), Version()
    assert a == b and hash(a) == hash(b)
    assert not a > b and not b > a
    assert a >= b and a <= b


def test_sum_differs_and_ordering_follows_creation_time() -> None:
    a = Version()
    w = Version.atomic(VersionType.MINOR, "x")
    total = a + w
    assert total not in (a, w)
    older = Version(total.major, total.minor, total.patch, datetime(2020, 1, 1, tzinfo=UTC))
    assert older == total  # equality is on hashes only
    newer = Version(w.major, w.minor, w.patch, datetime(2021, 1, 1, tzinfo=UTC))
    assert newer > older and older < newer
    assert max([older, newer]) is newer


@pytest.mark.parametrize(
    "text",
    [
        "",
        "not a version",
        "da39.da39.da39_2020-01-01 00:00:00.000000",
        f"{'g' * 40}.{'0' * 40}.{'0' * 40}_2020-01-01 00:00:00.000000",
        f"{'0' * 40}.{'0' * 40}.{'0' * 40}_yesterday",
        f"{'0' * 40}.{'0' * 40}.{'0' * 40}",
    ],
)
def test_parse_refuses_malformed_strings(text: str) -> None:
    with pytest.raises(InvalidRequestError, match="invalid"):
        Version.parse(text)


def test_parse_accepts_seed_times_without_microseconds() -> None:
    v = Version.parse(f"{'a' * 40}.{'b' * 40}.{'c' * 40}_2026-11-22 11:15:18")
    assert v.creation_time == datetime(2026, 11, 22, 11, 15, 18, tzinfo=UTC)


def test_str_leaves_out_zero_microseconds_like_the_reference() -> None:
    # The reference names artifact files with str() of the naive datetime: no ".000000".
    whole = Version(creation_time=datetime(2020, 1, 2, 3, 4, 5, tzinfo=UTC))
    assert str(whole).endswith("_2020-01-02 03:04:05")
    assert Version.parse(str(whole)).creation_time == whole.creation_time


def test_str_parse_round_trip_keeps_four_digit_years() -> None:
    early = Version(creation_time=datetime(999, 1, 2, 3, 4, 5, 6, tzinfo=UTC))
    assert str(early).endswith("_0999-01-02 03:04:05.000006")
    assert Version.parse(str(early)).creation_time == early.creation_time


def test_times_out_of_range_in_utc_are_invalid_requests() -> None:
    with pytest.raises(InvalidRequestError, match="out of range"):
        Version.parse(f"{'a' * 40}.{'b' * 40}.{'c' * 40}_0001-01-01 00:00:00+05:00")


def test_names_longer_than_a_file_name_are_refused(tmp_path: Path) -> None:
    store = OpStore(FileSaver(tmp_path), "sqlite://")
    try:
        with pytest.raises(InvalidRequestError, match="400 bytes in UTF-8"):
            store.register_valid_link(None, "é" * 200, Version())
        store.register_valid_link(None, "é" * 127, Version())  # 254 bytes: fine
        store.save_op_bytes("é" * 127, Version(), b"x")
        assert store.get_op_bytes_for_version("é" * 127, Version()) == b"x"
    finally:
        store.close()


def _prefixes(v: Version) -> tuple[str, str, str]:
    return v.major[:5], v.minor[:5], v.patch[:5]


def test_reference_hash_prefix_table() -> None:
    class Empty(art.Versioned):
        pass

    class Three(art.Versioned):
        foo = VersionedField(3, VersionType.MINOR)

    class Five(art.Versioned):
        foo = VersionedField(5, VersionType.MINOR)

    assert _prefixes(Empty.__version__) == ("da39a", "da39a", "da39a")
    assert _prefixes(Three.__version__) == ("94e72", "36d3c", "94e72")
    assert _prefixes(Five.__version__) == ("94e72", "72101", "94e72")


def _class_with_dict(**overrides: Any) -> type[art.Versioned]:
    fields: dict[str, Any] = {"foo": 1, "bar": 2, "blu": VersionedField(3, VersionType.MAJOR)}
    fields.update(overrides)

    class MyVersionedClass(art.Versioned):
        versioned_dict = VersionedFieldDict(VersionType.PATCH, fields)

    return MyVersionedClass


def test_a_class_holding_a_versioned_dict_has_the_documented_hashes() -> None:
    # The reference documentation's example: each entry of the dict counts in the class's
    # version under its own key, exactly like a field of that name.
    assert _prefixes(_class_with_dict().__version__) == ("ddf7a", "1b365", "68722")
    assert _prefixes(_class_with_dict(foo=10).__version__) == ("ddf7a", "1b365", "18615")
    blu10 = _class_with_dict(blu=VersionedField(10, VersionType.MAJOR))
    assert _prefixes(blu10.__version__) == ("d5abf", "1b365", "68722")
    assert _class_with_dict().versioned_dict["foo"] == 1
    # The dict's own version is that of a class holding only it.
    assert _class_with_dict().versioned_dict.version == _class_with_dict().__version__

    class Fields(art.Versioned):
        foo = VersionedField(1, VersionType.PATCH)
        bar = VersionedField(2, VersionType.PATCH)
        blu = VersionedField(3, VersionType.MAJOR)

    assert Fields.__version__ == _class_with_dict().__version__


def test_dict_entries_and_fields_are_summed_together_in_name_order() -> None:
    class Mixed(art.Versioned):
        b_field = VersionedField("x", VersionType.MINOR)
        params = VersionedFieldDict(VersionType.MAJOR, {"c": 3, "a": 1})

    atomic = {
        "a": Version.atomic(VersionType.MAJOR, 1),
        "b_field": Version.atomic(VersionType.MINOR, "x"),
        "c": Version.atomic(VersionType.MAJOR, 3),
    }
    assert Mixed.__version__ == Version() + atomic["a"] + atomic["b_field"] + atomic["c"]
    assert Mixed.params.version_dict == {"c": atomic["c"], "a": atomic["a"]}


def test_version_dict_gives_each_entry_its_atomic_version() -> None:
    d = VersionedFieldDict(VersionType.MINOR, {"n": 3, "m": VersionedField(4, VersionType.PATCH)})
    assert d.version_dict == {
        "n": Version.atomic(VersionType.MINOR, 3),
        "m": Version.atomic(VersionType.PATCH, 4),
    }
    # As in the reference: MAJOR by default, entries also as keyword arguments.
    assert VersionedFieldDict(n=3).version_dict == {"n": Version.atomic(VersionType.MAJOR, 3)}


def test_a_dict_key_repeating_a_field_name_is_refused() -> None:
    with pytest.raises(TypeError, match="'foo' is defined twice"):

        class Clash(art.Versioned):
            foo = VersionedField(1, VersionType.MAJOR)
            params = VersionedFieldDict(VersionType.PATCH, {"foo": 2})

    with pytest.raises(TypeError, match="'x' is defined twice"):

        class TwoDicts(art.Versioned):
            a = VersionedFieldDict(x=1)
            b = VersionedFieldDict(x=2)


def test_field_changes_touch_only_their_part_and_inherited_fields_count() -> None:
    class Base(art.Versioned):
        a = VersionedField(1, VersionType.MAJOR)
        b = VersionedField(1, VersionType.PATCH)
        plain = 1

    class Child(Base):
        pass

    class PatchChanged(art.Versioned):
        a = VersionedField(1, VersionType.MAJOR)
        b = VersionedField(2, VersionType.PATCH)
        plain = 2

    class Added(Base):
        c = VersionedField(0, VersionType.MINOR)

    assert Child.__version__ == Base.__version__ == version_of(Base)
    changed = PatchChanged.__version__
    assert changed.major == Base.__version__.major and changed.minor == Base.__version__.minor
    assert changed.patch != Base.__version__.patch
    assert changed > Base.__version__
    added = Added.__version__
    assert all(
        added.part(t) != Base.__version__.part(t) for t in VersionType
    )  # adding a field changes all three

    instance = Base()
    assert instance.a == 1 and Base.a == 1
    instance.a = 5  # type: ignore[misc]  # runtime assignment: no effect on the version
    assert version_of(Base) == Base.__version__


def test_versioned_field_dict_reads_plain_values_and_refuses_bad_keys() -> None:
    d = VersionedFieldDict(VersionType.MAJOR, {"n": 3, "m": VersionedField(4, VersionType.PATCH)})
    assert dict(d) == {"n": 3, "m": 4}
    with pytest.raises(TypeError, match="strings"):
        VersionedFieldDict(VersionType.MAJOR, {1: 2})  # type: ignore[dict-item]
    with pytest.raises(TypeError):
        VersionedField(1, "major")  # type: ignore[arg-type]


# -- savers --------------------------------------------------------------------------------


@pytest.fixture(params=["file", "memory"])
def saver(request: pytest.FixtureRequest, tmp_path: Path) -> art.Saver:
    return FileSaver(tmp_path) if request.param == "file" else art.MemorySaver()


def test_saver_contract(saver: art.Saver) -> None:
    """What every saver does: round trips with hashes, atomic replacement, clear errors."""
    info = saver.save(b"hello", "/models/op/v1")
    assert info.size == 5 and info.sha256 == hashlib.sha256(b"hello").hexdigest()
    assert saver.load("/models/op/v1") == b"hello"
    assert saver.exists("/models/op/v1") and not saver.exists("/models/op/v2")
    # A writer that fails leaves the old bytes.
    with pytest.raises(RuntimeError), saver.open_writer("/models/op/v1") as writer:
        writer.write(b"half")
        raise RuntimeError("crash mid-write")
    assert saver.load("/models/op/v1") == b"hello"
    with saver.open_writer("/models/op/v1") as writer:
        for chunk in (b"new ", b"bytes"):
            writer.write(chunk)
    with saver.open_reader("/models/op/v1") as reader:
        assert reader.info.size == 9
        assert b"".join(reader) == b"new bytes"
    assert saver.save(b"", "/models/op/empty").size == 0
    assert saver.load("/models/op/empty") == b""
    with pytest.raises(ArtifactNotFoundError):
        saver.load("/models/op/never")
    for bad in ("/models/../../etc/passwd", "", "/models//x", "/models/./x"):
        with pytest.raises(InvalidRequestError):
            saver.save(b"x", bad)
    with pytest.raises(InvalidRequestError):
        saver.save("text", "/models/op/v3")  # type: ignore[arg-type]
    for chunk in (97, "text"):  # what iterating over bytes, or a str, gives
        with (
            pytest.raises(InvalidRequestError, match="must be bytes"),
            saver.open_writer("/models/op/v1") as writer,
        ):
            writer.write(chunk)  # type: ignore[arg-type]
    assert saver.load("/models/op/v1") == b"new bytes"


def test_file_saver_layout_and_corruption(tmp_path: Path) -> None:
    saver = FileSaver(tmp_path)
    data = b"x" * 5000
    saver.save(data, "/models/op/v")
    with pytest.raises(RuntimeError), saver.open_writer("/models/op/v") as writer:
        writer.write(b"half")
        raise RuntimeError("crash mid-write")
    folder = tmp_path / "models" / "op"
    assert sorted(p.name for p in folder.iterdir()) == ["v", "v.sha256"]  # no temp file
    path, sums = folder / "v", folder / "v.sha256"
    # The bytes exactly as given; the checksum beside them, in sha256sum's format.
    assert path.read_bytes() == data
    assert sums.read_text() == f"{hashlib.sha256(data).hexdigest()}  v\n"
    raw = bytearray(data)
    raw[10] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(CorruptArtifactError, match="do not match"):
        saver.load("/models/op/v")
    path.write_bytes(b"tiny")  # truncated
    with pytest.raises(CorruptArtifactError, match="do not match"):
        saver.load("/models/op/v")
    path.write_bytes(data)
    assert saver.load("/models/op/v") == data
    for damaged in ("", "not a checksum\n", "ab" * 31 + "\n", "0" * 64 + "\n" * 5000):
        sums.write_text(damaged)
        with pytest.raises(CorruptArtifactError, match=r"checksum file .* is damaged"):
            saver.load("/models/op/v")
    sums.write_text(hashlib.sha256(b"other bytes").hexdigest() + "  v\n")
    with pytest.raises(CorruptArtifactError, match="do not match"):
        saver.load("/models/op/v")
    with pytest.raises(InvalidRequestError, match="hold checksums"):
        saver.save(b"x", "/models/op/v.sha256")


def test_file_saver_reads_files_without_a_checksum(tmp_path: Path) -> None:
    # A folder the reference's FileSaver wrote: bare files, no checksums beside them.
    folder = tmp_path / "models" / "op"
    folder.mkdir(parents=True)
    (folder / "legacy").write_bytes(b"written elsewhere")
    saver = FileSaver(tmp_path)
    assert saver.exists("/models/op/legacy")
    with saver.open_reader("/models/op/legacy") as reader:
        assert reader.info.sha256 == hashlib.sha256(b"written elsewhere").hexdigest()
        assert reader.info.size == len(b"written elsewhere")
        assert b"".join(reader) == b"written elsewhere"
    # Saving again adds the checksum, and from then on reads are checked.
    saver.save(b"written here", "/models/op/legacy")
    (folder / "legacy").write_bytes(b"written HERE")
    with pytest.raises(CorruptArtifactError, match="do not match"):
        saver.load("/models/op/legacy")


def test_file_saver_reads_files_it_wrote_with_a_trailing_checksum(tmp_path: Path) -> None:
    # Earlier flowplex versions ended each file with a marker and the sha256 of the bytes.
    folder = tmp_path / "models" / "op"
    folder.mkdir(parents=True)
    data = b"kept from before" * 1000
    earlier = data + b"\x00flowplex-sha256" + hashlib.sha256(data).digest()
    (folder / "v").write_bytes(earlier)
    # A file that merely ends like a trailer keeps all its bytes.
    lookalike = b"payload" + b"\x00flowplex-sha256" + b"\x01" * 32
    (folder / "w").write_bytes(lookalike)
    saver = FileSaver(tmp_path)
    assert saver.load("/models/op/v") == data
    with saver.open_reader("/models/op/v") as reader:
        assert reader.info == art.StoredArtifact(len(data), hashlib.sha256(data).hexdigest())
    assert saver.load("/models/op/w") == lookalike


def test_file_saver_escapes_names_like_sha256sum(tmp_path: Path) -> None:
    saver = FileSaver(tmp_path)
    saver.save(b"odd", "/models/a\\b")
    line = (tmp_path / "models" / "a\\b.sha256").read_text()
    assert line == f"\\{hashlib.sha256(b'odd').hexdigest()}  a\\\\b\n"
    assert saver.load("/models/a\\b") == b"odd"


def test_file_saver_readers_never_see_a_checksum_of_other_bytes(tmp_path: Path) -> None:
    """Replacing bytes while other threads read them: each read gets the old bytes or the new
    ones, always with their own checksum (never a false corruption report)."""
    saver = FileSaver(tmp_path)
    versions = [bytes([i]) * (64 * 1024 + i) for i in range(4)]
    saver.save(versions[0], "/models/op/v")
    stop = threading.Event()
    failures: list[BaseException] = []

    def read() -> None:
        while not stop.is_set():
            try:
                assert saver.load("/models/op/v") in versions
            except BaseException as exc:  # reported by the main thread
                failures.append(exc)
                return

    readers = [threading.Thread(target=read) for _ in range(3)]
    for t in readers:
        t.start()
    try:
        for i in range(200):
            saver.save(versions[i % len(versions)], "/models/op/v")
    finally:
        stop.set()
        for t in readers:
            t.join()
    assert failures == []


def test_memory_saver_checks_hashes_too() -> None:
    saver = art.MemorySaver()
    saver.save(b"abc", "/models/op/v")
    saver.corrupt("/models/op/v")
    with pytest.raises(CorruptArtifactError, match="do not match"):
        saver.load("/models/op/v")


# -- the store (in process) ----------------------------------------------------------------


@pytest.fixture(params=["memory", "sqlite"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    if request.param == "memory":
        s = OpStore(art.MemorySaver(), "sqlite://")
    else:
        s = OpStore(FileSaver(tmp_path / "ops"), f"sqlite:///{tmp_path}/ops.db")
    yield s
    s.close()


def _bumped(base: Version, part: VersionType, tag: str) -> Version:
    return base + Version.atomic(part, tag)


def test_numbering_is_relative_to_the_latest_version(store: OpStore) -> None:
    v1 = Version()
    seq = [
        v1,
        Version(v1.major, v1.minor, "1" * 40),
        Version(v1.major, v1.minor, "2" * 40),
        Version(v1.major, "3" * 40, "2" * 40),
        Version("4" * 40, "3" * 40, "2" * 40),
    ]
    numbers = [store.register_valid_link(None, "op", v).number for v in seq]
    assert [str(n) for n in numbers] == ["1.0.0", "1.0.1", "1.0.2", "1.1.0", "2.0.0"]
    # Registering a known version again changes nothing.
    assert store.register_valid_link(None, "op", seq[1]).number == VersionNumber(1, 0, 1)
    assert [str(i.number) for i in store.get_version_numbers("op")] == [
        "1.0.0",
        "1.0.1",
        "1.0.2",
        "1.1.0",
        "2.0.0",
    ]


def test_the_store_shares_its_artifact_folder_layout_with_the_reference(tmp_path: Path) -> None:
    """Op bytes sit at ``<root>/models/<op>/<str(version)>`` holding exactly the bytes, as the
    reference's FileSaver writes them: each system reads what the other wrote."""
    store = OpStore(FileSaver(tmp_path), "sqlite://")
    try:
        ours = Version(creation_time=datetime(2020, 3, 4, 5, 6, 7, 890, tzinfo=UTC))
        theirs = Version.atomic(VersionType.MAJOR, "theirs")
        theirs = Version(theirs.major, theirs.minor, theirs.patch, datetime(2020, 3, 4, 5, 6, 8))
        store.register_valid_link(None, "op", ours)
        store.register_valid_link(None, "op", theirs)
        store.save_op_bytes("op", ours, b"saved by flowplex")
        folder = tmp_path / "models" / "op"
        empty = art.EMPTY_HASH
        mine = folder / f"{empty}.{empty}.{empty}_2020-03-04 05:06:07.000890"
        assert mine.read_bytes() == b"saved by flowplex"
        # Written the reference's way: a bare file at str(version), no checksum beside it.
        (folder / f"{theirs.major}.{theirs.minor}.{theirs.patch}_2020-03-04 05:06:08").write_bytes(
            b"saved by the reference"
        )
        assert store.get_op_bytes_for_version("op", theirs) == b"saved by the reference"
        assert store.get_op_bytes_for_version("op", ours) == b"saved by flowplex"
    finally:
        store.close()


def test_the_migration_page_examples_run(tmp_path: Path) -> None:
    from docsnippets import python_blocks

    before, after, recipe = python_blocks("From Chariots")
    assert "chariots" in before
    namespace: dict[str, Any] = {}
    exec(after.replace("/srv", str(tmp_path)), namespace)  # the page's own code
    namespace["store"].close()
    scaler = namespace["Scaler"]
    atomic = {
        "clip": Version.atomic(VersionType.PATCH, 1),
        "factor": Version.atomic(VersionType.MINOR, 3),
        "mode": Version.atomic(VersionType.MAJOR, "log"),
    }
    assert scaler.__version__ == Version() + atomic["clip"] + atomic["factor"] + atomic["mode"]

    # A folder as the reference writes it: bare files named by str(version).
    old = Version(creation_time=datetime(2020, 1, 1, 12, 0, 0, tzinfo=UTC))
    new = Version.atomic(VersionType.MAJOR, "retrained")
    new = Version(new.major, new.minor, new.patch, datetime(2020, 2, 1, 8, 30, 1, 5, tzinfo=UTC))
    folder = tmp_path / "chariots" / "ops" / "models" / "scaler"
    folder.mkdir(parents=True)
    for version, data in ((new, b"new"), (old, b"old")):
        (folder / str(version)).write_bytes(data)
    (tmp_path / "flowplex").mkdir()
    namespace = {}
    exec(recipe.replace("/srv", str(tmp_path)), namespace)  # the page's own code
    store = namespace["store"]
    try:
        assert [str(i.number) for i in store.get_version_numbers("scaler")] == ["1.0.0", "2.0.0"]
        assert store.get_op_bytes_for_version("scaler", old) == b"old"
        assert store.get_op_bytes_for_version("scaler", new) == b"new"
    finally:
        store.close()


def test_concurrent_registrations_number_uniquely(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/ops.db"
    stores = [OpStore(FileSaver(tmp_path), url) for _ in range(4)]
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            for j in range(10):
                stores[i].register_valid_link(None, "op", Version(patch=f"{i:02d}{j:038d}"))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    numbers = [i.number for i in stores[0].get_version_numbers("op")]
    assert numbers == [VersionNumber(1, 0, p) for p in range(40)]
    for s in stores:
        s.close()


def test_store_refuses_bad_input_and_changes_nothing(store: OpStore) -> None:
    with pytest.raises(InvalidRequestError):
        store.register_valid_link(None, "a/b", Version())
    with pytest.raises(InvalidRequestError):
        store.register_valid_link(None, "op", "1.0.0")  # type: ignore[arg-type]
    with pytest.raises(NotRegisteredError, match="not registered"):
        store.save_op_bytes("op", Version(), b"x")
    store.register_valid_link(None, "op", Version())
    with pytest.raises(NotRegisteredError, match=r"version .* not registered"):
        store.save_op_bytes("op", Version(major="1" * 40), b"x")
    with pytest.raises(ArtifactNotFoundError, match="no bytes were saved"):
        store.get_op_bytes_for_version("op", Version())
    assert store.get_all_versions_of_op("a") is None
    assert [str(i.number) for i in store.get_version_numbers("op")] == ["1.0.0"]


def test_unusable_databases_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="not supported"):
        OpStore(FileSaver(tmp_path), "mysql://nope")
    with pytest.raises(BackendError, match=r"127\.0\.0\.1:1"):
        OpStore(FileSaver(tmp_path), "postgresql://postgres@127.0.0.1:1/nothing")
    with pytest.raises(ConfigurationError, match="Saver"):
        OpStore(str(tmp_path), "sqlite://")  # type: ignore[arg-type]


# -- pipelines (in process) ----------------------------------------------------------------


class Counter(LoadableOp):
    """A stateful op: counts its calls."""

    def __init__(self) -> None:
        self.count = 0

    def execute(self, value: Any) -> Any:
        self.count += 1
        return self.count

    def serialize(self) -> bytes:
        return str(self.count).encode()

    def load(self, data: bytes) -> None:
        self.count = int(data)


class Scale(LoadableOp):
    """Multiplies by a trained factor; training bumps its version."""

    name = "scale"
    bump = VersionType.MAJOR

    def __init__(self) -> None:
        self.factor = 1

    def execute(self, value: Any) -> Any:
        return value * self.factor

    def train(self, factor: int) -> None:
        self.factor = factor
        self.mark_changed(self.bump, f"trained with {factor} at {datetime.now(UTC)}")

    def serialize(self) -> bytes:
        return str(self.factor).encode()

    def load(self, data: bytes) -> None:
        self.factor = int(data)


class Offset(Scale):
    """Adds a trained offset after the scale; training bumps its patch."""

    name = "offset"
    bump = VersionType.PATCH

    def execute(self, value: Any) -> Any:
        return value + self.factor


class Double(Op):
    """Not loadable."""

    def execute(self, value: Any) -> Any:
        return value * 2


def test_op_names_and_versions() -> None:
    assert Counter.name == "counter" and Double.name == "double" and Scale.name == "scale"
    op = Double()
    assert op.version == Double.__version__
    with pytest.raises(ValueError, match="more than once"):
        Pipeline("p", [Double(), Double()])
    with pytest.raises(InvalidRequestError):
        Pipeline("", [Double()])


def test_stateful_counter_continues_after_load(store: OpStore) -> None:
    client = store.client()
    app = Pipeline("count", [Counter()])
    assert [app.run(None) for _ in range(3)] == [1, 2, 3]
    app.save(client)
    fresh = Pipeline("count", [Counter()])
    assert fresh.run(None) == 1
    fresh.load(client)
    assert fresh.run(None) == 4
    assert client.pipeline_exists("count")


def test_refused_load_changes_nothing(store: OpStore) -> None:
    client = store.client()
    # As Chariots' server does at start-up: the untrained prediction pipeline is saved.
    Pipeline("pred", [Scale(), Offset()]).save(client)
    scale, offset = Scale(), Offset()
    scale.train(10)
    offset.train(1)
    Pipeline("train", [scale, offset]).save(client)

    pred = Pipeline("pred", [Scale(), Offset()])
    assert pred.run(3) == 4
    pred.load(client)
    assert pred.run(3) == 31
    assert pred.versions() == {"scale": scale.version, "offset": offset.version}

    # Retrain only the offset (a patch): the offset was validated with the scale's major.
    offset2 = Offset()
    offset2.train(2)
    Pipeline("train_offset", [offset2]).save(client)
    pred.load(client)
    assert pred.run(3) == 32

    # Retrain only the scale (a new major) without revalidating the offset: refused.
    scale2 = Scale()
    scale2.train(100)
    Pipeline("train_scale", [scale2]).save(client)
    before = pred.versions()
    with pytest.raises(VersionError, match="never validated"):
        Pipeline("pred", [Scale(), Offset()]).load(client)
    with pytest.raises(VersionError, match="never validated"):
        pred.load(client)
    assert pred.versions() == before
    assert pred.run(3) == 32  # still the old scale and offset, not a mix


def test_an_op_about_to_be_retrained_skips_the_upstream_check(store: OpStore) -> None:
    client = store.client()

    class Trainable(Offset):
        name = "trainable"
        allow_version_change = True

    Pipeline("pred", [Scale(), Offset()]).save(client)
    Pipeline("fit", [Scale(), Trainable()]).save(client)
    scale = Scale()
    scale.train(7)
    Pipeline("train_scale", [scale]).save(client)
    with pytest.raises(VersionError):
        Pipeline("pred", [Scale(), Offset()]).load(client)  # validated with the old scale...
    fit = Pipeline("fit", [Scale(), Trainable()])
    fit.load(client)  # ...but the op about to be retrained accepts the new one
    assert fit.versions()["scale"] == scale.version


def test_newer_code_keeps_the_in_memory_op(store: OpStore) -> None:
    client = store.client()
    saved = Counter()
    saved.count = 41
    Pipeline("count", [saved]).save(client)

    class CounterV2(Counter):
        name = "counter"
        layout = VersionedField(2, VersionType.MAJOR)

    fresh = Pipeline("count", [CounterV2()])
    fresh.load(client)
    assert fresh.run(None) == 1  # the stored bytes are for an older major: not loaded
    same = Pipeline("count", [Counter()])
    same.load(client)
    assert same.run(None) == 42


def test_a_pipeline_used_as_an_op_saves_and_loads_recursively(store: OpStore) -> None:
    client = store.client()
    inner = Pipeline("inner", [Counter()])
    outer = Pipeline("outer", [inner, Double()])
    assert [outer.run(None) for _ in range(3)] == [2, 4, 6]
    outer.save(client)
    assert client.pipeline_exists("inner") and client.pipeline_exists("outer")
    assert client.get_validated_links("double", "inner") == [inner.version]

    fresh = Pipeline("outer", [Pipeline("inner", [Counter()]), Double()])
    fresh.load(client)
    assert fresh.run(None) == 8  # the counter continues at 4
    assert fresh.version == outer.version


def test_a_refused_nested_load_changes_nothing_anywhere(store: OpStore) -> None:
    client = store.client()
    counter = Counter()
    counter.count = 10  # saved bytes a load would bring in
    Pipeline("pred", [counter, Pipeline("model", [Scale(), Offset()])]).save(client)
    scale = Scale()
    scale.train(5)
    Pipeline("train_scale", [scale]).save(client)  # a scale the offset never saw

    pred = Pipeline("pred", [Counter(), Pipeline("model", [Scale(), Offset()])])
    with pytest.raises(VersionError, match="'model'"):
        pred.load(client)
    # Untouched: count 1, factor 1, offset 1 (loaded, it would be 11 * 5 + 1).
    assert pred.run(3) == 2


def test_failed_apply_restores_loaded_ops(store: OpStore) -> None:
    client = store.client()

    class Fragile(Counter):
        name = "fragile"

        def load(self, data: bytes) -> None:
            if data == b"bad":
                raise ValueError("cannot load")
            super().load(data)

    first, second = Counter(), Fragile()
    first.count, second.count = 5, 7
    # The bytes of second's version are damaged in storage (they cannot be saved over).
    second.serialize = lambda: b"bad"  # type: ignore[method-assign]
    Pipeline("p", [first, second]).save(client)
    target = Pipeline("p", [Counter(), Fragile()])
    with pytest.raises(ValueError, match="cannot load"):
        target.load(client)
    assert [op.count for op in target.ops] == [0, 0]  # type: ignore[attr-defined]


def test_uploading_bytes_instead_of_chunks_is_refused(store: OpStore) -> None:
    client = store.client()
    client.register_valid_link(None, "op", Version())
    client.save_op_bytes("op", Version(), b"old")
    with pytest.raises(InvalidRequestError, match="iterable of bytes chunks"):
        client.upload_op_bytes("op", Version(), b"abc")  # type: ignore[arg-type]
    assert client.get_op_bytes_for_version("op", Version()) == b"old"


def test_save_and_load_artifact_helpers(store: OpStore) -> None:
    client = store.client()
    v1 = art.save_artifact(client, "vocab", b"a b c")
    assert art.save_artifact(client, "vocab", b"a b c") == v1  # same content, same version
    v2 = art.save_artifact(client, "vocab", b"a b c d")
    assert [str(i.number) for i in client.get_version_numbers("vocab")] == ["1.0.0", "1.0.1"]
    assert art.load_artifact(client, "vocab") == (v2, b"a b c d")
    assert art.load_artifact(client, "vocab", v1)[1] == b"a b c"
    with pytest.raises(NotRegisteredError):
        art.load_artifact(client, "nothing")
    # Content saved before but replaced since comes back as a new version: the latest
    # version is always what was saved last.
    v3 = art.save_artifact(client, "vocab", b"a b c")
    assert v3 not in (v1, v2)
    assert art.load_artifact(client, "vocab") == (v3, b"a b c")
    assert art.save_artifact(client, "vocab", b"a b c") == v3
    assert [str(i.number) for i in client.get_version_numbers("vocab")] == [
        "1.0.0",
        "1.0.1",
        "1.0.2",
    ]
    model = art.save_artifact(client, "model", b"m", validated_with=[("vocab", v2)])
    assert client.get_validated_links("model", "vocab") == [v2]
    assert model.creation_time <= datetime.now(UTC) + timedelta(seconds=1)


def test_connect_embedded_default_uses_flowplex_home(tmp_path: Path) -> None:
    with art.connect() as client:
        art.save_artifact(client, "thing", b"data")
    with art.connect() as client:
        assert art.load_artifact(client, "thing")[1] == b"data"
    home = Path(str(tmp_path) + "/.flowplex")
    assert (home / "flowplex.db").is_file()
    assert any((home / "artifacts" / "models" / "thing").iterdir())
