"""The ``flowplex`` command line."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

import flowplex
from flowplex import serving
from flowplex.artifacts import OpStoreClient, Version
from flowplex.cli import app
from flowplex.errors import ConfigurationError
from flowplex.identity import generate_key_pair
from waiting import wait_for

runner = CliRunner()
ATOMIC = "flowplex.examples.ReverseNumberAtomicFlow"

GREETER = """\
from flowplex import AtomicFlow


class Greeter(AtomicFlow):
    default_config = {"name": "Greeter", "description": "Says hello."}

    def run(self, input_message):
        return {"greeting": f"hello {input_message.data['who']}"}
"""


def flowplex_command() -> str:
    """The installed ``flowplex`` script (not ``python -m``, which puts the folder on the path
    by itself)."""
    script = shutil.which("flowplex", path=str(Path(sys.executable).parent))
    assert script is not None, "the flowplex script is not installed beside this Python"
    return script


def cli(
    *args: str, cwd: Path | None = None, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run the ``flowplex`` script; return the completed process (text)."""
    return subprocess.run(
        [flowplex_command(), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=timeout,
    )


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A project folder holding a flow module of its own (``greeter.Greeter``)."""
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "greeter.py").write_text(GREETER)
    return folder


def test_version_through_python_dash_m() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "flowplex", "--version"], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == f"flowplex {flowplex.__version__}"


def test_local_demo_reverses_through_all_three_flows() -> None:
    result = runner.invoke(app, ["local-demo", "--number", "1234"])
    assert result.exit_code == 0, result.output
    replies = [line for line in result.output.splitlines() if line.strip().startswith("reply")]
    assert replies == [
        "  reply {'output_number': 4321}",
        "  reply {'output_number': 1234}",
        "  reply {'output_number': 1234}",
    ]


def test_run_prints_the_reply_as_json(tmp_path: Path) -> None:
    overrides = tmp_path / "overrides.yaml"
    overrides.write_text("output_interface: null\n")
    result = runner.invoke(
        app,
        [
            "run",
            "flowplex.examples.ReverseNumberAtomicFlow",
            '{"number": 98}',
            "-c",
            str(overrides),
        ],
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == {"output_number": 89}


def test_run_rejects_data_that_is_not_a_json_object() -> None:
    result = runner.invoke(app, ["run", "flowplex.examples.ReverseNumberAtomicFlow", "[1]"])
    assert result.exit_code == 2
    assert "must be a JSON object" in result.output


def test_flowplex_errors_print_one_line_and_exit_1() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "flowplex", "run", "nowhere.Flow", "{}"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 1
    assert "error: module 'nowhere' not found" in out.stderr
    assert "Traceback" not in out.stderr


@pytest.mark.parametrize("bad", ["set", "object"])
def test_run_of_a_flow_replying_with_non_json_prints_one_error_line(bad: str) -> None:
    data, tests = f'{{"bad": "{bad}"}}', str(Path(__file__).parent)
    out = subprocess.run(
        [sys.executable, "-m", "flowplex", "run", "faultflows.CountingFlow", data, "--path", tests],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert out.returncode == 1
    assert out.stderr.startswith("error: MessagingError in flow instance ")
    assert "not JSON-serializable" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
    assert "Traceback" not in out.stderr


def test_served_demo_walks_one_user_then_two_then_two_nodes() -> None:
    result = runner.invoke(app, ["demo", "--db", "memory://"])
    assert result.exit_code == 0, result.output
    out = result.output
    replies = [line.split("  (")[0] for line in out.splitlines() if "-> reply" in line]
    assert replies == [
        "sent {'id': 0, 'number': 1234} -> reply {'output_number': 1234}",
        "sent {'id': 1, 'number': 1234} -> reply {'output_number': 1234}",
        "sent {'id': 0, 'number': 1234} -> reply {'output_number': 1234}",
        "sent {'id': 0, 'number': 1234} -> reply {'output_number': 4321}",
        # Two nodes: the composite over HTTP, then the flow mounted by name@registry.
        "sent {'id': 0, 'number': 1234} -> reply {'output_number': 1234}",
        "sent {'id': 1, 'number': 1234} -> reply {'output_number': 4321}",
    ]
    assert "/endpoints/reverse_number_atomic" in out
    assert "done: both nodes stopped, their folders removed" in out
    assert "Not serving at reverse_number_atomic." in out
    assert "Unknown flow instance" in out
    assert "serve_flow atomic again -> False" in out
    assert "done: endpoints removed, node closed" in out


def test_demo_never_touches_the_users_node(tmp_path: Path) -> None:
    # It used to run on ./.flowplex and delete every endpoint and instance found there.
    home = Path(os.environ["FLOWPLEX_HOME"])
    db = tmp_path / "mine.db"
    env = {**os.environ, "FLOWPLEX_DB": f"sqlite:///{db}", "TMPDIR": str(tmp_path)}
    for environ in (dict(os.environ), env):
        served = cli("serve", ATOMIC, "mine", env=environ)
        assert served.returncode == 0, served.stderr
    demo = cli("demo", "--number", "12", env=env)
    assert demo.returncode == 0, demo.stderr
    assert "sent {'id': 0, 'number': 12} -> reply {'output_number': 21}" in demo.stdout
    assert "a temporary node, removed at the end" in demo.stdout
    for environ in (dict(os.environ), env):
        assert "mine/" in cli("flows", env=environ).stdout
    assert list(tmp_path.glob("flowplex-demo-*")) == []  # its temporary node is gone
    assert home.joinpath("flowplex.db").is_file() and db.is_file()


def test_demo_refuses_a_node_that_serves_something(tmp_path: Path) -> None:
    home = tmp_path / "used"
    assert runner.invoke(app, ["serve", ATOMIC, "mine", "--home", str(home)]).exit_code == 0
    result = runner.invoke(app, ["demo", "--home", str(home)])
    assert isinstance(result.exception, ConfigurationError)
    assert "needs a node of its own" in str(result.exception)
    assert "mine/" in runner.invoke(app, ["flows", "--home", str(home)]).output
    fresh = runner.invoke(app, ["demo", "--home", str(tmp_path / "fresh")])
    assert fresh.exit_code == 0, fresh.output
    assert (
        "(no served flows)"
        in runner.invoke(app, ["flows", "--home", str(tmp_path / "fresh")]).output
    )


def test_flows_of_the_current_folder_run_serve_and_send(project: Path) -> None:
    # "module 'greeter' not found": only `worker` could import a project's own flows.
    env = {**os.environ, "FLOWPLEX_HOME": str(project / ".flowplex")}
    env.pop("PYTHONPATH", None)
    ran = cli("run", "greeter.Greeter", '{"who": "you"}', cwd=project, env=env)
    assert ran.returncode == 0, ran.stderr
    assert json.loads(ran.stdout) == {"greeting": "hello you"}
    served = cli("serve", "greeter.Greeter", "hello", cwd=project, env=env)
    assert served.returncode == 0, served.stderr
    sent = cli("send", "hello", '{"who": "me"}', cwd=project, env=env)
    assert sent.returncode == 0, sent.stderr
    assert json.loads(sent.stdout) == {"greeting": "hello me"}


def test_path_names_a_folder_to_import_flows_from(project: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    missing = cli("run", "greeter.Greeter", '{"who": "x"}', cwd=elsewhere)
    assert missing.returncode == 1
    assert missing.stderr.strip().startswith("error: module 'greeter' not found")
    found = cli("run", "greeter.Greeter", '{"who": "x"}', "--path", str(project), cwd=elsewhere)
    assert found.returncode == 0, found.stderr
    assert json.loads(found.stdout) == {"greeting": "hello x"}
    home = ["--home", str(tmp_path / "node")]
    served = cli("serve", "greeter.Greeter", "hello", *home, "--path", str(project), cwd=elsewhere)
    assert served.returncode == 0, served.stderr
    sent = cli("send", "hello", '{"who": "y"}', *home, "--path", str(project), cwd=elsewhere)
    assert sent.returncode == 0, sent.stderr
    assert json.loads(sent.stdout) == {"greeting": "hello y"}


def test_home_and_db_resolve_the_same_way_everywhere(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env_home = tmp_path / "env-home"
    monkeypatch.setenv("FLOWPLEX_HOME", str(env_home))

    def serve(*options: str) -> None:
        result = runner.invoke(app, ["serve", ATOMIC, "ep", *options])
        assert result.exit_code == 0, result.output

    serve()  # FLOWPLEX_HOME
    assert (env_home / "flowplex.db").is_file()
    serve("--home", str(tmp_path / "opt-home"))  # --home beats FLOWPLEX_HOME
    assert (tmp_path / "opt-home" / "flowplex.db").is_file()
    monkeypatch.setenv("FLOWPLEX_DB", f"sqlite:///{tmp_path}/env.db")
    serve("--home", str(tmp_path / "third"))  # FLOWPLEX_DB beats the home's file
    assert (tmp_path / "env.db").is_file()
    assert not (tmp_path / "third" / "flowplex.db").exists()
    serve("--db", f"sqlite:///{tmp_path}/opt.db")  # --db beats FLOWPLEX_DB
    assert (tmp_path / "opt.db").is_file()
    # The engine and op store commands read the same node.
    monkeypatch.delenv("FLOWPLEX_DB")
    spec = tmp_path / "spec.yaml"
    spec.write_text("tasks: [{task_type: noop}]\n")
    made = runner.invoke(app, ["runs", "create", str(spec), "--home", str(tmp_path / "opt-home")])
    assert made.exit_code == 0, made.output
    listed = runner.invoke(app, ["runs", "ls", "--home", str(tmp_path / "opt-home")])
    assert made.output.strip() in listed.output


@pytest.mark.parametrize(
    "command",
    [
        ["flows"],
        ["instances"],
        ["runs", "ls"],
        ["runs", "show", "flow:x"],
        ["opstore", "versions", "op"],
    ],
)
def test_read_only_commands_create_no_database(tmp_path: Path, command: list[str]) -> None:
    typo = tmp_path / "typo.db"
    out = cli(*command, "--db", f"sqlite:///{typo}")
    assert out.returncode == 1
    assert out.stderr.startswith(f"error: no database at {typo}: ") and out.stderr.count("\n") == 1
    home = tmp_path / "no-home"
    out = cli(*command, "--home", str(home))
    assert out.returncode == 1 and "error: no database at" in out.stderr
    assert not typo.exists() and not home.exists()


def test_read_only_commands_read_an_existing_node(tmp_path: Path) -> None:
    home = ["--home", str(tmp_path / "node")]
    assert runner.invoke(app, ["serve", ATOMIC, "ep", *home]).exit_code == 0
    sent = runner.invoke(app, ["send", "ep", '{"number": 12}', *home])
    assert json.loads(sent.stdout) == {"output_number": 21}
    assert "ep/" in runner.invoke(app, ["flows", *home]).output
    listed = runner.invoke(app, ["instances", *home], env={"COLUMNS": "200"}).stdout
    rows = [line for line in listed.splitlines() if " ep " in line]
    assert len(rows) == 1 and "(no instances)" not in listed
    result = runner.invoke(app, ["flows", "--user", "nobody", *home])
    assert result.exit_code == 2 and "no user nobody" in result.output


def test_a_missing_postgres_driver_prints_the_install_line(tmp_path: Path) -> None:
    # psycopg made unimportable: the command names the extra to install (Rich used to eat
    # "[postgres]" as markup), and no traceback.
    script = (
        "import sys\n"
        "sys.modules['psycopg'] = None\n"
        "sys.argv = ['flowplex', *sys.argv[1:]]\n"
        "from flowplex.cli import main\n"
        "main()\n"
    )
    url = "postgresql://postgres@127.0.0.1:5432/test"
    for command in (["flows", "--db", url], ["runs", "ls", "--db", url], ["serve", ATOMIC, "e"]):
        env = {**os.environ, "FLOWPLEX_DB": url}
        out = subprocess.run(
            [sys.executable, "-c", script, *command],
            capture_output=True,
            text=True,
            check=False,
            env=env,
            cwd=tmp_path,
        )
        assert out.returncode == 1, out.stderr
        assert out.stderr.strip().endswith('pip install "flowplex[postgres]"'), out.stderr
        assert "Traceback" not in out.stderr and out.stderr.count("\n") == 1


def test_log_level_is_applied_to_flowplex_loggers(tmp_path: Path) -> None:
    db = ["--db", f"sqlite:///{tmp_path}/node.db"]
    assert cli("serve", ATOMIC, "ep", *db).returncode == 0
    quiet = cli("flows", *db)
    assert quiet.returncode == 0 and quiet.stderr == ""
    loud = cli("--log-level", "debug", "flows", *db)
    assert loud.returncode == 0 and "flowplex.cli: home" in loud.stderr
    env = {**os.environ, "FLOWPLEX_LOG_LEVEL": "DEBUG"}
    assert "flowplex.cli: home" in cli("flows", *db, env=env).stderr
    env["FLOWPLEX_LOG_LEVEL"] = "chatty"
    bad = cli("flows", *db, env=env)
    assert bad.returncode == 1
    assert bad.stderr.startswith("error: FLOWPLEX_LOG_LEVEL must be one of DEBUG")


@pytest.fixture
def opstore_server(tmp_path: Path) -> Iterator[tuple[str, dict[str, str]]]:
    """``flowplex opstore serve`` on a free port with only FLOWPLEX_HOME set."""
    env = {**os.environ, "FLOWPLEX_HOME": str(tmp_path / "home")}
    proc = subprocess.Popen(
        [flowplex_command(), "opstore", "serve", "--url", "http://127.0.0.1:0"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("op store on http://127.0.0.1:"), line
        yield line.split()[3], env
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)


def test_opstore_serve_defaults_to_the_nodes_store(
    tmp_path: Path, opstore_server: tuple[str, dict[str, str]]
) -> None:
    url, env = opstore_server
    with OpStoreClient(url, key=generate_key_pair()) as client:
        version = Version()
        client.register_valid_link(None, "model", version)
        client.save_op_bytes("model", version, b"weights")
    home = tmp_path / "home"
    assert (home / "flowplex.db").is_file()
    assert any(p.is_file() for p in (home / "artifacts").rglob("*"))
    listed = cli("opstore", "versions", "model", env=env)
    assert listed.returncode == 0, listed.stderr
    assert "1.0.0" in listed.stdout


def test_server_help_names_no_other_system() -> None:
    for command in ([], ["demo"], ["runs"], ["opstore"], ["up"], ["registry"], ["worker"]):
        text = runner.invoke(app, [*command, "--help"]).output.lower()
        for word in ("seed", "aiflows", "colink", "kodo", "missioncontrol", "chariots"):
            assert word not in text, (command, word)


@pytest.mark.parametrize("command", ["up", "registry"])
def test_mesh_services_need_a_real_port(command: str) -> None:
    result = runner.invoke(app, [command, "--url", "http://127.0.0.1:0"])
    text = " ".join(result.output.replace("│", " ").split())  # Rich boxes and wraps usage errors
    assert result.exit_code == 2 and "give a real port" in text


def test_up_serves_the_node_it_was_given(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    home = tmp_path / "node"
    assert runner.invoke(app, ["serve", ATOMIC, "reverse", "--home", str(home)]).exit_code == 0
    proc = subprocess.Popen(
        [flowplex_command(), "up", "--url", url, "--home", str(home)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:

        def listed() -> list[str]:
            try:
                rows = httpx.get(f"{url}/flows", timeout=5).json()["items"]
            except httpx.HTTPError:
                assert proc.poll() is None, "flowplex up exited"
                return []
            return [row["url"] for row in rows]

        wait_for(lambda: listed() == ["/endpoints/reverse"], "flowplex up to list the served flow")
        cl = flowplex.start_node(path=home, db=f"sqlite:///{home}/flowplex.db")
        flow = serving.get_flow_instance(cl, "reverse")
        # flowplex up's dispatch worker answers: this process runs none.
        reply = flow.get_reply_future(flow.package_input_message({"number": 12}))
        assert reply.get_data(timeout=30) == {"output_number": 21}
        cl.node.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    # The banner names the URL as the mesh lists it: loopback is spelled localhost.
    assert f"dashboard: http://localhost:{port}/\n".encode() in err
