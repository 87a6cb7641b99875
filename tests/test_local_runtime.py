"""Running flows in-process: LocalRuntime and run_local."""

from __future__ import annotations

import asyncio
import logging

import pytest

from flowplex import (
    AtomicFlow,
    CompositeFlow,
    FlowError,
    FlowInstanceError,
    FlowMessage,
    FlowTimeoutError,
    LocalRuntime,
    MessagingError,
    run_local,
)
from flowplex.examples import (
    ReverseNumberAtomicFlow,
    ReverseNumberBlockingSequentialFlow,
    ReverseNumberSequentialFlow,
)
from flowplex.flows import FlowProxy, InstanceAddress
from servingflows import key_hash


def test_run_local_atomic_by_class_and_by_path() -> None:
    assert run_local(ReverseNumberAtomicFlow, {"number": 1234}) == {"output_number": 4321}
    assert run_local("flowplex.examples.ReverseNumberAtomicFlow", {"id": 0, "number": 120}) == {
        "output_number": 21
    }


@pytest.mark.parametrize(
    "style", [ReverseNumberSequentialFlow, ReverseNumberBlockingSequentialFlow]
)
def test_composites_reverse_twice(style: type) -> None:
    assert run_local(style, {"id": 0, "number": 1234}) == {"output_number": 1234}
    assert run_local(style, {"number": 1200}) == {"output_number": 12}


def test_singleton_subflow_endpoint_is_shared() -> None:
    rt = LocalRuntime()
    proxy = rt.get_flow_instance(ReverseNumberSequentialFlow)
    config = rt.get_flow_config(proxy.get_instance_id())
    subs = config["subflows_config"]
    # The first entry makes reverse_number_atomic a singleton endpoint; both use its instance.
    assert subs["first_reverse_flow"]["flow_id"] == subs["second_reverse_flow"]["flow_id"]
    assert len(rt.instance_ids) == 2
    assert config["flow_id"] == proxy.get_instance_id()


def test_config_overrides_are_deep_merged_into_the_mounted_config() -> None:
    rt = LocalRuntime()
    proxy = rt.get_flow_instance(
        ReverseNumberSequentialFlow,
        config_overrides={
            "name": "X",
            "subflows_config": {"first_reverse_flow": {"singleton": False}},
        },
    )
    config = rt.get_flow_config(proxy.get_instance_id())
    assert config["name"] == "X"
    assert config["subflows_config"]["first_reverse_flow"]["name"] == "ReverseNumberFirst"
    subs = config["subflows_config"]
    assert subs["first_reverse_flow"]["flow_id"] != subs["second_reverse_flow"]["flow_id"]
    assert len(rt.instance_ids) == 3


def test_state_persists_between_messages_and_is_readable() -> None:
    rt = LocalRuntime()
    counter = rt.get_flow_instance("testflows.CounterFlow", initial_state={"count": 10})
    for i in range(3):
        reply = counter.get_reply_future(counter.package_input_message({"i": i})).get_data()
    assert reply == {"count": 13}
    assert rt.get_flow_state(counter.get_instance_id()) == {"count": 13, "seen": [0, 1, 2]}


def test_messages_to_one_instance_run_in_arrival_order() -> None:
    rt = LocalRuntime()
    counter = rt.get_flow_instance("testflows.CounterFlow")
    futures = [counter.get_reply_future(counter.package_input_message({"i": i})) for i in range(5)]
    assert [f.get_data()["count"] for f in reversed(futures)] == [5, 4, 3, 2, 1]
    assert rt.get_flow_state(counter.get_instance_id())["seen"] == [0, 1, 2, 3, 4]


def test_nonblocking_composite_keeps_its_step_in_state() -> None:
    rt = LocalRuntime()
    proxy = rt.get_flow_instance(ReverseNumberSequentialFlow)
    proxy.get_reply_future(proxy.package_input_message({"number": 42})).get_data()
    assert rt.get_flow_state(proxy.get_instance_id()) == {
        "current_call": "first_reverse_flow",
        "waiting": [],
    }


def test_a_raising_flow_gives_a_flow_error_with_remote_details_and_rolls_back_state() -> None:
    rt = LocalRuntime()
    proxy = rt.get_flow_instance("testflows.FailingFlow")
    future = proxy.get_reply_future(proxy.package_input_message({"x": 7}))
    with pytest.raises(FlowError) as info:
        future.get_data()
    err = info.value
    assert err.remote_type == "ValueError"
    assert err.remote_message == "boom on 7"
    assert "Traceback" in err.remote_traceback
    assert 'raise ValueError(f"boom on' in err.remote_traceback
    assert err.flow_id == proxy.get_instance_id()
    assert rt.get_flow_state(proxy.get_instance_id()) == {"touched": False}


