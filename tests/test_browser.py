"""The app in a real browser: `streamlit run` on 127.0.0.1 driven by Debian's headless Chromium."""

import importlib.util
import os
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from bench.app_server import CHROMIUM, CHROMIUM_ARGS, PAGES, running_app, wait_until_drawn

if not Path(CHROMIUM).exists() or importlib.util.find_spec("playwright") is None:
    if os.environ.get("CI"):
        raise RuntimeError("CI needs Debian's chromium and the playwright package (see .ci/run)")
    pytest.skip("needs Debian's chromium (apt-get install chromium) and playwright", allow_module_level=True)


@pytest.fixture(scope="module")
def server(demo_cache):
    root, _ = demo_cache
    with running_app(root) as url:
        yield url


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def _load(page, url: str) -> float:
    start = time.perf_counter()
    page.goto(url, wait_until="networkidle")
    wait_until_drawn(page)
    page.wait_for_timeout(500)
    return time.perf_counter() - start


def test_a_page_url_opened_first_on_a_fresh_server_goes_through_app_py(server, browser):
    # runs first in this module: the server has served nobody yet
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    _load(page, f"{server}/ranking")
    sidebar = page.locator('[data-testid="stSidebar"]').inner_text()
    assert "Measure" in sidebar and "Explain" in sidebar  # app.py's menu sections
    assert "shared" not in sidebar.split()  # not Streamlit's pages/-folder menu
    assert page.locator('[data-testid="stMain"] h1').inner_text() == "Ranking"
    page.close()


def test_every_page_renders_without_errors(server, browser, tmp_path):
    shots = Path(os.environ.get("QRP_SCREENSHOTS", tmp_path))
    shots.mkdir(parents=True, exist_ok=True)
    page = browser.new_page(viewport={"width": 1400, "height": 1800})
    elsewhere = []  # the app must work offline: nothing but the local server is asked for anything
    page.on(
        "request",
        lambda r: elsewhere.append(r.url) if urlsplit(r.url).netloc not in ("", urlsplit(server).netloc) else None,
    )
    for path in PAGES:
        _load(page, f"{server}/{path}")
        exceptions = page.locator('[data-testid="stException"]')
        assert exceptions.count() == 0, f"{path}: {exceptions.first.inner_text()}"
        main_text = page.locator('[data-testid="stMain"]').inner_text()
        assert len(main_text.strip()) > 40, f"{path}: empty main area"
        name = path.split("?")[0] or "home"
        page.screenshot(path=str(shots / f"{name}.png"))
    page.close()
    assert not elsewhere, f"requests beyond the app's server: {sorted(set(elsewhere))}"


def test_selection_follows_the_user_across_pages_and_into_the_url(server, browser):
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    _load(page, f"{server}/ranking?seed=1")
    assert "seed 1 only" in page.locator('[data-testid="stMain"]').inner_text()
    page.get_by_role("link", name="Cluster browser").click()
    page.wait_for_selector("text=Cluster browser", timeout=30_000)
    page.wait_for_function("() => !document.querySelector('[data-testid=\"stStatusWidget\"]')", timeout=60_000)
    page.wait_for_timeout(500)
    assert "seed 1" in page.locator('[data-testid="stMain"]').inner_text()
    assert "seed=1" in page.url
    page.close()
