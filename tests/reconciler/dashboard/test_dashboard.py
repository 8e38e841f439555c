"""`circle dashboard` next to `circle up`, in a real headless Chromium: a circle of three nodes
(its workload's description is `<script>alert(1)</script>`) is opened page by page and checked
as a person would (three nodes, one leader, 2/2 Ready, a missing signer on a pending proposal,
the description shown as text, no script run, no CSP violation), with screenshots kept in the
test's folder; a share deleted from a QSS backend is repaired and a node killed with SIGKILL
turns NotReady on the open pages, without a reload. The JSON API against `circle get -o json`,
and the HTTP policy (read-only, Host check, token, headers) against the running server."""

from __future__ import annotations

import json
import os
import re
import select
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from tests import output_shapes
from tests.browser import needs_browser, open_browser
from tests.conftest import Result, copy_example, edit, git, run_circle_process
from tests.reconciler.node.runtime_world import needs_sandbox

pytestmark = pytest.mark.slow

HOSTILE = "<script>alert(1)</script>"
EVERYWHERE = "0.0.0.0"  # noqa: S104 - what the dashboard refuses to bind without a token


@dataclass
class Dashboard:
    site: Path
    url: str
    process: subprocess.Popen[str]
    shots: Path  # screenshots, in the test's folder
    started: list[subprocess.Popen[str]] = field(default_factory=list)  # stopped at the end

    def get(self, name: str) -> Result:
        return run_circle_process("get", name, "--repo", str(self.site / "circle"),
                                  "--store", f"sqlite:{self.site / 'state.db'}",
                                  "-o", "json")  # fmt: skip


def wait_for(condition: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"{what}: not within {seconds:g} s"
        time.sleep(0.25)


def start_dashboard(*args: str) -> tuple[subprocess.Popen[str], dict[str, Any]]:
    """`circle dashboard ARGS -o json` running; what it printed when it was ready."""
    process = subprocess.Popen(
        [sys.executable, "-m", "reconciler", "dashboard", *args, "-o", "json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    ready, _, _ = select.select([process.stdout], [], [], 60)
    assert ready, "the dashboard did not say where it listens within 60 s"
    line = process.stdout.readline()
    assert line, process.stderr.read() if process.stderr else "no output"
    output_shapes.check(["dashboard", *args, "-o", "json"], 0, line)
    return process, json.loads(line)


def fetch(url: str, **headers: str) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status, {k.lower(): v for k, v in answer.headers.items()}, answer.read()
    except urllib.error.HTTPError as error:
        with error:  # its socket closes with it
            return error.code, {k.lower(): v for k, v in error.headers.items()}, error.read()


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


@pytest.fixture(scope="module")
def dashboard(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dashboard]:
    needs_sandbox()
    needs_browser()
    root = tmp_path_factory.mktemp("dashboard")
    repo = copy_example(root / "repo")
    workload = repo / "workloads" / "langid.yaml"
    edit(workload, """description: 'Language identification over HTTP: POST /v1/predict with \
{"text": "..."}.'""", f"description: '{HOSTILE}'")  # fmt: skip
    site = root / "up"
    started: list[subprocess.Popen[str]] = []
    try:
        done = run_circle_process("up", str(repo), "--dir", str(site), "--ttl", "3",
                                  "--scrub-interval", "2", "-o", "json")  # fmt: skip
        assert done.code == 0, done.stderr
        process, said = start_dashboard("--dir", str(site), "--port", "0", "--interval", "0.5")
        started.append(process)
        assert said["circle"] == "example-ai-circle"
        found = Dashboard(site, said["url"], process, root / "screenshots", started)
        found.shots.mkdir()
        yield found
    finally:
        for running in started:
            running.terminate()
            running.wait(timeout=15)
            for stream in (running.stdout, running.stderr):
                if stream is not None:
                    stream.close()
        run_circle_process("down", "--dir", str(site), "--purge")


def test_every_page_shows_what_a_person_checks(dashboard: Dashboard) -> None:
    with open_browser() as browser:
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        problems: list[str] = []
        dialogs: list[str] = []
        page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda error: problems.append(str(error)))
        page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))

        def shot(name: str) -> None:
            page.screenshot(path=str(dashboard.shots / f"{name}.png"), full_page=True)

        page.goto(dashboard.url)
        # Playwright's `expect` polls from its own world: the page's CSP forbids eval.
        expect(page.locator("#card-workload-langid .big")).to_have_text("2/2", timeout=30_000)
        assert page.inner_text("#card-nodes .big") == "3/3"
        leader = page.inner_text("#card-leader .big")
        assert leader in ("node-a", "node-b", "node-c")
        assert page.locator(".slotmap .slot.ready").count() == 2
        assert page.locator(".slotmap .node.up").count() == 3
        shot("overview")

        page.goto(f"{dashboard.url}nodes")
        rows = page.locator("tr[id^=node-]")
        assert rows.count() == 3
        assert [rows.nth(i).locator(".status").inner_text() for i in range(3)] == ["Ready"] * 3
        assert page.inner_text(f"#node-{leader} td:nth-child(3)") == "leader"
        assert page.locator("text=leader").count() == 1
        shot("nodes")

        page.goto(f"{dashboard.url}workloads")
        assert page.inner_text("#workload-langid .ready-count") == "2/2 Ready"
        assert page.inner_text("#workload-langid .description") == HOSTILE  # text, not markup
        assert page.locator("script").count() == 1  # live.js, and nothing the circle wrote
        assert page.locator("#workload-langid svg.chart").count() == 1
        # the chart draws once the collector has two samples
        expect(page.locator("#workload-langid polyline.ready")).to_have_count(1, timeout=10_000)
        shot("workloads")

        page.goto(f"{dashboard.url}volumes")
        page.wait_for_selector("#volume-model-data tr.healthy", timeout=30_000)
        assert "6/6 (k=4)" in page.inner_text("#volume-model-data tr.healthy")
        shot("volumes")

        page.goto(f"{dashboard.url}events?node=node-a")
        nodes = page.locator("table.events tbody td:nth-child(5)").all_inner_texts()
        assert nodes
        assert set(nodes) == {"node-a"}
        page.goto(f"{dashboard.url}events")
        assert "CommitApplied" in page.inner_text("table.events")
        shot("events")

        # A proposal one owner signed: the open chain page shows it, and who is missing.
        page.goto(f"{dashboard.url}chain")
        assert page.locator("article.proposal").count() == 0
        repo = dashboard.site / "circle"
        edit(repo / "workloads" / "langid.yaml", "replicas: 2", "replicas: 3")
        git(repo, "commit", "-qam", "langid: one more replica")
        alice = dashboard.site / "keys" / "owners" / "alice"
        signed = run_circle_process("approve", "--repo", str(repo), "--key", str(alice))
        assert signed.code == 0, signed.stderr
        page.wait_for_selector("article.proposal.waiting", timeout=15_000)
        proposal = page.locator("article.proposal.waiting")
        assert "langid: one more replica" in proposal.inner_text()
        assert "replicas 2 -> 3" in proposal.locator(".changes").inner_text()
        workloads_rule = proposal.locator("table.rules tr", has_text="workloads")
        assert workloads_rule.locator(".signed").inner_text() == "alice"
        assert workloads_rule.locator(".missing").inner_text() == "bob, carol"
        assert page.locator(".verdict").first.inner_text() == "not approved"
        shot("chain")
        # Unapproved, main's tip sets nothing: both readers still say 2 replicas.
        printed = json.loads(dashboard.get("workloads").stdout)["workloads"]
        assert [w["replicas"] for w in printed] == [2]
        assert [w["replicas"] for w in _api(dashboard, "workloads")["workloads"]] == [2]

        assert dialogs == []
        assert problems == []


