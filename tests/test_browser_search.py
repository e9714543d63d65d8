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


def wait_js(page, expression: str, timeout: float = 60.0) -> None:
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
    page.set_default_timeout(60_000)  # a loaded shared machine can be slow; the checks stay the same
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
    # a random-weight model: every hit may be below the index's weak-match threshold; then the page says
    # "No close match" and shows the results only on request
    if expected.hits[0].weak:
        assert page.locator("#weak-banner").is_visible() and not cards.first.is_visible()
        page.click("#weak-show")
    assert cards.first.is_visible()
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
    page.set_default_timeout(60_000)
    long_query = " ".join(["blue circle"] * 40)
    page.goto(served.url + "/?" + __import__("urllib.parse").parse.urlencode({"q": long_query, "k": "6"}))
    wait_js(page, "document.body.dataset.searches === '1'")
    assert page.input_value("#q") == long_query
    assert page.locator("#results > li.card").count() == min(6, len(served.searcher))
    assert "tokens" in page.inner_text("#notes")  # the searcher says the query was cut to its context
    page.close()


# ---- previews, moments, weak cue, paging, "more like this", server down (over a fake searcher) ----------
@pytest.fixture(scope="module")
def fake_served(tmp_path_factory):
    from test_service_previews import Fake, write

    from hybridtower.service import create_app
    from hybridtower.service.server import BackgroundServer

    lib = tmp_path_factory.mktemp("browser-lib")
    moment = write(lib / "moment.mp4", "mp4", "libx264", frames=200)  # 20 s, plays as it is
    avi = write(lib / "old.avi", "avi", "mpeg4", frames=60)  # 6 s AVI / MPEG-4 Part 2: Chromium cannot play it
    files = {0: moment, 1: avi, **{i: (moment if i % 2 else avi) for i in range(2, 8)}}
    fake = Fake(files, starts={0: (12.0, 16.0)})
    app = create_app(fake, thumbnail_dir=tmp_path_factory.mktemp("bt"), preview_dir=tmp_path_factory.mktemp("bp"))
    with BackgroundServer(app) as srv:
        srv.fake = srv.searcher = fake
        yield srv


def js_video(prop: str) -> str:
    return f"document.getElementById('player-video').{prop}"


def test_avi_plays_through_its_preview_and_moments_seek(browser, fake_served):
    page = browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    page.set_default_timeout(60_000)  # a loaded shared machine can be slow; the checks stay the same
    page.goto(fake_served.url + "/?q=anything&k=6", wait_until="domcontentloaded")
    wait_js(page, "document.body.dataset.searches === '1'")
    cards = page.locator("#results > li.card")
    assert cards.count() == 6

    # the .avi result: the player gets a preview (H.264/MP4 made by PyAV), and it plays
    avi = page.locator("#results > li.card[data-id='1']")
    assert avi.locator(".name").inner_text().endswith("old.avi")
    page.evaluate("window.seen = []; document.getElementById('player-video').addEventListener('timeupdate', "
                  "(e) => window.seen.push(e.target.currentTime))")
    avi.locator("a").click()
    wait_js(page, "document.getElementById('player').dataset.kind === 'preview'")
    assert page.get_attribute("#player-video", "src") == "/videos/1/preview"
    assert page.get_attribute("#player-link", "href") == "/videos/1"  # "open file" is still the original
    wait_js(page, js_video("readyState") + " >= 2", timeout=30)
    # it plays: currentTime advances through several distinct times (recorded as it goes: a slow machine
    # may reach the end of the 6 s clip between two polls)
    wait_js(page, "new Set(window.seen.filter((t) => t > 0)).size >= 3 && Math.max(...window.seen) > 1", timeout=40)
    seen = page.evaluate("window.seen")
    assert max(seen) > min(t for t in seen if t > 0)
    assert page.evaluate(js_video("error")) is None
    assert page.locator("#player-error").is_hidden(), page.inner_text("#player-error")

    # a moment: the card shows its range and the player starts at the window's start
    first = page.locator("#results > li.card[data-id='0']")
    assert first.locator(".range").inner_text() == "0:12\u20130:16"
    first.locator("a").click()
    wait_js(page, "document.getElementById('player').dataset.kind === 'original' && "
                  "document.getElementById('player-video').getAttribute('src') === '/videos/0'")
    assert page.inner_text("#player-range") == "0:12\u20130:16"
    wait_js(page, js_video("currentTime") + " >= 12", timeout=30)
    page.keyboard.press("Escape")

    # paging past the first page
    assert page.locator("#more-wrap").is_visible()
    page.click("#more")
    wait_js(page, "document.body.dataset.searches === '2'")
    assert cards.count() == 8 and page.locator("#more-wrap").is_hidden()
    assert [cards.nth(i).get_attribute("data-id") for i in range(8)] == [str(i) for i in range(8)]

    # "more like this" on a card
    page.locator("#results > li.card[data-id='2'] button.like").click()
    wait_js(page, "document.body.dataset.searches === '3'")
    assert "more like" in page.inner_text("#status")
    assert "2" not in [cards.nth(i).get_attribute("data-id") for i in range(cards.count())]

    # weak matches: "no close match", the results hidden behind "show anyway"
    fake_served.fake.weak_below = 2.0
    page.fill("#q", "a dog runs on the beach")
    page.press("#q", "Enter")
    wait_js(page, "document.body.dataset.searches === '4'")
    assert page.locator("#weak-banner").is_visible() and "No close match" in page.inner_text("#weak-banner")
    assert "no close match" in page.inner_text("#status")
    assert page.locator("#results > li.card.weak").count() == 6 and not cards.first.is_visible()
    page.click("#weak-show")
    assert cards.first.is_visible() and float(cards.first.evaluate("e => getComputedStyle(e).opacity")) < 0.6
    fake_served.fake.weak_below = None
    assert not errors, errors
    page.close()


def test_server_down_says_so_and_clears_notes(browser, tmp_path):
    from test_service_previews import Fake, write

    from hybridtower.service import create_app
    from hybridtower.service.server import BackgroundServer

    clip = write(tmp_path / "a.mp4", "mp4", "libx264")
    srv = BackgroundServer(create_app(Fake({0: clip}), thumbnail_dir=tmp_path / "t", preview_dir=tmp_path / "p"))
    srv.start()
    page = browser.new_page()
    try:
        page.goto(srv.url + "/?q=" + "+".join(["blue"] * 3), wait_until="domcontentloaded")
        wait_js(page, "document.body.dataset.searches === '1'")
        page.evaluate("document.getElementById('notes').innerHTML = '<li>stale note</li>'")
        srv.stop()
        page.fill("#q", "red")
        page.press("#q", "Enter")
        wait_js(page, "document.getElementById('status').classList.contains('error')")
        assert "Server not reachable" in page.inner_text("#status") and "TypeError" not in page.inner_text("#status")
        assert page.inner_text("#notes") == ""
    finally:
        page.close()
        srv.stop()
