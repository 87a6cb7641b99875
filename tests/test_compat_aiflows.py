"""flowplex.compat.aiflows: aiflows' module paths and signatures over flowplex.

The examples in ``examples/aiflows`` follow aiflows' notebooks step by step, importing only
from ``flowplex.compat.aiflows``; they run here on the memory, SQLite and PostgreSQL backends
and print what the notebooks show. The other tests pin each difference between aiflows and
flowplex that the compat layer bridges, or that flowplex keeps on purpose (docs/migrating.md).
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import re
import runpy
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import flowplex
from flowplex import Client, FlowError, FlowInstanceError, InterfaceError
from flowplex.compat.aiflows.base_flows import AtomicFlow, CompositeFlow
from flowplex.compat.aiflows.interfaces import KeyInterface
from flowplex.compat.aiflows.messages import FlowMessage
from flowplex.compat.aiflows.utils import colink_utils, serving
from flowplex.compat.aiflows.workers import (
    run_dispatch_worker_thread,
    run_dispatch_worker_threads,
)

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "aiflows"
TIMEOUT = 10.0
HERE = __name__


@pytest.fixture
def examples_on(db_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Client]]:
    """The example folder importable and ``FLOWPLEX_DB`` set to the backend under test; the
    handles the example returns are closed afterwards."""
    monkeypatch.syspath_prepend(str(EXAMPLES))
    monkeypatch.setenv("FLOWPLEX_DB", db_url)
    opened: list[Client] = []
    yield opened
    for cl in opened:
        cl.node.close()


def run_example(name: str, opened: list[Client]) -> Any:
    """Run ``examples/aiflows/<name>.py``'s ``main()``; keep its handles to close them."""
    main: Callable[[], Any] = runpy.run_path(str(EXAMPLES / f"{name}.py"))["main"]
    result = main()
    opened.extend(result if isinstance(result, list) else [result])
    return result