def _api(dashboard: Dashboard, name: str) -> Any:
    status, headers, body = fetch(f"{dashboard.url}api/{name}")
    assert status == 200, body
    assert headers["content-type"] == "application/json; charset=utf-8"
    return json.loads(body)


@pytest.mark.parametrize("name", ["nodes", "workloads", "assignments", "volumes"])
def test_the_api_is_what_circle_get_prints(dashboard: Dashboard, name: str) -> None:
    """Read at two moments, the two agree once the circle holds still (within seconds)."""
    last: list[Any] = []

    def same() -> bool:
        printed = dashboard.get(name)
        assert printed.code == 0, printed.stderr
        last[:] = [_api(dashboard, name), json.loads(printed.stdout)]
        return bool(last[0] == last[1])

    wait_for(same, 20, f"/api/{name} and `circle get {name} -o json` to agree: {last}")


def test_the_events_api_filters_as_the_page(dashboard: Dashboard) -> None:
    printed = run_circle_process(
        "events",
        "--repo",
        str(dashboard.site / "circle"),
        "--store",
        f"sqlite:{dashboard.site / 'state.db'}",
        "-o",
        "json",
    )
    assert printed.code == 0, printed.stderr
    logged = {(e["timeMs"], e["node"], e["reason"]) for e in json.loads(printed.stdout)}
    served = _api(dashboard, "events")["events"]
    assert [e["timeMs"] for e in served] == sorted((e["timeMs"] for e in served), reverse=True)
    assert {(e["timeMs"], e["node"], e["reason"]) for e in served} <= logged
    warnings = _api(dashboard, "events?type=Warning&node=node-b")["events"]
    assert all(e["type"] == "Warning" and e["node"] == "node-b" for e in warnings)
    by_prefix = _api(dashboard, "events?object=node/")["events"]
    assert by_prefix
    assert all(e["object"].startswith("node/") for e in by_prefix)