@pytest.mark.parametrize(
    "style", [ReverseNumberSequentialFlow, ReverseNumberBlockingSequentialFlow]
)
def test_subflow_failure_reaches_the_caller(style: type) -> None:
    with pytest.raises(FlowError, match="'number' must be an integer"):
        run_local(style, {"number": "nope"})


def test_input_interface_rejects_missing_keys_as_an_error_reply() -> None:
    with pytest.raises(FlowError) as info:
        run_local(ReverseNumberAtomicFlow, {"num": 1})
    assert info.value.remote_type == "InterfaceError"
    assert "number" in info.value.remote_message


def test_input_interface_selects_keys() -> None:
    seen = run_local(
        "testflows.EchoFlow", {"a": 1, "b": 2}, config_overrides={"input_interface": ["a"]}
    )
    assert seen == {"a": 1}


def test_async_run_and_awaited_futures() -> None:
    assert run_local("testflows.AsyncEchoFlow", {"k": 1}) == {"echo": {"k": 1}}
    assert run_local("testflows.AsyncChainFlow", {"k": 2}) == {"via": {"echo": {"k": 2}}}


def test_awaiting_a_future_from_async_code() -> None:
    rt = LocalRuntime()
    proxy = rt.get_flow_instance("testflows.EchoFlow")

    async def main() -> dict[str, int]:
        return await proxy.get_reply_future(proxy.package_input_message({"n": 5}))

    assert asyncio.run(main()) == {"n": 5}


def test_async_flow_runs_when_called_inside_a_running_loop() -> None:
    async def main() -> dict[str, object]:
        return run_local("testflows.AsyncEchoFlow", {"k": 3})

    assert asyncio.run(main()) == {"echo": {"k": 3}}


def test_reply_with_send_message_strips_private_keys() -> None:
    assert run_local("testflows.SendMessageFlow", {}) == {"public": 1}


def test_private_keys_are_stripped_from_requests_to_subflows() -> None:
    rt = LocalRuntime()
    echo = rt.get_flow_instance("testflows.EchoFlow")
    message = echo.package_input_message({"keep": 1, "token": "x"})
    message.private_keys = ["token"]
    assert echo.get_reply_future(message).get_data() == {"keep": 1}


def test_a_flow_that_never_replies_is_reported_not_hung() -> None:
    rt = LocalRuntime()
    proxy = rt.get_flow_instance("testflows.SilentFlow")
    future = proxy.get_reply_future(proxy.package_input_message({}))
    with pytest.raises(MessagingError, match="will never arrive"):
        future.get_data()
    assert future.try_get_data() is None
    assert not future.done()


def test_bad_state_and_bad_return_values_are_error_replies() -> None:
    with pytest.raises(FlowError, match=r"flow_state\['oops'\]"):
        run_local("testflows.BadStateFlow", {})
    with pytest.raises(FlowError, match="returned list"):
        run_local("testflows.ListReturnFlow", {})


def test_a_failed_run_sends_nothing() -> None:
    # BadStateFlow returns a reply, then fails the state check: the reply must not escape.
    rt = LocalRuntime()
    proxy = rt.get_flow_instance("testflows.BadStateFlow")
    future = proxy.get_reply_future(proxy.package_input_message({}))
    with pytest.raises(FlowError):
        future.get_data()


def test_fire_and_forget_messages_run() -> None:
    rt = LocalRuntime()
    fan = rt.get_flow_instance("testflows.FanOutFlow")
    assert fan.get_reply_future(fan.package_input_message({})).get_data() == {"sent": 2}
    rt.run_until_idle()
    config = rt.get_flow_config(fan.get_instance_id())
    for key in ("a", "b"):
        assert rt.get_flow_state(config["subflows_config"][key]["flow_id"])["count"] == 1


def test_message_to_unknown_instance_gets_an_error_reply() -> None:
    rt = LocalRuntime()
    ghost = FlowProxy(rt, InstanceAddress("local", "no-such-id"), flow_endpoint="ghost")
    with pytest.raises(FlowError, match="Unknown flow instance no-such-id"):
        ghost.get_reply_future(ghost.package_input_message({})).get_data()


def test_error_on_a_fire_and_forget_message_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    rt = LocalRuntime()
    proxy = rt.get_flow_instance("testflows.FailingFlow")
    with caplog.at_level(logging.ERROR, logger="flowplex"):
        proxy.send_message(proxy.package_input_message({"x": 1}))
        rt.run_until_idle()
    assert "boom on 1" in caplog.text


def test_get_reply_needs_an_owning_flow() -> None:
    rt = LocalRuntime()
    proxy = rt.get_flow_instance("testflows.EchoFlow")
    with pytest.raises(MessagingError, match="get_reply_future"):
        proxy.get_reply(proxy.package_input_message({}))


def test_timeout_zero_raises_flow_timeout_error() -> None:
    rt = LocalRuntime()
    proxy = rt.get_flow_instance("testflows.EchoFlow")
    future = proxy.get_reply_future(proxy.package_input_message({}))
    with pytest.raises(FlowTimeoutError):
        future.get_data(timeout=-1)
    assert future.get_data() == {}


