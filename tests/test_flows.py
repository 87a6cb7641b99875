"""The flow model: config, state, messages, interfaces, private keys."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from flowplex import (
    AtomicFlow,
    CompositeFlow,
    ConfigurationError,
    Flow,
    FlowDefinitionError,
    FlowMessage,
    FlowStateError,
    InterfaceError,
    MessagingError,
    resolve_class_path,
)
from flowplex.examples import ReverseNumberAtomicFlow, ReverseNumberSequentialFlow


class Base(AtomicFlow):
    default_config = {"name": "Base", "description": "d", "nested": {"a": 1, "b": 2}}


class Child(Base):
    default_config = {"nested": {"b": 3}, "extra": True}


def test_default_config_merges_down_the_hierarchy_then_overrides() -> None:
    config = Child.get_config(nested={"c": 4}, name="X")
    assert config["name"] == "X"
    assert config["nested"] == {"a": 1, "b": 3, "c": 4}
    assert config["extra"] is True
    assert config["private_keys"] == []  # from Flow's own defaults


def test_default_config_from_yaml_beside_the_module() -> None:
    config = ReverseNumberAtomicFlow.get_config()
    assert config["name"] == "ReverseNumber"
    assert config["input_interface"] == ["number"]


def test_yaml_default_config_for_a_module_on_sys_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "MyFlowModule.py").write_text(
        textwrap.dedent(
            """
            from flowplex import AtomicFlow

            class MyFlow(AtomicFlow):
                def run(self, input_message):
                    return {"greeting": self.flow_config["greeting"]}
            """
        )
    )
    (tmp_path / "MyFlow.yaml").write_text("name: Mine\ndescription: d\ngreeting: hi\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    cls = resolve_class_path("MyFlowModule.MyFlow")
    flow = cls.instantiate_from_default_config(greeting="hello")
    assert flow.flow_config["greeting"] == "hello"
    assert flow.name == "Mine"


@pytest.mark.parametrize("missing", ["name", "description"])
def test_name_and_description_are_required(missing: str) -> None:
    config = {"name": "n", "description": "d"}
    del config[missing]
    with pytest.raises(ConfigurationError, match=missing):
        AtomicFlow(config)


def test_composite_requires_subflows_config() -> None:
    with pytest.raises(ConfigurationError, match="subflows_config"):
        CompositeFlow({"name": "n", "description": "d"})


def test_bad_subflow_entry_is_named() -> None:
    with pytest.raises(FlowDefinitionError, match=r"subflows_config\['first'\].singleton"):
        CompositeFlow(
            {"name": "n", "description": "d", "subflows_config": {"first": {"singleton": "yes"}}}
        )


def test_flow_config_must_be_a_mapping() -> None:
    with pytest.raises(FlowDefinitionError, match="mapping"):
        AtomicFlow(["name"])  # type: ignore[arg-type]


def test_initial_state_merges_over_set_up_state_and_must_be_json() -> None:
    class Stateful(AtomicFlow):
        default_config = {"name": "S", "description": "d"}

        def set_up_flow_state(self) -> None:
            self.flow_state.update(a=1, b=2)

    flow = Stateful(Stateful.get_config(), {"b": 3})
    assert flow.flow_state == {"a": 1, "b": 3}
    with pytest.raises(FlowStateError, match=r"flow_state\['b'\]"):
        Stateful(Stateful.get_config(), {"b": object()})


def test_instance_id_comes_from_flow_id() -> None:
    flow = ReverseNumberAtomicFlow.instantiate_from_default_config()
    assert flow.get_instance_id() == "unmounted"
    flow = ReverseNumberAtomicFlow.instantiate_from_default_config(flow_id="abc")
    assert flow.get_instance_id() == "abc"


def test_package_input_and_output_messages_chain() -> None:
    flow = ReverseNumberAtomicFlow.instantiate_from_default_config(flow_id="f1")
    request = flow.package_input_message({"number": 1}, dst_flow="other")
    assert (request.src_flow, request.src_flow_id, request.dst_flow) == (
        "ReverseNumber",
        "f1",
        "other",
    )
    assert request.created_by == "ReverseNumber"
    assert request.input_message_id == request.message_id
    assert not request.is_reply
    reply = flow.package_output_message(request, {"output_number": 1, "dropped": 2})
    assert reply.is_reply
    assert reply.input_message_id == request.message_id
    assert reply.dst_flow == "ReverseNumber"
    assert reply.data == {"output_number": 1}  # output_interface selects


def test_package_output_message_rejects_non_dict() -> None:
    flow = ReverseNumberAtomicFlow.instantiate_from_default_config()
    request = flow.package_input_message({"number": 1})
    with pytest.raises(MessagingError, match="must be a dict"):
        flow.package_output_message(request, [1])  # type: ignore[arg-type]


def test_output_interface_requires_its_keys() -> None:
    flow = ReverseNumberAtomicFlow.instantiate_from_default_config()
    request = flow.package_input_message({"number": 1})
    with pytest.raises(InterfaceError, match="output_number"):
        flow.package_output_message(request, {"something_else": 1})


def test_send_message_needs_a_reply_and_a_runtime() -> None:
    flow = ReverseNumberAtomicFlow.instantiate_from_default_config()
    request = flow.package_input_message({"number": 1})
    with pytest.raises(MessagingError, match="sends replies"):
        flow.send_message(request)
    with pytest.raises(MessagingError, match="not attached to a runtime"):
        flow.send_message(flow.package_output_message(request, {"output_number": 1}))


def test_private_keys_must_be_a_list_of_names() -> None:
    with pytest.raises(FlowDefinitionError, match="private_keys"):
        AtomicFlow({"name": "n", "description": "d", "private_keys": "secret"})


def test_bad_interface_declaration_is_a_definition_error() -> None:
    with pytest.raises(FlowDefinitionError, match="input_interface"):
        AtomicFlow({"name": "n", "description": "d", "input_interface": 3})


def test_base_run_is_abstract() -> None:
    flow = Flow({"name": "n", "description": "d"})
    with pytest.raises(NotImplementedError, match="run"):
        flow.run(FlowMessage(data={}))


def test_composite_parses_subflow_specs() -> None:
    flow = ReverseNumberSequentialFlow.instantiate_from_default_config()
    specs = {s.key: s for s in flow.subflow_specs}
    first = specs["first_reverse_flow"]
    assert first.flow_endpoint == "reverse_number_atomic"
    assert first.singleton is True
    assert first.user_id == "local"
    assert first.overrides == {
        "name": "ReverseNumberFirst",
        "description": "A flow that takes in a number and reverses it.",
    }
    assert specs["second_reverse_flow"].singleton is False
