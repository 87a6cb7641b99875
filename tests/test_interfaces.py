"""flowplex.flows._interfaces: parsing and applying input/output key interfaces."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from flowplex.errors import FlowDefinitionError, InterfaceError
from flowplex.flows._interfaces import KeyInterface
from flowplex.messages import FlowMessage

WHAT = "ReverseFlow.input_interface"


def _parse(spec: Any) -> KeyInterface:
    interface = KeyInterface.parse(spec, WHAT)
    assert interface is not None
    return interface


@pytest.mark.parametrize("spec", [None, [], {}, ()])
def test_empty_declarations_mean_no_interface(spec: Any) -> None:
    assert KeyInterface.parse(spec, WHAT) is None


# --- list form --------------------------------------------------------------------------------


def test_list_form_selects_the_keys() -> None:
    interface = _parse(["number", "base"])

    assert interface == KeyInterface(select=("number", "base"))
    assert interface.apply({"number": 12, "base": 10, "noise": "x"}, WHAT) == {
        "number": 12,
        "base": 10,
    }


def test_list_form_requires_the_keys() -> None:
    interface = _parse(["number", "base"])

    with pytest.raises(InterfaceError, match=r"required key\(s\) \['base'\] missing") as info:
        interface.apply({"number": 12, "noise": "x"}, WHAT)
    message = str(info.value)
    assert message.startswith(WHAT)
    assert "['noise', 'number']" in message


def test_interface_error_is_not_a_definition_error() -> None:
    with pytest.raises(InterfaceError) as info:
        _parse(["number"]).apply({}, WHAT)
    assert not isinstance(info.value, FlowDefinitionError)


def test_a_bare_key_is_a_list_of_one() -> None:
    interface = _parse("number")

    assert interface == KeyInterface(select=("number",))
    assert interface.apply({"number": 12, "noise": "x"}, WHAT) == {"number": 12}


# --- mapping form -----------------------------------------------------------------------------


def test_each_mapping_operation_alone() -> None:
    data = {"a": 1, "b": 2}

    assert _parse({"keys_to_rename": {"a": "x"}}).apply(data, WHAT) == {"x": 1, "b": 2}
    assert _parse({"keys_to_copy": {"a": "x"}}).apply(data, WHAT) == {"a": 1, "b": 2, "x": 1}
    assert _parse({"keys_to_set": {"b": 0, "c": [3]}}).apply(data, WHAT) == {
        "a": 1,
        "b": 0,
        "c": [3],
    }
    assert _parse({"keys_to_select": ["b"]}).apply(data, WHAT) == {"b": 2}
    assert _parse({"keys_to_delete": ["a", "zz"]}).apply(data, WHAT) == {"b": 2}


def test_mapping_operations_apply_in_order_rename_copy_set_select_delete() -> None:
    # Every step depends on the one before: the copy reads the renamed key, the set overwrites
    # the copy, the select needs a key that only the set provides, and the delete runs last so
    # the select still finds "tmp". Any other order gives a different result or raises.
    interface = _parse(
        {
            # listed out of order on purpose: the declaration order must not matter
            "keys_to_delete": ["tmp"],
            "keys_to_select": ["value", "copy", "tmp"],
            "keys_to_set": {"copy": "set", "tmp": 0},
            "keys_to_copy": {"value": "copy"},
            "keys_to_rename": {"raw": "value"},
        }
    )

    assert interface.apply({"raw": 7, "noise": True}, WHAT) == {"value": 7, "copy": "set"}


def test_select_after_set_keeps_set_keys_and_drops_the_rest() -> None:
    interface = _parse({"keys_to_set": {"mode": "fast"}, "keys_to_select": ["mode"]})

    assert interface.apply({"number": 1}, WHAT) == {"mode": "fast"}


def test_missing_key_to_rename_is_named() -> None:
    interface = _parse({"keys_to_rename": {"raw": "value"}})

    with pytest.raises(InterfaceError, match="key 'raw' to rename is missing") as info:
        interface.apply({"other": 1}, WHAT)
    assert "['other']" in str(info.value)


def test_missing_key_to_copy_is_named() -> None:
    interface = _parse({"keys_to_copy": {"src": "dst"}})

    with pytest.raises(InterfaceError, match="key 'src' to copy is missing"):
        interface.apply({"other": 1}, WHAT)


def test_missing_selected_key_is_named() -> None:
    interface = _parse({"keys_to_select": ["a", "b", "c"]})

    with pytest.raises(InterfaceError, match=r"\['a', 'c'\] missing"):
        interface.apply({"b": 1}, WHAT)


def test_target_key_is_allowed() -> None:
    interface = _parse({"_target_": "flowplex.KeyInterface", "keys_to_select": ["a"]})

    assert interface.apply({"a": 1, "b": 2}, WHAT) == {"a": 1}


# --- bad declarations -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"keys_to_rename": {"a": "b"}, "keys_to_frobnicate": []}, "unknown keys"),
        ({"keys_to_select": "number"}, "keys_to_select must be a list of key names"),
        ({"keys_to_select": ["a", 1]}, "keys_to_select must be a list of key names"),
        ({"keys_to_delete": "a"}, "keys_to_delete must be a list of key names"),
        ({"keys_to_rename": {"a": 1}}, "keys_to_rename must map key names to key names"),
        ({"keys_to_rename": ["a", "b"]}, "keys_to_rename must map key names to key names"),
        ({"keys_to_copy": {"a": None}}, "keys_to_copy must map key names to key names"),
        ({"keys_to_set": ["a"]}, "keys_to_set must be a mapping"),
        (["number", 2], "must be a list of key names"),
        (3, "must be a key, a list of keys or a mapping, got int"),
        ("", "must name a key, got an empty string"),
    ],
)
def test_bad_declarations(spec: Any, message: str) -> None:
    with pytest.raises(FlowDefinitionError) as info:
        KeyInterface.parse(spec, WHAT)
    assert message in str(info.value)
    assert WHAT in str(info.value)


def test_unknown_mapping_key_is_named() -> None:
    with pytest.raises(FlowDefinitionError, match="keys_to_frobnicate"):
        KeyInterface.parse({"keys_to_frobnicate": ["a"]}, WHAT)


# --- no mutation ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "spec",
    [
        ["a"],
        {"keys_to_rename": {"a": "x"}},
        {"keys_to_copy": {"nested": "copied"}},
        {"keys_to_set": {"a": 0}},
        {"keys_to_delete": ["a", "nested"]},
        {
            "keys_to_rename": {"a": "x"},
            "keys_to_copy": {"x": "y"},
            "keys_to_set": {"z": 1},
            "keys_to_select": ["x", "y", "z", "nested"],
            "keys_to_delete": ["y"],
        },
    ],
)
def test_apply_never_mutates_its_input(spec: Any) -> None:
    data = {"a": 1, "nested": {"n": [1, 2]}}
    before = copy.deepcopy(data)

    out = _parse(spec).apply(data, WHAT)

    assert data == before
    assert out is not data


def test_apply_failure_does_not_mutate_its_input() -> None:
    data = {"a": 1}
    interface = _parse({"keys_to_rename": {"a": "x"}, "keys_to_select": ["missing"]})

    with pytest.raises(InterfaceError):
        interface.apply(data, WHAT)
    assert data == {"a": 1}


def test_parse_does_not_keep_references_to_the_spec() -> None:
    spec = {"keys_to_rename": {"a": "x"}, "keys_to_set": {"k": 1}, "keys_to_select": ["x", "k"]}
    interface = _parse(spec)

    spec["keys_to_rename"]["a"] = "changed"
    spec["keys_to_set"]["k"] = 2
    spec["keys_to_select"].append("other")

    assert interface.apply({"a": 5}, WHAT) == {"x": 5, "k": 1}


def test_interface_is_reusable() -> None:
    interface = _parse({"keys_to_rename": {"a": "x"}, "keys_to_set": {"k": 1}})

    first = interface.apply({"a": 1}, WHAT)
    second = interface.apply({"a": 2}, WHAT)

    assert first == {"x": 1, "k": 1}
    assert second == {"x": 2, "k": 1}


# --- calling an interface -----------------------------------------------------------------------


def test_calling_on_data_gives_new_data() -> None:
    interface = _parse(
        {"keys_to_rename": {"output_number": "number"}, "keys_to_select": ["number"]}
    )
    data = {"output_number": 4321, "id": 0}

    assert interface(data) == {"number": 4321}
    assert data == {"output_number": 4321, "id": 0}


def test_calling_on_a_message_gives_a_new_message() -> None:
    interface = _parse(["output_number"])
    message = FlowMessage(data={"output_number": 1234, "noise": 1}, src_flow="first")

    reshaped = interface(message)

    assert isinstance(reshaped, FlowMessage)
    assert reshaped.data == {"output_number": 1234}
    assert (reshaped.message_id, reshaped.src_flow) == (message.message_id, "first")
    assert message.data == {"output_number": 1234, "noise": 1}


def test_calling_checks_the_keys_and_the_argument() -> None:
    interface = _parse(["number"])
    with pytest.raises(InterfaceError, match=r"required key\(s\) \['number'\] missing"):
        interface(FlowMessage(data={}))
    with pytest.raises(InterfaceError, match="applies to a dict or a FlowMessage, got list"):
        interface(["number"])  # type: ignore[call-overload]