def test_the_http_policy(dashboard: Dashboard) -> None:
    status, headers, body = fetch(dashboard.url)
    assert status == 200
    assert "script-src 'self'" in headers["content-security-policy"]
    assert "unsafe-inline" not in headers["content-security-policy"]
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["x-frame-options"] == "DENY"
    assert "server" not in headers
    assert b"<html" in body

    status, _, body = fetch(f"{dashboard.url}nodes?partial=1")
    assert status == 200
    assert b"<html" not in body
    assert b'id="node-node-a"' in body

    post = urllib.request.Request(f"{dashboard.url}nodes", data=b"x", method="POST")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(post, timeout=10)
    refused.value.close()
    assert refused.value.code == 405
    assert refused.value.headers["allow"] == "GET, HEAD"

    status, headers, body = fetch(dashboard.url, Host="attacker.example")  # DNS rebinding
    assert (status, body) == (421, b"unknown Host header\n")
    assert headers["content-security-policy"]

    status, _, body = fetch(f"{dashboard.url}api/keys")
    assert status == 404
    assert json.loads(body)["error"].startswith("no API 'keys'")
    status, _, _ = fetch(f"{dashboard.url}static/..%2f..%2fapp.py")
    assert status == 404


def test_a_token_guards_a_wider_bind(dashboard: Dashboard, tmp_path: Path) -> None:
    site = str(dashboard.site)
    done = run_circle_process("dashboard", "--dir", site, "--host", EVERYWHERE, "--port", "0")
    assert done.code == 2
    assert "give --token-file" in done.stderr
    short = tmp_path / "short"
    short.write_text("abc\n")
    done = run_circle_process("dashboard", "--dir", site, "--port", "0", "--token-file",
                              str(short))  # fmt: skip
    assert done.code == 2
    assert "at least 16 printable characters" in done.stderr

    token = "k" * 8 + "4f1c9e2a7b3d5e60"
    (tmp_path / "token").write_text(token + "\n")
    process, said = start_dashboard("--dir", site, "--host", EVERYWHERE, "--port", "0",
                                    "--token-file", str(tmp_path / "token"))  # fmt: skip
    dashboard.started.append(process)
    url = said["url"].replace(EVERYWHERE, "127.0.0.1")
    status, headers, body = fetch(f"{url}api/nodes")
    assert status == 401
    assert headers["www-authenticate"].startswith("Bearer")
    assert fetch(f"{url}api/nodes", Authorization="Bearer wrong-token-of-some-length")[0] == 401
    status, _, body = fetch(f"{url}api/nodes", Authorization=f"Bearer {token}")
    assert status == 200
    assert len(json.loads(body)["nodes"]) == 3

    opener = urllib.request.build_opener(_NoRedirect)
    with pytest.raises(urllib.error.HTTPError) as moved:
        opener.open(f"{url}nodes?token={token}&x=1", timeout=10)
    moved.value.close()
    assert moved.value.code == 303
    assert moved.value.headers["location"] == "/nodes?x=1"
    cookie = moved.value.headers["set-cookie"]
    assert "HttpOnly" in cookie
    assert "SameSite=strict" in cookie
    status, _, body = fetch(f"{url}nodes", Cookie=cookie.split(";")[0])
    assert status == 200
    assert b'id="node-node-a"' in body
    assert fetch(f"{url}nodes?token=wrong")[0] == 401


def test_repairs_and_a_lost_node_show_on_the_open_pages(dashboard: Dashboard) -> None:
    with open_browser() as browser:
        volumes = browser.new_page(viewport={"width": 1280, "height": 700})
        volumes.goto(f"{dashboard.url}volumes")
        volumes.wait_for_selector("#volume-model-data tr.healthy", timeout=30_000)
        volumes.evaluate("window.kept = 'the same page'")
        shares = sorted((dashboard.site / "qss").glob("*/s/*/*/*"))
        assert shares
        shares[0].unlink()  # one share of the model lost on one backend
        repairs = volumes.locator("#volume-model-data tr.healthy td:last-child")
        expect(repairs).to_have_text(re.compile(r"^\s*1 \(last "), timeout=30_000)
        (scrubbed,) = _api(dashboard, "volumes")["volumes"][0]["objects"]
        assert (scrubbed["healthy"], scrubbed["n"], scrubbed["repairs"]) == (6, 6, 1)
        assert volumes.evaluate("window.kept") == "the same page"
        volumes.screenshot(path=str(dashboard.shots / "volumes-repaired.png"), full_page=True)

        page = browser.new_page(viewport={"width": 1280, "height": 700})
        page.goto(f"{dashboard.url}nodes")
        page.evaluate("window.kept = 'the same page'")
        status = json.loads(run_circle_process("status", "--dir", str(dashboard.site),
                                               "-o", "json").stdout)  # fmt: skip
        leader = _api(dashboard, "nodes")["leader"]
        victim = next(agent for agent in status["agents"] if agent["node"] != leader)
        os.kill(victim["pid"], signal.SIGKILL)
        expect(page.locator(f"#node-{victim['node']} .status")).to_have_text(
            "NotReady", timeout=30_000
        )
        assert page.evaluate("window.kept") == "the same page"  # no reload
        assert "lost" in page.inner_text(f"#node-{victim['node']} .lease")
        page.screenshot(path=str(dashboard.shots / "node-lost.png"), full_page=True)
        page.goto(dashboard.url)
        assert page.inner_text("#card-nodes .big") == "2/3"
        assert page.locator(f".slotmap .node.down[data-node={victim['node']}]").count() == 1
        page.screenshot(path=str(dashboard.shots / "overview-node-lost.png"), full_page=True)
