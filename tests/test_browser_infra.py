"""The test tools themselves: a real headless Chromium opens a page we serve, runs its script
and takes a screenshot; promtool accepts a clean exposition and names what is wrong in a bad one.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.browser import open_browser, promtool_check_metrics

PAGE = b"""<!doctype html>
<html><head><meta charset="utf-8"><title>infra</title></head>
<body>
  <p id="said">before</p>
  <button id="go" onclick="document.getElementById('said').textContent = 'clicked'">go</button>
</body></html>
"""


class _Page(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(PAGE)))
        self.end_headers()
        self.wfile.write(PAGE)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def page_url() -> Iterator[str]:
    with ThreadingHTTPServer(("127.0.0.1", 0), _Page) as server:
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield f"http://127.0.0.1:{server.server_address[1]}/"
        finally:
            server.shutdown()
            thread.join(timeout=10)


def test_chromium_runs_a_served_page_and_takes_a_screenshot(page_url: str, tmp_path: Path) -> None:
    with open_browser() as browser:
        page = browser.new_page()
        page.goto(page_url)
        assert page.title() == "infra"
        assert page.text_content("#said") == "before"
        page.click("#go")
        assert page.text_content("#said") == "clicked"
        shot = tmp_path / "page.png"
        page.screenshot(path=str(shot))
    assert shot.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")


def test_promtool_accepts_a_clean_exposition() -> None:
    checked = promtool_check_metrics(
        "# HELP x_total Things done.\n# TYPE x_total counter\nx_total 1\n"
    )
    assert (checked.returncode, checked.stdout, checked.stderr) == (0, "", "")


def test_promtool_names_lint_problems() -> None:
    checked = promtool_check_metrics("# HELP x Things done.\n# TYPE x counter\nx 1\n")
    assert checked.returncode == 3
    assert checked.stderr == 'x counter metrics should have "_total" suffix\n'

    checked = promtool_check_metrics("x_total 1\n")
    assert checked.returncode == 3
    assert checked.stderr == "x_total no help text\n"


def test_promtool_rejects_text_that_does_not_parse() -> None:
    checked = promtool_check_metrics("x_total{ 1\n")
    assert checked.returncode == 1
    assert "text format parsing error" in checked.stderr
