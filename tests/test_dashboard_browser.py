"""The dashboard as a person sees it: ``flowplex up`` started for real, pages opened and clicked
through in a real headless Chromium (Debian's ``chromium``, driven by Playwright).

Chromium missing: skipped locally, a failure under ``CI`` (``.ci/run`` installs it).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import flowplex
from dashboard_scene import Scene, build_scene, free_port, start_up
from flowplex import serving
from flowplex.identity import generate_key_pair, load_key_pair, save_key_pair
from waiting import wait_for

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
#: How long a page may take to show what a test expects (Playwright polls meanwhile).
SHOWS = 15_000


def chromium_path() -> str:
    """Debian's chromium; skips locally, fails on CI when it is missing."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("CI is set but chromium is not installed: the dashboard tests need it.")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    return found


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """One headless Chromium for the module."""
    path = chromium_path()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=path, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def node_key(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The node's key file; the peer registry trusts it as an operator (so the node, whose
    URL is picked later, may connect to it)."""
    return save_key_pair(tmp_path_factory.mktemp("keys") / "node.pem", generate_key_pair())


@pytest.fixture(scope="module")
def peer(tmp_path_factory: pytest.TempPathFactory, node_key: Path) -> Iterator[str]:
    """Another registry (``flowplex registry``) for the node to peer with."""
    home = tmp_path_factory.mktemp("peer")
    url = f"http://127.0.0.1:{free_port()}"
    operator = load_key_pair(node_key).user_id
    process = subprocess.Popen(
        [
            *(sys.executable, "-m", "flowplex", "registry", "--url", url, "--home", str(home)),
            *("--operator", operator),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )

    def answers() -> bool:
        assert process.poll() is None, "flowplex registry exited"
        try:
            return httpx.get(url + "/", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_for(answers, "the peer registry to answer")
        yield url
    finally:
        process.terminate()
        process.wait(timeout=20)


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> Scene:
    return build_scene(tmp_path_factory.mktemp("node"))


@pytest.fixture(scope="module")
def server(scene: Scene, peer: str, node_key: Path) -> Iterator[str]:
    with start_up(scene, "--connect", peer, "--node-key", str(node_key)) as url:
        yield url


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    page.set_default_timeout(SHOWS)
    yield page
    context.close()


def expect(locator: Any) -> Any:
    from playwright.sync_api import expect as playwright_expect

    return playwright_expect(locator)


def no_sideways_scroll(page: Any) -> None:
    """Neither the page nor a table, picture or text block in it is wider than the window
    (a table scrolling inside its box counts as scrolling sideways)."""
    width = page.evaluate("document.documentElement.scrollWidth")
    inner = page.evaluate("window.innerWidth")
    assert width <= inner, f"{page.url} scrolls sideways: {width} px wide in {inner} px"
    too_wide = page.evaluate(
        """() => [...document.querySelectorAll("table, pre, svg, .panel, .card")]
            .filter(e => e.getBoundingClientRect().right > window.innerWidth + 1
                         || e.scrollWidth > e.clientWidth + 1 && e.tagName !== "svg")
            .map(e => e.tagName + (e.id ? "#" + e.id : ""))"""
    )
    assert too_wide == [], f"{page.url}: wider than the window: {too_wide}"


def test_node_page_lists_endpoints_and_instances(page: Any, server: str, scene: Scene) -> None:
    page.goto(server + "/")
    expect(page.locator("h1")).to_contain_text("Node overview")
    endpoints = page.locator("#endpoints")
    for name in ("counter", "failing", "reverse"):
        expect(endpoints).to_contain_text(name)
    expect(endpoints).to_contain_text("flowplex.examples.ReverseNumberAtomicFlow")
    counter = page.locator(f'tr[data-flow-id="{scene.counter_id}"]')
    expect(counter).to_contain_text('"count": 3')
    failing = page.locator(f'tr[data-flow-id="{scene.failing_id}"]')
    expect(failing).to_contain_text("ValueError: boom on 7")
    expect(page.locator(".cards")).to_contain_text("1 failed")


def test_instance_page_shows_the_log_and_sends_a_test_message(
    page: Any, server: str, scene: Scene
) -> None:
    page.goto(server + "/")
    page.locator(f'tr[data-flow-id="{scene.counter_id}"] a').click()
    expect(page.locator("h1")).to_contain_text(scene.counter_id)
    log = page.locator("#log tbody tr")
    expect(log).to_have_count(3)
    expect(log.first).to_contain_text('"i": 2')
    expect(log.first).to_contain_text('"count": 3')
    page.locator("#data").fill('{"i": 99}')
    page.locator("#send").click()
    result = page.locator("#send-result")
    expect(result).to_contain_text("Reply")
    expect(result).to_contain_text('"count": 4')
    expect(log).to_have_count(4)
    expect(log.first).to_contain_text('"i": 99')
    expect(page.locator("#state")).to_contain_text("99")
    # A mistake in the data is explained, and nothing is sent.
    page.locator("#data").fill("{not json")
    page.locator("#send").click()
    expect(page.locator("#send-result")).to_contain_text("not valid JSON")
    expect(log).to_have_count(4)


def test_a_failing_flow_shows_its_error_in_the_log_and_the_reply(
    page: Any, server: str, scene: Scene
) -> None:
    page.goto(f"{server}/ui/instances/{scene.failing_id}")
    expect(page.locator("#last-error")).to_contain_text("ValueError: boom on 7")
    expect(page.locator("#log tr.log-error")).to_have_count(1)
    page.locator("#data").fill('{"x": 5}')
    page.locator("#send").click()
    expect(page.locator("#send-result")).to_contain_text("The flow raised an error")
    expect(page.locator("#send-result")).to_contain_text("boom on 5")
    expect(page.locator("#log tr.log-error")).to_have_count(2)


def test_the_page_updates_itself(page: Any, server: str, scene: Scene) -> None:
    page.goto(server + "/")
    row = page.locator(f'tr[data-flow-id="{scene.reverse_id}"]')
    expect(row).to_contain_text("never")
    # A message sent by another program shows up without reloading the page.
    cl = flowplex.start_node(path=scene.home, db=scene.db)
    try:
        proxy = serving.get_flow_instance(cl, "reverse")
        instance_ids = {proxy.get_instance_id()}
        future = proxy.get_reply_future(proxy.package_input_message({"number": 120}))
        assert future.get_data(timeout=30) == {"output_number": 21}
    finally:
        cl.node.close()
    expect(page.locator("#instances tbody tr")).to_have_count(4)
    new_row = page.locator(f'tr[data-flow-id="{instance_ids.pop()}"]')
    expect(new_row).to_contain_text("s ago")
    expect(page.locator("#live-status")).to_have_text("live")


def test_runs_are_drawn_as_graphs_with_status_and_outputs(
    page: Any, server: str, scene: Scene
) -> None:
    page.goto(server + "/")
    page.get_by_role("link", name="Runs", exact=True).click()
    runs = page.locator("#runs")
    expect(runs).to_contain_text("nightly-report")
    expect(runs).to_contain_text("broken-import")
    page.get_by_role("link", name=scene.failed_run).click()
    expect(page.locator("h1")).to_contain_text("FAILED")
    expect(page.locator("svg.graph g.task")).to_have_count(2)
    expect(page.locator('svg.graph g.task[data-status="FAILED"]')).to_have_count(1)
    expect(page.locator("#task-explode")).to_contain_text("no_such_module_here")
    expect(page.locator("#run-errors")).to_contain_text("explode")
    page.goto(server + "/ui/runs?status=COMPLETED")
    expect(page.locator("#runs")).not_to_contain_text("broken-import")
    page.get_by_role("link", name=scene.done_run).click()
    expect(page.locator("svg.graph g.task")).to_have_count(4)
    expect(page.locator("svg.graph path.edge")).to_have_count(4)
    expect(page.locator('svg.graph g.task[data-status="COMPLETED"]')).to_have_count(4)
    expect(page.locator("#task-publish")).to_contain_text('"published": 3')
    # A box of the graph links to its task's row.
    page.locator('svg.graph a[href="#task-score"]').click()
    assert page.url.endswith("#task-score")


def test_registry_page_shows_peers_nodes_and_flows(page: Any, server: str, peer: str) -> None:
    page.goto(server + "/ui/registry")
    peer_host = re.sub(r"127\.0\.0\.1", "localhost", peer)
    expect(page.locator("#peers")).to_contain_text(peer_host)
    expect(page.locator("#peers")).to_contain_text("connected")
    flows = page.locator("#flows")
    for name in ("Counter", "Failing", "ReverseNumber"):
        expect(flows).to_contain_text(name)
    page.get_by_role("link", name="/flows?format=html").click()
    expect(page.locator("table")).to_contain_text("ReverseNumber")
    no_sideways_scroll(page)


def test_artifacts_page_and_the_op_store_index(page: Any, server: str) -> None:
    page.goto(server + "/ui/artifacts")
    tokenizer = page.locator('#ops tbody[data-op="tokenizer"] tr')
    expect(tokenizer).to_have_count(2)
    expect(tokenizer.first).to_contain_text("1.1.0")
    expect(tokenizer.first).to_contain_text("latest")
    expect(tokenizer.last).to_contain_text("1.0.0")
    page.get_by_role("link", name="/opstore/").click()
    expect(page.locator("h1")).to_contain_text("Artifacts")
    index = httpx.get(server + "/opstore", headers={"Accept": "application/json"}).json()
    assert index["ops"] == ["tokenizer"]
    assert "POST /opstore/v1/save_op_bytes" in index["routes"]


def test_api_docs_work_offline(page: Any, server: str) -> None:
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    page.goto(server + "/")
    page.get_by_role("link", name="API", exact=True).click()
    expect(page.locator(".swagger-ui")).to_contain_text("/flows")
    expect(page.locator(".swagger-ui")).to_contain_text("/register")
    elsewhere = [url for url in requested if not url.startswith(server)]
    assert elsewhere == [], f"the pages fetched from elsewhere: {elsewhere}"


@pytest.mark.parametrize("width", [1400, 1920])
def test_no_page_scrolls_sideways(browser: Any, server: str, scene: Scene, width: int) -> None:
    context = browser.new_context(viewport={"width": width, "height": 900})
    page = context.new_page()
    try:
        for path in (
            "/",
            f"/ui/instances/{scene.counter_id}",
            "/ui/runs",
            f"/ui/runs/{scene.done_run}",
            "/ui/registry",
            "/ui/artifacts",
            "/flows?format=html",
        ):
            page.goto(server + path)
            no_sideways_scroll(page)
    finally:
        context.close()


def test_mesh_clients_still_get_json_at_the_root(server: str) -> None:
    for headers in ({}, {"Accept": "application/json"}, {"Accept": "*/*"}):
        reply = httpx.get(server + "/", headers=headers)
        assert reply.headers["content-type"] == "application/json", headers
        assert reply.json()["registry"] is True
    page = httpx.get(server + "/", headers={"Accept": "text/html"})
    assert page.headers["content-type"].startswith("text/html")


def test_sending_from_another_site_is_refused(server: str, scene: Scene) -> None:
    send = f"{server}/ui/instances/{scene.counter_id}/send"
    form = {"data": '{"i": 1}', "timeout": "5"}
    page = httpx.get(f"{server}/ui/instances/{scene.counter_id}", headers={"Accept": "text/html"})
    token = re.search(r'name="token" value="([^"]+)"', page.text)
    assert token is not None
    no_token = httpx.post(send, data=form)
    assert no_token.status_code == 403
    assert "stale or from elsewhere" in no_token.json()["detail"]
    other_origin = httpx.post(
        send, data={**form, "token": token[1]}, headers={"Origin": "http://evil.example"}
    )
    assert other_origin.status_code == 403
    cross_site = httpx.post(
        send, data={**form, "token": token[1]}, headers={"Sec-Fetch-Site": "cross-site"}
    )
    assert cross_site.status_code == 403
    same = httpx.post(send, data={**form, "token": token[1]}, headers={"Origin": server})
    assert same.status_code == 200
    assert "Reply" in same.text


def test_unknown_pages_say_what_is_missing(page: Any, server: str) -> None:
    page.goto(server + "/ui/instances/no-such-instance")
    expect(page.locator("#missing")).to_contain_text("no flow instance no-such-instance")
    page.goto(server + "/ui/runs/flow:nope")
    expect(page.locator("#missing")).to_contain_text("no task-graph run flow:nope")
    bad = httpx.get(server + "/ui/runs?status=SLEEPING")
    assert bad.status_code == 422
    assert "unknown status" in bad.json()["detail"]