def test_subflow_mount_failure_names_the_subflow() -> None:
    with pytest.raises(FlowInstanceError) as info:
        LocalRuntime().get_flow_instance(
            ReverseNumberSequentialFlow,
            config_overrides={
                "subflows_config": {"first_reverse_flow": {"flow_class_name": "nowhere.Flow"}}
            },
        )
    text = str(info.value)
    assert "Failed to get instance of subflow first_reverse_flow." in text
    assert "module 'nowhere' not found" in text


def test_subflow_without_class_is_reported() -> None:
    overrides = {"subflows_config": {"first_reverse_flow": {"flow_class_name": None}}}
    with pytest.raises(FlowInstanceError, match="no flow_class_name"):
        LocalRuntime().get_flow_instance(ReverseNumberSequentialFlow, config_overrides=overrides)


def test_not_a_flow_class() -> None:
    with pytest.raises(Exception, match="is not a Flow class"):
        run_local("flowplex.config.Settings", {})


def test_run_rejects_non_mapping_data() -> None:
    with pytest.raises(MessagingError, match="mapping"):
        run_local(ReverseNumberAtomicFlow, [1, 2])  # type: ignore[arg-type]


def test_flow_classes_defined_in_a_function_run_by_object() -> None:
    """A class no dotted path reaches is registered with the runtime by object; two such classes
    of the same name stay two flows."""

    def make(word: str) -> type[AtomicFlow]:
        class Greeter(AtomicFlow):
            default_config = {"name": "Greeter", "description": "Says a word."}

            def run(self, input_message: FlowMessage) -> dict[str, str]:
                return {"said": f"{word} {input_message.data['who']}"}

        return Greeter

    hello, bye = make("hello"), make("bye")
    rt = LocalRuntime()
    assert rt.run(hello, {"who": "ann"}) == {"said": "hello ann"}
    assert rt.run(bye, {"who": "bob"}) == {"said": "bye bob"}
    assert rt.run(hello, {"who": "cy"}) == {"said": "hello cy"}
    assert run_local(bye, {"who": "di"}) == {"said": "bye di"}


def test_every_subflow_is_this_runtimes_whatever_its_user_id_says() -> None:
    stranger = "ab" * 32
    overrides = {
        "subflows_config": {
            "first_reverse_flow": {"user_id": stranger},
            "second_reverse_flow": {"user_id": stranger},
        }
    }
    for style in (ReverseNumberSequentialFlow, ReverseNumberBlockingSequentialFlow):
        assert run_local(style, {"number": 1234}, config_overrides=overrides) == {
            "output_number": 1234
        }


def test_a_blocking_wait_inside_a_run_that_can_never_end_is_reported() -> None:
    """A composite blocked on a subflow that never replies: the inner wait raises instead of
    hanging, and the caller gets that as the composite's error reply."""

    class WaitsOnSilence(CompositeFlow):
        default_config = {
            "name": "WaitsOnSilence",
            "description": "Blocks on a subflow that never answers.",
            "subflows_config": {
                "silent": {"flow_class_name": "testflows.SilentFlow", "flow_endpoint": "silent"}
            },
        }

        def run(self, input_message: FlowMessage) -> dict[str, object]:
            silent = self.subflows["silent"]
            return silent.get_reply_future(silent.package_input_message({})).get_data()

    with pytest.raises(FlowError) as info:
        run_local(WaitsOnSilence, {})
    assert info.value.remote_type == "MessagingError"
    assert "will never arrive" in info.value.remote_message


def test_a_future_gets_done_without_a_wait() -> None:
    """Polling runs what can run now: nobody has to call get_data for the reply to come."""
    rt = LocalRuntime()
    proxy = rt.get_flow_instance(ReverseNumberSequentialFlow)
    future = proxy.get_reply_future(proxy.package_input_message({"number": 1234}))
    assert future.done()
    assert future.try_get_data() == {"output_number": 1234}


def test_secrets_fill_placeholders_as_a_worker_does() -> None:
    rt = LocalRuntime(secrets={"api_key": "sk-test"})
    reply = rt.run("servingflows.SecretFlow", {})
    assert reply == {"key_hash": key_hash("sk-test")}
    with pytest.raises(FlowError, match="no secret 'api_key'"):
        run_local("servingflows.SecretFlow", {})


def test_a_flow_that_replies_twice_is_answered_by_its_first_reply() -> None:
    rt = LocalRuntime()
    proxy = rt.get_flow_instance("testflows.ReplyTwiceFlow")
    for _ in range(2):
        future = proxy.get_reply_future(proxy.package_input_message({}))
        assert future.get_data() == {"reply": "first"}
    assert rt.get_flow_state(proxy.get_instance_id()) == {"runs": 2}
