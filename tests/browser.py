"""Real tools for the tests that look at what we serve: a headless Chromium driven through
Playwright's sync API, and Prometheus's promtool to check the metrics we expose.

Chromium is $CIRCLE_CHROMIUM, else /usr/bin/chromium (Debian's `chromium`), else `chromium` on
PATH; Playwright only drives it (its own browsers are never downloaded). promtool is
$CIRCLE_PROMTOOL, else the one `bash .ci/setup --test` unpacks into .ci/cache/prometheus, else
`promtool` on PATH. `bash .ci/setup --test` provides both; a test that needs one that is
missing is skipped, and fails under CI.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from playwright.sync_api import Browser

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM_MISSING = (
    "no chromium: bash .ci/setup --test installs it (Debian's chromium), or set CIRCLE_CHROMIUM "
    "or put chromium on PATH; CI always has one"
)
PROMTOOL_MISSING = (
    "no promtool: bash .ci/setup --test installs it (unpacks Debian's prometheus into "
    ".ci/cache/prometheus), or set CIRCLE_PROMTOOL or put promtool on PATH; CI always has one"
)

# Headless in a container without a GPU, as root (so no sandbox), and quiet on the network:
# without the background-networking flags Chromium calls out to Google's services, and this
# closed network refuses those connections.
CHROMIUM_ARGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
)
PROMTOOL_TIMEOUT = 30  # seconds; checking a page of metrics takes milliseconds


def _executable(explicit: str | None, *candidates: Path | str) -> str | None:
    if explicit:
        return explicit if os.access(explicit, os.X_OK) else None
    for candidate in candidates:
        if os.path.sep in str(candidate):
            if os.access(candidate, os.X_OK):
                return str(candidate)
        else:
            found = shutil.which(candidate)
            if found:
                return found
    return None


def find_chromium() -> str | None:
    return _executable(os.environ.get("CIRCLE_CHROMIUM"), Path("/usr/bin/chromium"), "chromium")


def find_promtool() -> str | None:
    cached = ROOT / ".ci" / "cache" / "prometheus" / "usr" / "bin" / "promtool"
    return _executable(os.environ.get("CIRCLE_PROMTOOL"), cached, "promtool")


def _needs(found: str | None, missing: str) -> str:
    if found is None:
        if os.environ.get("CI"):
            pytest.fail(missing, pytrace=False)  # CI runs them: never a silent skip
        pytest.skip(missing)
    return found


def needs_browser() -> str:
    """Chromium's path; skips the test when there is none (fails it under CI)."""
    return _needs(find_chromium(), CHROMIUM_MISSING)


def needs_promtool() -> str:
    """promtool's path; skips the test when there is none (fails it under CI)."""
    return _needs(find_promtool(), PROMTOOL_MISSING)


@contextmanager
def open_browser(executable: str | None = None) -> Iterator[Browser]:
    """A headless Chromium (`executable`, else `needs_browser()`), closed at the end."""
    from playwright.sync_api import sync_playwright  # only tests that open a browser need it

    chromium = executable or needs_browser()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=chromium, headless=True, args=list(CHROMIUM_ARGS)
        )
        try:
            yield browser
        finally:
            browser.close()


def promtool_check_metrics(text: str) -> subprocess.CompletedProcess[str]:
    """`promtool check metrics` on `text` (a Prometheus text exposition) given on stdin.

    promtool 2.42 says nothing and exits 0 when the text is clean; it prints each lint
    problem on stderr and exits 3; it exits 1 when the text does not parse.
    """
    return subprocess.run(
        [needs_promtool(), "check", "metrics"],
        input=text,
        capture_output=True,
        text=True,
        timeout=PROMTOOL_TIMEOUT,
        check=False,
    )
