"""
The status page (C{/} of the admin endpoint) in a real headless Chromium,
driven by Selenium through Debian's C{chromedriver}: it loads without
console errors, shows a route added through C{revproxyctl} within its
refresh interval, and shows an upstream going down.

Chromium and chromedriver come from Debian's C{chromium} and
C{chromium-driver} packages (C{.ci/run} installs them).  Without them the
test is skipped with the reason, except under CI (C{CI=true}), where it
fails.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet.threads import deferToThread

from revproxy.ops.statuspage import REFRESH_SECONDS
from tests.integration.etcd_fixture import EtcdMember
from tests.integration.test_fleet import Node, run
from tests.integration.upstreams import UpstreamServer, echo


def _missing(why: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{why}; CI must run the browser test (see .ci/run)", pytrace=False)
    pytest.skip(f"{why}: apt-get install chromium chromium-driver")


@pytest.fixture
def browser() -> Iterator[Any]:
    """
    A headless Chromium under Selenium, quit afterwards.
    """
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        _missing("selenium is not installed (it is in the test extra)")
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if binary is None or driver is None:
        _missing("no chromium or chromedriver on PATH")
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--no-first-run", "--disable-extensions"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    chrome = webdriver.Chrome(service=Service(executable_path=driver), options=options)
    chrome.set_page_load_timeout(20)
    try:
        yield chrome
    finally:
        chrome.quit()


async def poll(check: Callable[[], Any], timeout: float, what: str) -> float:
    """
    Call blocking C{check} in a thread until it is true; the seconds it took.
    """
    start = time.monotonic()
    while True:
        if await deferToThread(check):
            return time.monotonic() - start
        if time.monotonic() - start > timeout:
            raise AssertionError(f"{what}: not within {timeout}s")


def severe(browser: Any) -> list[dict[str, Any]]:
    return [e for e in browser.get_log("browser") if e.get("level") == "SEVERE"]


@pytest_twisted.ensureDeferred
async def test_status_page_in_chromium(browser: Any, etcd: EtcdMember, tmp_path: Path) -> None:
    """The status page loads in Chromium with no console error, shows a route added by revproxyctl within its refresh interval, and shows its upstream going down."""

    upstream = await UpstreamServer(echo).start()
    node = await Node(
        etcd, tmp_path / "p", "--health-path", "/health", "--health-interval", "0.3",
        "--health-timeout", "0.5", "--health-fall", "1", "--health-rise", "1",
    ).start()
    try:
        url = f"http://127.0.0.1:{node.adminPort}/"

        def load() -> bool:
            browser.get(url)
            return "revproxy status" in browser.title

        await poll(load, 10, "the page loading")
        assert await deferToThread(severe, browser) == []
        row = f'tr[data-host="web.example.com"][data-upstream="{upstream.address}"]'

        # The page replaces its content on every refresh: each read is one
        # script, so that no element goes stale between finding and reading.
        def query(script: str, selector: str) -> Any:
            return browser.execute_script(
                "const e = document.querySelector(arguments[0]);"
                " return e ? " + script + " : null;",
                selector,
            )

        def rows() -> list[Any]:
            return [1] if query("true", row) else []

        assert await deferToThread(rows) == []
        added = await run(etcd, "add", "web.example.com", upstream.address, "--wait")
        assert added.returncode == 0, added.stderr
        took = await poll(lambda: bool(rows()), REFRESH_SECONDS + 1.5, "the new route on the page")
        print(f"route on the page {took:.2f}s after add --wait returned")
        # The node's own record is on the page too, with its admin URL.
        text = await deferToThread(query, "e.innerText", "#nodes")
        assert node.id in text, text

        def state() -> str | None:
            return query("e.getAttribute('data-state')", row)  # type: ignore[no-any-return]

        await poll(lambda: state() == "up", 5, "the upstream up")
        await upstream.stop()
        await poll(lambda: state() == "down", 5, "the upstream shown down")
        cell = await deferToThread(query, "e.innerText", row + " td.down")
        assert cell == "down"
        errors = await deferToThread(severe, browser)
        assert errors == [], errors
    finally:
        node.process.kill()
        await upstream.stop()
