"""flowplex.config: settings, YAML loading, deep merge, class paths and JSON checks."""

from __future__ import annotations

import copy
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from flowplex.config import (
    Settings,
    deep_merge,
    ensure_json_serializable,
    load_yaml,
    require_keys,
    resolve_class_path,
)
from flowplex.errors import ClassPathError, ConfigurationError, FlowStateError
from flowplex.examples import ReverseNumberAtomicFlow

# --- Settings.from_env ------------------------------------------------------------------------


def test_settings_defaults() -> None:
    settings = Settings.from_env({})

    assert settings == Settings(
        home=Path(".flowplex"), db_url="sqlite:///.flowplex/flowplex.db", log_level="WARNING"
    )
    assert isinstance(settings.home, Path)


def test_settings_home_changes_the_default_db_path() -> None:
    settings = Settings.from_env({"FLOWPLEX_HOME": "/srv/nodes/a"})

    assert settings.home == Path("/srv/nodes/a")
    assert settings.db_url == "sqlite:////srv/nodes/a/flowplex.db"


def test_settings_db_overrides_the_default() -> None:
    settings = Settings.from_env(
        {"FLOWPLEX_HOME": "/srv/nodes/a", "FLOWPLEX_DB": "postgresql://db.example/flowplex"}
    )

    assert settings.db_url == "postgresql://db.example/flowplex"
    assert settings.home == Path("/srv/nodes/a")


def test_settings_empty_values_fall_back_to_defaults() -> None:
    settings = Settings.from_env({"FLOWPLEX_HOME": "", "FLOWPLEX_DB": "", "FLOWPLEX_LOG_LEVEL": ""})

    assert settings == Settings.from_env({})


def test_settings_log_level_is_case_insensitive() -> None:
    assert Settings.from_env({"FLOWPLEX_LOG_LEVEL": "debug"}).log_level == "DEBUG"


def test_settings_bad_log_level_names_the_variable() -> None:
    with pytest.raises(ConfigurationError, match="FLOWPLEX_LOG_LEVEL") as info:
        Settings.from_env({"FLOWPLEX_LOG_LEVEL": "chatty"})
    assert "'CHATTY'" in str(info.value)


def test_settings_explicit_environ_ignores_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLOWPLEX_DB", "memory://")
    monkeypatch.setenv("FLOWPLEX_LOG_LEVEL", "ERROR")

    assert Settings.from_env({}).db_url == "sqlite:///.flowplex/flowplex.db"
    assert Settings.from_env().db_url == "memory://"
    assert Settings.from_env().log_level == "ERROR"