INSTANCE_LINE = re.compile(r"^ [0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def sections(out: str, marker: str) -> list[list[str]]:
    """The instance ids listed after each ``marker`` line."""
    found = []
    lines = out.splitlines()
    for i, line in enumerate(lines):
        if line == marker:
            block = []
            for rest in lines[i + 1 :]:
                if not INSTANCE_LINE.match(rest):
                    break
                block.append(rest.strip())
            found.append(block)
    return found


# -- the examples ---------------------------------------------------------------------------------

# The examples wait for replies without a timeout, as the notebooks do: a bug must fail them
# sooner than the suite's default timeout.
example = pytest.mark.timeout(60)


@example
def test_helpful_utils(
    examples_on: list[Client],
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.INFO, logger="flowplex"):
        cl = run_example("helpful_utils", examples_on)
    out = capsys.readouterr().out
    lines = out.splitlines()

    assert lines[:2] == ["True", "True"]
    assert out.count("   default_dispatch_point: coflows_dispatch") == 2
    instances = sections(out, "Flow Instances:")
    # Mounting the sequential flow mounted its two subflows first; deletes leave nothing.
    assert [len(block) for block in instances] == [3, 3, 1, 0, 0]
    sequential_id = instances[2][0]
    # The metadata of the sequential flow follows the first listing of instances.
    assert lines[lines.index("Flow Instances:") + 4] == (
        "{'flow_endpoint': 'reverse_number_sequential', 'user_id': 'local'}"
    )
    assert "False" in lines  # is_flow_served after unserve_flow
    user = cl.get_user_id()
    assert (
        f"FlowInstanceException: Failed to get flow instance at reverse_number_sequential "
        f"served by user {user}.\nMessage: Failed to get instance of subflow "
        f"first_reverse_flow.\nFailed to get flow instance at reverse_number_atomic served by "
        f"user {user}.\nMessage: Not serving at reverse_number_atomic.\n"
    ) in out
    assert sequential_id in instances[0]
    assert cl.node.endpoints(user) == [] and cl.node.instances(user) == []
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
    assert "deleted endpoint reverse_number_sequential" in caplog.messages


@example
def test_multiple_users(examples_on: list[Client], capsys: pytest.CaptureFixture[str]) -> None:
    user0, user1 = run_example("multiple_users", examples_on)
    out = capsys.readouterr().out
    lines = out.splitlines()

    assert lines[:4] == [
        f"User 0 id: {user0.get_user_id()}",
        f"User 1 id: {user1.get_user_id()}",
        "True",
        "True",
    ]
    assert "Data sent:\n {'id': 0, 'number': 1234} \n" in out
    assert "REPLY:\n {'output_number': 1234} \n" in out
    assert "{'output_number': 4321}" in lines
    # User 0's singleton was mounted for user 1 and serves both of its subflows.
    singleton = user0.node.instances(user0.get_user_id())
    assert [(i.endpoint, i.client_id) for i in singleton] == [
        ("reverse_number_atomic", user1.get_user_id())
    ]
    assert f"     {user1.get_user_id()}/" in lines
    assert f"       {singleton[0].flow_id}/" in lines
    composite = user1.node.instances(user1.get_user_id())
    assert [i.endpoint for i in composite] == ["reverse_number_sequential"]
    subflows = composite[0].config["subflows_config"]
    assert {entry["flow_id"] for entry in subflows.values()} == {singleton[0].flow_id}
    assert [b for b in sections(out, "All flow instances:")] == [
        [singleton[0].flow_id],
        [composite[0].flow_id],
    ]


@example
def test_recursive_serve(
    examples_on: list[Client],
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.INFO, logger="flowplex.serving"):
        cl = run_example("recursive_serve", examples_on)
    out = capsys.readouterr().out

    assert '    "name": "ReverseNumberTwice",' in out
    assert "}\nTrue\n" in out
    assert "REPLY:\n {'output_number': 1234} \n" in out
    assert "Subflow second_reverse_flow already served." in caplog.messages
    endpoints = cl.node.endpoints(cl.get_user_id())
    assert [(e.endpoint, e.singleton, e.dispatch_point) for e in endpoints] == [
        ("reverse_number_atomic", True, "coflows_dispatch"),
        ("reverse_number_sequential", False, "coflows_dispatch"),
    ]
    assert len(cl.node.instances(cl.get_user_id(), "reverse_number_atomic")) == 1


@example
def test_blocking_and_non_blocking_on_one_worker(
    examples_on: list[Client], capsys: pytest.CaptureFixture[str]
) -> None:
    cl = run_example("blocking_and_non_blocking", examples_on)
    out = capsys.readouterr().out
    lines = out.splitlines()

    assert len(cl.node.workers) == 1
    assert "reverse_number_atomic: 12345 -> {'output_number': 54321}" in lines
    assert "reverse_number_sequential: 1234 -> {'output_number': 1234}" in lines
    assert "reverse_number_blocking: 1234 -> {'output_number': 1234}" in lines
    # The non-blocking flow ran three times, its step and the request kept in between.
    calls = [line for line in lines if line.startswith(" state ")]
    assert len(calls) == 3
    assert calls[0] == " state {'current_call': 'first_reverse_flow'}"
    assert calls[1].startswith(
        " state {'current_call': 'second_reverse_flow', 'initial_message"
        "': FlowMessage(data={'id': 0, 'number': 1234}"
    )
    assert calls[2].startswith(" state {'current_call': 'reply_to_message', 'initial_message'")


def test_the_examples_import_only_the_compat_layer() -> None:
    sources = sorted(EXAMPLES.rglob("*.py"))
    assert len(sources) == 8
    for source in sources:
        for line in source.read_text().splitlines():
            if line.startswith(("import ", "from ")) and "flowplex" in line:
                assert line.startswith("from flowplex.compat.aiflows"), (source.name, line)


def test_an_example_runs_as_a_script(tmp_path: Path) -> None:
    env = {"PATH": "", "FLOWPLEX_HOME": str(tmp_path / "home")}
    env["TMPDIR"] = str(tmp_path)
    done = subprocess.run(
        [sys.executable, "blocking_and_non_blocking.py"],
        cwd=EXAMPLES,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "reverse_number_blocking: 1234 -> {'output_number': 1234}" in done.stdout


# -- module paths and names -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("module", "names"),
    [
        ("base_flows", ["Flow", "AtomicFlow", "CompositeFlow"]),
        ("interfaces", ["KeyInterface"]),
        ("interfaces.key_interface", ["KeyInterface"]),
        ("messages", ["FlowMessage"]),
        ("workers", ["run_dispatch_worker_thread", "run_dispatch_worker_threads",
                     "run_get_instance_worker_thread"]),
        ("utils.serving", ["serve_flow", "recursive_serve_flow", "is_flow_served",
                           "unserve_flow", "get_flow_instance", "delete_flow_instance",
                           "delete_flow_endpoint", "delete_all_flow_endpoints",
                           "_get_local_flow_instance_metadata", "FlowInstanceException"]),
        ("utils.serve_utils", ["serve_flow", "get_flow_instance", "FlowInstanceException"]),
        ("utils.colink_utils", ["start_colink_server", "start_colink_server_with_users",
                                "print_served_flows", "print_flow_instances"]),
        ("utils.coflows_utils", ["FlowFuture"]),
        ("utils.general_helpers", ["read_yaml_file"]),
        ("utils.logging", ["get_logger", "set_verbosity_debug"]),
    ],
)  # fmt: skip
def test_aiflows_module_paths(module: str, names: list[str]) -> None:
    loaded = importlib.import_module(f"flowplex.compat.aiflows.{module}")
    for name in names:
        assert getattr(loaded, name) is not None, f"{module}.{name}"


def test_the_shared_names_are_flowplex_own() -> None:
    from flowplex.compat.aiflows import logging as aiflows_logging
    from flowplex.compat.aiflows.utils import serve_utils

    assert FlowMessage is flowplex.FlowMessage
    assert serving.FlowInstanceException is FlowInstanceError
    assert serve_utils.get_flow_instance is serving.get_flow_instance
    assert issubclass(AtomicFlow, flowplex.AtomicFlow)
    assert issubclass(CompositeFlow, flowplex.CompositeFlow)
    aiflows_logging.set_verbosity_debug()
    assert logging.getLogger("flowplex").level == logging.DEBUG
    assert aiflows_logging.get_verbosity() == logging.DEBUG
    assert aiflows_logging.get_logger("x.y") is logging.getLogger("x.y")


def test_import_flowplex_does_not_import_compat() -> None:
    code = (
        "import sys, flowplex, flowplex.serving, flowplex.workers, flowplex.examples\n"
        "print(sorted(m for m in sys.modules if m.startswith('flowplex.compat')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# -- nodes and users ------------------------------------------------------------------------------


def test_start_colink_server_gives_a_fresh_node_and_user(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    first = colink_utils.start_colink_server()
    second = colink_utils.start_colink_server()
    try:
        assert first.node is not second.node
        assert first.node.url.startswith(f"sqlite:///{tmp_path}")
        assert first.get_user_id() != second.get_user_id()
    finally:
        first.node.close()
        second.node.close()


def test_start_colink_server_with_users_adds_new_users(db_url: str) -> None:
    users = colink_utils.start_colink_server_with_users(num_users=2, db=db_url)
    try:
        more = colink_utils.start_colink_server_with_users(db=db_url)
        assert len(more) == 1
        if db_url != "memory://":  # the same database is the same node: new users on it
            assert more[0].node is users[0].node
            assert len(users[0].node.users()) == 3
        assert len({c.get_user_id() for c in [*users, *more]}) == 3
    finally:
        for cl in {id(c.node): c for c in users}.values():
            cl.node.close()
        more[0].node.close()
    with pytest.raises(ValueError, match="num_users must be a positive integer"):
        colink_utils.start_colink_server_with_users(num_users=0, db=db_url)


# -- workers --------------------------------------------------------------------------------------


@pytest.fixture
def cl(db_url: str) -> Iterator[Client]:
    client = colink_utils.start_colink_server(db=db_url)
    yield client
    client.node.close()


def ask(cl: Client, endpoint: str, data: dict[str, Any], **mount: Any) -> dict[str, Any]:
    flow = serving.get_flow_instance(cl, endpoint, **mount)
    return flow.get_reply_future(flow.package_input_message(data)).get_data(timeout=TIMEOUT)


def test_coflows_dispatch_is_the_default_dispatch_point(cl: Client) -> None:
    worker = run_dispatch_worker_thread(cl)
    assert worker.dispatcher.dispatch_point == "coflows_dispatch"
    assert serving.serve_flow(cl, f"{HERE}.EchoFlow", "echo")
    proxy = serving.get_flow_instance(cl, "echo")
    (instance,) = cl.node.instances(cl.get_user_id())
    assert instance.dispatch_point == "coflows_dispatch"
    assert proxy.get_reply_future(proxy.package_input_message({"x": 1})).get_data(TIMEOUT) == {
        "x": 1
    }
    # flowplex's own API keeps its own default.
    assert flowplex.serving.serve_flow(cl, f"{HERE}.EchoFlow", "native")
    native = [e for e in cl.node.endpoints(cl.get_user_id()) if e.endpoint == "native"]
    assert native[0].dispatch_point == "default"


def test_run_dispatch_worker_threads_takes_num_workers(cl: Client) -> None:
    workers = run_dispatch_worker_threads(cl, num_workers=3, dispatch_point="gpu_dispatch")
    assert len(workers) == 3 == len(cl.node.workers)
    assert {w.dispatcher.dispatch_point for w in workers} == {"gpu_dispatch"}
    with pytest.raises(ValueError, match="num_workers must be a positive integer"):
        run_dispatch_worker_threads(cl, num_workers=0)


def test_flow_modules_base_path_is_where_flow_classes_are_found(
    cl: Client, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "path", list(sys.path))
    modules = tmp_path / "modules"
    (modules / "PingFlowModule").mkdir(parents=True)
    (modules / "PingFlowModule" / "__init__.py").write_text(
        "from flowplex.compat.aiflows.base_flows import AtomicFlow\n\n\n"
        "class PingFlow(AtomicFlow):\n"
        "    default_config = {'name': 'Ping', 'description': 'Answers pong.'}\n\n"
        "    def run(self, input_message):\n"
        "        self.send_message(self.package_output_message(input_message, {'pong': 1}))\n"
    )
    run_dispatch_worker_thread(cl, flow_modules_base_path=str(modules))
    assert str(modules) in sys.path
    assert serving.serve_flow(cl, "PingFlowModule.PingFlow", "ping")
    assert ask(cl, "ping", {}) == {"pong": 1}
    with pytest.raises(TypeError, match="flow_modules_base_path must be a directory path"):
        run_dispatch_worker_thread(cl, flow_modules_base_path=modules)  # type: ignore[arg-type]


class ApiInfoFlow(AtomicFlow):
    default_config = {"name": "ApiInfo", "description": "Shows its API infos.", "api_infos": "???"}

    def run(self, input_message: FlowMessage) -> None:
        infos = [vars(info) for info in self.flow_config["api_infos"]]
        self.send_message(self.package_output_message(input_message, {"infos": infos}))


class ApiInfo:
    """Something like aiflows' ApiInfo: an object, not JSON, that never reaches storage."""

    def __init__(self, backend_used: str, api_key: str) -> None:
        self.backend_used = backend_used
        self.api_key = api_key


def test_api_infos_fill_the_config_at_run_time_only(cl: Client) -> None:
    run_dispatch_worker_thread(cl, api_infos=[ApiInfo("openai", "sk-secret")])
    serving.serve_flow(cl, f"{HERE}.ApiInfoFlow", "api")
    reply = ask(cl, "api", {})
    assert reply == {"infos": [{"backend_used": "openai", "api_key": "sk-secret"}]}
    (instance,) = cl.node.instances(cl.get_user_id())
    assert instance.config["api_infos"] == "???"


def test_get_instance_workers_are_accepted(cl: Client) -> None:
    from flowplex.compat.aiflows.workers import run_get_instance_worker_thread

    assert run_get_instance_worker_thread(cl) is None


# -- flows, interfaces and messages ------------------------------------------------------------


class EchoFlow(AtomicFlow):
    default_config = {"name": "Echo", "description": "Answers with what it got."}

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)

    def run(self, input_message: FlowMessage) -> None:
        # aiflows let a flow answer with a message as the response.
        self.send_message(self.package_output_message(input_message, input_message))


def test_config_interfaces_are_not_applied_by_compat_flows(
    cl: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The example's atomic YAML declares interfaces that would rename its output: aiflows never
    applied them, so the compat classes do not either (the notebooks' replies depend on it);
    the same class on flowplex's own base applies them."""
    monkeypatch.syspath_prepend(str(EXAMPLES))
    from ReverseNumberFlowModule import ReverseNumberAtomicFlow

    run_dispatch_worker_thread(cl)
    serving.serve_flow(cl, "ReverseNumberFlowModule.ReverseNumberAtomicFlow", "reverse")
    assert ask(cl, "reverse", {"number": 1234, "id": 0}) == {"output_number": 4321}

    class NativeReverse(flowplex.AtomicFlow):
        default_config = ReverseNumberAtomicFlow.get_config()

        def run(self, input_message: FlowMessage) -> dict[str, Any]:
            return {"output_number": int(str(input_message.data["number"])[::-1])}

    assert NativeReverse.default_config["input_interface"] == "number"
    assert flowplex.run_local(NativeReverse, {"number": 1234, "id": 0}) == {"reversed_number": 4321}


def test_key_interface_with_aiflows_arguments() -> None:
    interface = KeyInterface(
        keys_to_rename={"output_number": "number"},
        keys_to_copy={"number": "copy"},
        keys_to_set={"source": "first"},
        additional_transformations=[
            lambda data_dict, **kw: {**data_dict, "seen": sorted(data_dict)}
        ],
        keys_to_select=["number", "copy", "source", "seen", "id"],
        keys_to_delete=["id"],
    )
    data = {"output_number": 4321, "id": 0}
    assert interface(data) == {
        "number": 4321,
        "copy": 4321,
        "source": "first",
        "seen": ["copy", "id", "number", "source"],
    }
    assert data == {"output_number": 4321, "id": 0}


def test_key_interface_on_a_message_gives_a_new_message() -> None:
    message = FlowMessage(data={"output_number": 4321, "id": 0}, src_flow="first")
    renamed = KeyInterface(keys_to_rename={"output_number": "number"}, keys_to_select=["number"])(
        message
    )
    assert isinstance(renamed, FlowMessage)
    assert renamed.data == {"number": 4321}
    assert renamed.message_id == message.message_id and renamed.src_flow == "first"
    # aiflows changed the message it was given; flowplex leaves it as it was.
    assert message.data == {"output_number": 4321, "id": 0}


class AddSuffix:
    def __init__(self, suffix: str) -> None:
        self.suffix = suffix

    def __call__(self, data_dict: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        return {f"{k}{self.suffix}": v for k, v in data_dict.items()}


def keys_only(data_dict: dict[str, Any], **kwargs: Any) -> list[str]:
    return list(data_dict)


def test_key_interface_transformations_by_class_path_and_their_errors() -> None:
    interface = KeyInterface(
        additional_transformations=[{"_target_": f"{HERE}.AddSuffix", "suffix": "_x"}]
    )
    assert interface({"a": 1}) == {"a_x": 1}
    with pytest.raises(flowplex.FlowDefinitionError, match="needs a '_target_' class path"):
        KeyInterface(additional_transformations=[{"suffix": "_x"}])
    with pytest.raises(flowplex.FlowDefinitionError, match="must be callable or a mapping"):
        KeyInterface(additional_transformations=[3])  # type: ignore[list-item]
    with pytest.raises(InterfaceError, match="returned list, not a dict"):
        KeyInterface(additional_transformations=[keys_only])({"a": 1})
    with pytest.raises(InterfaceError, match="applies to a dict or a FlowMessage"):
        interface("a")  # type: ignore[call-overload]


def test_key_interface_refuses_missing_keys() -> None:
    # Selecting a missing key raised in aiflows too; renaming one was skipped silently, which
    # hid typos: flowplex names the key.
    with pytest.raises(InterfaceError, match="key 'output_numbr' to rename is missing"):
        KeyInterface(keys_to_rename={"output_numbr": "number"})({"output_number": 1})
    with pytest.raises(InterfaceError, match=r"required key\(s\) \['number'\] missing"):
        KeyInterface(keys_to_select=["number"])({"output_number": 1})


def test_package_output_message_takes_a_message_as_response() -> None:
    flow = EchoFlow.instantiate_from_default_config()
    request = FlowMessage(data={"n": 1}, src_flow="caller")
    reply = flow.package_output_message(request, FlowMessage(data={"n": 2}))
    assert reply.data == {"n": 2} and reply.is_reply and reply.dst_flow == "caller"


# -- replies to deleted instances and failing flows ------------------------------------------------


class FailingFlow(AtomicFlow):
    default_config = {"name": "Failing", "description": "Raises."}

    def run(self, input_message: FlowMessage) -> None:
        raise ValueError("no number today")


def test_a_message_to_a_deleted_instance_gets_aiflows_answer(cl: Client) -> None:
    run_dispatch_worker_thread(cl)
    serving.serve_flow(cl, f"{HERE}.EchoFlow", "echo")
    proxy = serving.get_flow_instance(cl, "echo")
    assert serving.delete_flow_instance(cl, proxy.get_instance_id())

    future = proxy.get_reply_future(proxy.package_input_message({"x": 1}))
    assert future.get_data(TIMEOUT) == {"error": "Unknown flow instance!"}
    assert future.get_message().is_reply
    later = proxy.get_reply_future(proxy.package_input_message({"x": 2}))
    assert asyncio.run(later.get_data_async(TIMEOUT)) == {"error": "Unknown flow instance!"}
    polled = proxy.get_reply_future(proxy.package_input_message({"x": 3}))
    polled.get_message(TIMEOUT)
    assert polled.try_get_data() == {"error": "Unknown flow instance!"}

    # flowplex's own proxies raise instead, naming the instance.
    native = flowplex.FlowProxy(cl, proxy.address, flow_endpoint="echo")
    with pytest.raises(FlowError, match=f"Unknown flow instance {proxy.get_instance_id()}"):
        native.get_reply_future(native.package_input_message({})).get_data(TIMEOUT)


def test_a_failing_flow_answers_with_an_error(cl: Client) -> None:
    """aiflows sent no reply when a flow raised (its caller waited for ever): every error but
    the deleted instance's raises at the caller."""
    run_dispatch_worker_thread(cl)
    serving.serve_flow(cl, f"{HERE}.FailingFlow", "failing")
    with pytest.raises(FlowError) as info:
        ask(cl, "failing", {})
    assert info.value.remote_type == "ValueError"
    assert info.value.remote_message == "no number today"


def test_subflow_futures_answer_like_aiflows_too(
    cl: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The blocking example's subflow is deleted: its future gives aiflows' answer, which has no
    output_number, so the composite fails and its caller gets that error."""
    monkeypatch.syspath_prepend(str(EXAMPLES))
    run_dispatch_worker_thread(cl)
    serving.serve_flow(
        cl, "ReverseNumberFlowModule.ReverseNumberAtomicFlow", "reverse_number_atomic"
    )
    serving.serve_flow(cl, "ReverseNumberFlowModule.ReverseNumberBlockingFlow", "blocking")
    flow = serving.get_flow_instance(cl, "blocking")
    (config,) = [i.config for i in cl.node.instances(cl.get_user_id(), "blocking")]
    serving.delete_flow_instance(cl, config["subflows_config"]["first_reverse_flow"]["flow_id"])
    with pytest.raises(FlowError) as info:
        flow.get_reply_future(flow.package_input_message({"number": 12})).get_data(TIMEOUT)
    assert info.value.remote_type == "KeyError"
    assert "output_number" in info.value.remote_message


# -- the migration page ---------------------------------------------------------------------------


def test_the_migration_page_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from docsnippets import python_blocks

    before, after, native_flow, native_script = python_blocks("From aiflows")
    # The whole migration is the import swap.
    assert "from aiflows." in before
    assert after == before.replace("aiflows", "flowplex.compat.aiflows")

    monkeypatch.syspath_prepend(str(EXAMPLES))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    namespace: dict[str, Any] = {}
    exec(after, namespace)  # the page's own code
    namespace["cl"].node.close()
    assert capsys.readouterr().out == "{'output_number': 4321}\n"

    (tmp_path / "reverse_number.py").write_text(native_flow)
    monkeypatch.syspath_prepend(str(tmp_path))
    namespace = {}
    exec(native_script, namespace)
    namespace["cl"].node.close()
    assert capsys.readouterr().out == "{'output_number': 4321}\n"


def test_the_key_interface_of_the_migration_page() -> None:
    data = {"a": 1, "c": 2}
    compat = KeyInterface(keys_to_rename={"a": "b"}, keys_to_select=["b"])
    native = flowplex.KeyInterface(rename={"a": "b"}, select=("b",))
    assert compat(data) == native(data) == {"b": 1}
