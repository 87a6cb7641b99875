"""Take the dashboard screenshots in this folder (run by hand, not by the tests).

    python docs/screenshots/take.py

It follows the README's dashboard walk-through in a temporary folder: a project with a
``greeter.py``, ``flowplex serve`` and ``flowplex send`` (one message fails), two task-graph
runs (one fails), ``flowplex up`` with a peer registry, an op stored over HTTP; then a
headless Chromium (Debian's ``chromium``) opens each page at 1400 x 900 and saves it here.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from playwright.sync_api import sync_playwright

HERE = Path(__file__).resolve().parent
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

GREETER = '''\
from flowplex import AtomicFlow


class Greeter(AtomicFlow):
    default_config = {"name": "Greeter", "description": "Says hello."}

    def set_up_flow_state(self):
        self.flow_state["greeted"] = 0

    def run(self, input_message):
        who = input_message.data.get("who")
        if not who:
            raise ValueError("say who to greet: {\\"who\\": \\"...\\"}")
        self.flow_state["greeted"] += 1
        return {"greeting": f"hello {who}"}
'''

REPORT = {
    "label": "nightly-report",
    "tasks": [
        {"key": "fetch", "task_type": "noop"},
        {"key": "clean", "task_type": "noop", "precursors": ["fetch"]},
        {"key": "score", "task_type": "noop", "precursors": ["fetch"]},
        {
            "key": "publish",
            "task_type": "python",
            "precursors": ["clean", "score"],
            "task_params": {"fn": "builtins.dict", "kwargs": {"published": 3, "to": "ops"}},
        },
    ],
}
BROKEN = {
    "label": "import-prices",
    "tasks": [
        {"key": "download", "task_type": "noop"},
        {
            "key": "parse",
            "task_type": "python",
            "precursors": ["download"],
            "task_params": {"fn": "prices_parser.parse"},
        },
    ],
}


def flowplex(*args: str, cwd: Path, check: bool = True) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "flowplex", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
    )
    if check and done.returncode != 0:
        raise SystemExit(f"flowplex {' '.join(args)} failed:\n{done.stdout}{done.stderr}")
    return done.stdout


def free_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


def wait_until_up(url: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"nothing answers at {url}")


def main() -> None:
    env_home = os.environ.pop("FLOWPLEX_HOME", None)
    os.environ.pop("FLOWPLEX_DB", None)
    with tempfile.TemporaryDirectory() as tmp:
        project = Path(tmp) / "my-project"
        project.mkdir()
        (project / "greeter.py").write_text(GREETER)
        flowplex("serve", "greeter.Greeter", "greeter", cwd=project)
        flowplex("serve", "flowplex.examples.ReverseNumberAtomicFlow", "reverse", cwd=project)
        for who in ("Ada", "Grace", "Alan"):
            flowplex("send", "greeter", json.dumps({"who": who}), cwd=project)
        flowplex("send", "greeter", "{}", cwd=project, check=False)  # fails: no "who"
        flowplex("send", "greeter", '{"who": "Edsger"}', "--instance", "team", cwd=project)
        flowplex("send", "reverse", '{"number": 1234}', cwd=project)
        for spec in (REPORT, BROKEN):
            path = project / f"{spec['label']}.json"
            path.write_text(json.dumps(spec))
            flowplex("runs", "create", str(path), cwd=project)
        flowplex("runs", "tick", "--until-finished", cwd=project, check=False)

        from flowplex.identity import generate_key_pair, save_key_pair

        # The peer registry lets the node (its key) connect: an operator's key.
        node_key = generate_key_pair()
        key_file = save_key_pair(Path(tmp) / "node-key.pem", node_key)
        peer_url, url = free_url(), free_url()
        peer = subprocess.Popen(
            [
                *(sys.executable, "-m", "flowplex", "registry", "--url", peer_url),
                *("--home", "peer", "--operator", node_key.user_id),
            ],
            cwd=tmp,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        up = subprocess.Popen(
            [
                *(sys.executable, "-m", "flowplex", "up", "--url", url, "--connect", peer_url),
                *("--node-key", str(key_file)),
            ],
            cwd=project,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_until_up(peer_url)
            wait_until_up(url)
            from flowplex.artifacts import OpStoreClient, Version, VersionType

            with OpStoreClient(url + "/opstore", key=node_key) as store:
                first = Version()
                store.register_valid_link(None, "tokenizer", first)
                store.save_op_bytes("tokenizer", first, b"a b c")
                store.register_valid_link(None, "tokenizer", Version.atomic(VersionType.MINOR, 2))
                store.register_valid_link(None, "embeddings", Version())
            shoot(url)
        finally:
            for process in (up, peer):
                process.terminate()
                process.wait(timeout=30)
    if env_home is not None:
        os.environ["FLOWPLEX_HOME"] = env_home


def shoot(url: str) -> None:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.set_default_timeout(20_000)

        def save(name: str) -> None:
            page.wait_for_timeout(300)
            page.screenshot(path=str(HERE / f"{name}.png"), full_page=True)
            print("saved", HERE / f"{name}.png")

        page.goto(url + "/")
        page.locator("#instances").wait_for()
        page.get_by_text("Edsger").count()  # the instances are there
        save("node")
        page.locator("#instances tbody tr").filter(has_text="greeter").filter(
            has_text="ValueError"
        ).locator("a").first.click()
        page.locator("#data").fill('{"who": "Barbara"}')
        page.locator("#send").click()
        page.locator("#send-result").wait_for()
        save("instance")
        page.goto(url + "/ui/runs")
        save("runs")
        page.get_by_text("nightly-report").first.wait_for()
        page.locator("#runs a").filter(has_text="flow:").last.click()
        page.locator("svg.graph").wait_for()
        save("run")
        page.goto(url + "/ui/registry")
        page.locator("#flows").wait_for()
        page.locator("#peers").get_by_text("connected").wait_for()
        save("registry")
        page.goto(url + "/ui/artifacts")
        save("artifacts")
        browser.close()


if __name__ == "__main__":
    main()
