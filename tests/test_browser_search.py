"""The web page in headless Chromium (Debian's ``chromium`` driven by Playwright, no downloaded browsers).

The service runs on 127.0.0.1 over a real tiny index (real ``Searcher``, random-weight ``pig-tiny``).
The test types a query, checks the grid shows the video the Python API ranks first (and the same
order), that thumbnails load, that clicking a card plays the clip, and that an empty query shows an error.

Chromium or Playwright missing is a FAILURE (CI must run this test: ``scripts/setup-browser.sh`` installs
both). Developers without a browser can skip it explicitly with ``HYBRIDTOWER_SKIP_BROWSER_TEST=1``.
``HYBRIDTOWER_CHROMIUM`` points at another Chromium binary.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

from test_service_real import shared_real_index  # noqa: E402 (the same index as the service tests)

SKIP_ENV = "HYBRIDTOWER_SKIP_BROWSER_TEST"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--autoplay-policy=no-user-gesture-required",
]

if os.environ.get(SKIP_ENV) == "1":
    pytest.skip(f"{SKIP_ENV}=1: browser test skipped on request", allow_module_level=True)


def wait_js(page, expression: str, timeout: float = 15.0) -> None:
    """Poll ``expression`` with ``page.evaluate`` until truthy (``wait_for_function`` needs eval, which the
    page's Content-Security-Policy forbids - and the test keeps that policy on)."""
    deadline = time.monotonic() + timeout
    while not page.evaluate(expression):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for: {expression}")
        time.sleep(0.05)


def chromium_path() -> str:
    for cand in (os.environ.get("HYBRIDTOWER_CHROMIUM"), "/usr/bin/chromium", shutil.which("chromium"),
                 shutil.which("chromium-browser")):
        if cand and Path(cand).is_file() and os.access(cand, os.X_OK):
            return cand
    pytest.fail("Chromium not found (/usr/bin/chromium): run `bash scripts/setup-browser.sh` "
                f"(apt-get install chromium), or set {SKIP_ENV}=1 to skip this test on purpose")


@pytest.fixture(scope="module")
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("Playwright is not installed: `pip install playwright` (in the `test` extra; do not run "
                    f"`playwright install`), or set {SKIP_ENV}=1 to skip this test on purpose")
    exe = chromium_path()
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=exe, headless=True, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    from hybridtower.service import create_app
    from hybridtower.service.server import BackgroundServer

    root, searcher = shared_real_index(tmp_path_factory)
    app = create_app(searcher, thumbnail_dir=tmp_path_factory.mktemp("browser-thumbs"), default_k=6)
    with BackgroundServer(app) as srv:
        srv.searcher = searcher
        yield srv


def test_page_search_grid_and_playback(browser, served):
    page = browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)  # CSP violations too
    external: list[str] = []
    page.on("request", lambda req: None if req.url.startswith(served.url) else external.append(req.url))
    page.goto(served.url + "/", wait_until="domcontentloaded")

    query = "a red square moves to the left"
    expected = served.searcher.search(query, k=6)
    expected_ids = [str(h.id) for h in expected.hits]
    assert expected_ids, "the real searcher returned nothing"

    page.fill("#q", query)
    page.press("#q", "Enter")
    wait_js(page, "document.body.dataset.searches === '1'")
    cards = page.locator("#results > li.card")
    assert cards.count() == len(expected_ids)
    shown = [cards.nth(i).get_attribute("data-id") for i in range(cards.count())]
    assert shown == expected_ids  # same videos, same order as the Python API
    first = cards.first
    assert first.locator(".name").inner_text().endswith(Path(expected.hits[0].path).name)
    assert f"{round(expected.hits[0].score, 6):.3f}" in first.locator(".score").inner_text()
    assert "result" in page.inner_text("#status")
    assert "q=a+red+square" in page.url  # shareable URL

    # every thumbnail is a decoded image
    wait_js(page, "[...document.querySelectorAll('#results img')].every(i => i.complete && i.naturalWidth > 0)")

    # a click plays the clip in the <video> element
    first.locator("a").click()
    assert page.locator("#player").is_visible()
    wait_js(page, f"document.getElementById('player-video').getAttribute('src') === '/videos/{expected_ids[0]}'")
    assert page.get_attribute("#player", "data-kind") == "original"  # an H.264 MP4 plays as it is
    assert page.get_attribute("#player-link", "href") == f"/videos/{expected_ids[0]}"
    wait_js(page, "document.getElementById('player-video').readyState >= 2")
    wait_js(page, "document.getElementById('player-video').currentTime > 0 || "
                           "document.getElementById('player-video').ended")
    assert page.locator("#player-error").is_hidden()
    page.keyboard.press("Escape")
    assert page.locator("#player").is_hidden()

    assert not errors, errors  # no script error, no CSP violation, no failed resource so far

    # an empty query: an error line, no grid, no crash
    page.fill("#q", "   ")
    page.click("#go")
    wait_js(page, "document.getElementById('status').classList.contains('error')")
    assert "empty" in page.inner_text("#status")
    assert page.locator("#results > li").count() == 0
    assert errors == ["Failed to load resource: the server responded with a status of 400 (Bad Request)"], errors
    assert not external, external  # nothing leaves the server (no CDN)
    page.close()


def test_shared_link_runs_search_and_shows_notes(browser, served):
    page = browser.new_page()
    long_query = " ".join(["blue circle"] * 40)
    page.goto(served.url + "/?" + __import__("urllib.parse").parse.urlencode({"q": long_query, "k": "6"}))
    wait_js(page, "document.body.dataset.searches === '1'")
    assert page.input_value("#q") == long_query
    assert page.locator("#results > li.card").count() == min(6, len(served.searcher))
    assert "tokens" in page.inner_text("#notes")  # the searcher says the query was cut to its context
    page.close()