def test_settings_arguments_beat_the_environment() -> None:
    env = {"FLOWPLEX_HOME": "/e", "FLOWPLEX_DB": "postgresql://h/db", "FLOWPLEX_LOG_LEVEL": "ERROR"}
    given = Settings.from_env(env, home="/a", db="sqlite:///x.db", log_level="debug")
    assert given == Settings(home=Path("/a"), db_url="sqlite:///x.db", log_level="DEBUG")
    # FLOWPLEX_DB beats the home's file, even when the home is given.
    assert Settings.from_env(env, home="/a").db_url == "postgresql://h/db"
    assert (
        Settings.from_env({"FLOWPLEX_HOME": "/e"}, home="/a").db_url == "sqlite:////a/flowplex.db"
    )
    assert Settings.from_env({}, home="~/n").home == Path.home() / "n"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"db": "node.db"}, "a database URL looks like"),
        ({"home": " "}, "home directory must not be empty"),
        ({"log_level": "chatty"}, "the log level must be one of"),
    ],
)
def test_settings_arguments_are_checked(kwargs: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        Settings.from_env({}, **kwargs)


# --- load_yaml --------------------------------------------------------------------------------


def test_load_yaml_mapping(tmp_path: Path) -> None:
    path = tmp_path / "flow.yaml"
    path.write_text("name: reverse\nlimits:\n  retries: 3\n  tags: [a, b]\n", encoding="utf-8")

    assert load_yaml(path) == {"name": "reverse", "limits": {"retries": 3, "tags": ["a", "b"]}}
    assert load_yaml(str(path)) == load_yaml(path)


@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n"])
def test_load_yaml_empty_file_is_an_empty_dict(tmp_path: Path, text: str) -> None:
    path = tmp_path / "empty.yaml"
    path.write_text(text, encoding="utf-8")

    assert load_yaml(path) == {}


def test_load_yaml_missing_file_names_the_path(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"

    with pytest.raises(ConfigurationError, match="not found") as info:
        load_yaml(path)
    assert str(path) in str(info.value)


def test_load_yaml_invalid_yaml_names_the_path(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("name: [unclosed\n", encoding="utf-8")

    with pytest.raises(ConfigurationError, match="invalid YAML") as info:
        load_yaml(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize(
    ("text", "type_name"), [("- a\n- b\n", "list"), ("just text\n", "str"), ("42\n", "int")]
)
def test_load_yaml_non_mapping_names_the_path(tmp_path: Path, text: str, type_name: str) -> None:
    path = tmp_path / "top.yaml"
    path.write_text(text, encoding="utf-8")

    with pytest.raises(ConfigurationError, match="mapping at the top level") as info:
        load_yaml(path)
    assert str(path) in str(info.value)
    assert f"not {type_name}" in str(info.value)


def test_load_yaml_directory_is_unreadable(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="cannot read YAML file") as info:
        load_yaml(tmp_path)
    assert str(tmp_path) in str(info.value)


def test_load_yaml_non_utf8_file_raises_configuration_error(tmp_path: Path) -> None:
    # The docstring promises a ConfigurationError naming the file for any unreadable file.
    path = tmp_path / "latin1.yaml"
    path.write_bytes("name: caf\u00e9\n".encode("latin-1"))

    with pytest.raises(ConfigurationError) as info:
        load_yaml(path)
    assert str(path) in str(info.value)


# --- deep_merge -------------------------------------------------------------------------------


def test_deep_merge_merges_nested_mappings() -> None:
    base = {"name": "a", "limits": {"retries": 3, "timeout": {"connect": 1, "read": 5}}}
    override = {"limits": {"timeout": {"read": 30}}, "extra": True}

    assert deep_merge(base, override) == {
        "name": "a",
        "limits": {"retries": 3, "timeout": {"connect": 1, "read": 30}},
        "extra": True,
    }


def test_deep_merge_replaces_lists_and_scalars() -> None:
    base = {"tags": ["a", "b"], "limits": {"n": 1}, "x": {"nested": 1}}
    override = {"tags": ["c"], "limits": 5, "x": None}

    assert deep_merge(base, override) == {"tags": ["c"], "limits": 5, "x": None}


def test_deep_merge_mapping_replaces_scalar() -> None:
    assert deep_merge({"a": 1}, {"a": {"b": 2}}) == {"a": {"b": 2}}


def test_deep_merge_does_not_mutate_inputs() -> None:
    base = {"limits": {"retries": 3, "tags": ["a"]}, "keep": [1]}
    override = {"limits": {"retries": 4, "new": {"deep": [2]}}, "keep": [9]}
    base_before, override_before = copy.deepcopy(base), copy.deepcopy(override)

    deep_merge(base, override)

    assert base == base_before
    assert override == override_before


def test_deep_merge_result_shares_no_mutable_objects() -> None:
    base = {"limits": {"tags": ["a"]}, "only_base": {"x": [1]}}
    override = {"limits": {"extra": {"y": [2]}}, "only_override": [3]}

    merged = deep_merge(base, override)
    merged["limits"]["tags"].append("mutated")
    merged["only_base"]["x"].append("mutated")
    merged["limits"]["extra"]["y"].append("mutated")
    merged["only_override"].append("mutated")

    assert base == {"limits": {"tags": ["a"]}, "only_base": {"x": [1]}}
    assert override == {"limits": {"extra": {"y": [2]}}, "only_override": [3]}
    assert merged["limits"] is not base["limits"]
    assert merged["limits"]["extra"] is not override["limits"]["extra"]


# --- resolve_class_path -----------------------------------------------------------------------


@pytest.fixture
def make_module(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[[str, str], None]]:
    """Write a top-level module into tmp_path, on sys.path; unload it after the test."""
    names: list[str] = []

    def make(name: str, source: str) -> None:
        (tmp_path / f"{name}.py").write_text(textwrap.dedent(source), encoding="utf-8")
        names.append(name)
        monkeypatch.syspath_prepend(str(tmp_path))  # also invalidates the import caches

    yield make
    for name in names:
        sys.modules.pop(name, None)


@pytest.mark.parametrize(
    "path",
    [
        "flowplex.examples.ReverseNumberAtomicFlow",
        "flowplex.examples.reverse_number.ReverseNumberAtomicFlow",
        "  flowplex.examples.ReverseNumberAtomicFlow  ",
    ],
)
def test_resolve_package_class_path(path: str) -> None:
    assert resolve_class_path(path) is ReverseNumberAtomicFlow


def test_resolve_module_on_sys_path(make_module: Callable[[str, str], None]) -> None:
    make_module("fp_cfg_plain_module", "class Greeter:\n    greeting = 'hi'\n")

    cls = resolve_class_path("fp_cfg_plain_module.Greeter")

    assert cls.__name__ == "Greeter"
    assert cls.__module__ == "fp_cfg_plain_module"
    assert cls.greeting == "hi"


def test_resolve_nested_attribute(make_module: Callable[[str, str], None]) -> None:
    make_module(
        "fp_cfg_nested_module",
        """
        class Outer:
            class Inner:
                marker = 'inner'
        """,
    )

    inner = resolve_class_path("fp_cfg_nested_module.Outer.Inner")

    assert inner.__qualname__ == "Outer.Inner"
    assert inner.marker == "inner"


def test_missing_top_module_is_named() -> None:
    with pytest.raises(ClassPathError, match="module 'fp_cfg_no_such_module' not found"):
        resolve_class_path("fp_cfg_no_such_module.SomeFlow")


def test_missing_top_package_of_a_deep_path_is_named() -> None:
    with pytest.raises(ClassPathError, match="module 'fp_cfg_no_such_pkg' not found"):
        resolve_class_path("fp_cfg_no_such_pkg.sub.SomeFlow")


def test_missing_submodule_is_named() -> None:
    with pytest.raises(ClassPathError, match=r"module 'flowplex\.nope' not found") as info:
        resolve_class_path("flowplex.nope.Class")
    assert "'flowplex.nope.Class'" in str(info.value)


def test_missing_class_names_class_and_module() -> None:
    with pytest.raises(ClassPathError) as info:
        resolve_class_path("flowplex.examples.NoSuchFlow")
    message = str(info.value)
    assert "class 'NoSuchFlow' not found in module 'flowplex.examples'" in message


def test_missing_class_in_module_on_sys_path(make_module: Callable[[str, str], None]) -> None:
    make_module("fp_cfg_empty_module", "VALUE = 1\n")

    with pytest.raises(ClassPathError, match="class 'Missing' not found") as info:
        resolve_class_path("fp_cfg_empty_module.Missing")
    assert "module 'fp_cfg_empty_module'" in str(info.value)


def test_module_with_a_broken_import_failed_to_import(
    make_module: Callable[[str, str], None],
) -> None:
    make_module("fp_cfg_broken_module", "import fp_cfg_missing_dependency\n\nclass Flow: ...\n")

    with pytest.raises(ClassPathError, match="failed to import") as info:
        resolve_class_path("fp_cfg_broken_module.Flow")
    message = str(info.value)
    assert "'fp_cfg_broken_module'" in message
    assert "fp_cfg_missing_dependency" in message
    assert "not found" not in message
    assert isinstance(info.value.__cause__, ModuleNotFoundError)


@pytest.mark.parametrize("path", ["", "   ", 3, None, b"a.B"])
def test_class_path_must_be_a_non_empty_string(path: Any) -> None:
    with pytest.raises(ClassPathError, match="must be a non-empty string") as info:
        resolve_class_path(path)
    assert repr(path) in str(info.value)


@pytest.mark.parametrize("path", ["Class", "a..b", ".a.B", "a.B.", "a.1B", "a-b.C"])
def test_malformed_class_paths(path: str) -> None:
    with pytest.raises(ClassPathError, match="invalid class path") as info:
        resolve_class_path(path)
    assert repr(path) in str(info.value)


def test_class_path_error_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError):
        resolve_class_path("Class")


# --- require_keys -----------------------------------------------------------------------------


def test_require_keys_passes_when_all_present() -> None:
    require_keys({"name": "x", "flow_class": "a.B", "extra": 1}, ["name", "flow_class"], "flow")


def test_require_keys_names_every_missing_key() -> None:
    config = {"name": "x", "description": None}

    with pytest.raises(ConfigurationError) as info:
        require_keys(config, ["name", "flow_class", "description", "version"], "flow 'x'")
    message = str(info.value)
    assert message == (
        "flow 'x' is missing required config key(s): 'flow_class', 'description', 'version'."
    )
    assert "'name'" not in message


# --- ensure_json_serializable -----------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        None,
        True,
        0,
        -3.5,
        "text",
        [],
        {},
        {"history": [1, "two", 3.0, None, False, {"nested": [[]]}]},
        ("tuple", "is", "a", "list"),
    ],
)
def test_ensure_json_serializable_accepts_json_values(value: Any) -> None:
    ensure_json_serializable(value, "flow_state")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (
            {"history": [1, 2, {"a", "b"}]},
            "flow_state['history'][2] is not JSON-serializable (a set)",
        ),
        ({1: "one"}, "flow_state key 1 is not JSON-serializable (a int)"),
        ({"a": {("x",): 1}}, "flow_state['a'] key ('x',) is not JSON-serializable (a tuple)"),
        (object(), "flow_state is not JSON-serializable (a object)"),
        ({"blob": b"raw"}, "flow_state['blob'] is not JSON-serializable (a bytes)"),
    ],
)
def test_ensure_json_serializable_names_the_offending_path(value: Any, expected: str) -> None:
    with pytest.raises(FlowStateError) as info:
        ensure_json_serializable(value, "flow_state")
    assert expected in str(info.value)


def test_ensure_json_serializable_reports_the_first_offender() -> None:
    value = {"ok": [1, 2], "bad": [3, {4}], "worse": object()}

    with pytest.raises(FlowStateError, match=r"flow_state\['bad'\]\[1\] is not"):
        ensure_json_serializable(value, "flow_state")


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_ensure_json_serializable_rejects_non_finite_floats(bad: float) -> None:
    with pytest.raises(FlowStateError, match="flow_state"):
        ensure_json_serializable(bad, "flow_state")


def test_ensure_json_serializable_names_the_path_of_a_nested_nan() -> None:
    # The docstring promises the message names the first offending path, as for other values.
    with pytest.raises(FlowStateError) as info:
        ensure_json_serializable({"scores": [1.0, float("nan")]}, "flow_state")
    assert "flow_state['scores'][1]" in str(info.value)
