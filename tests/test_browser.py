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


@pytest.fixture(scope="module")
def damaged_server(tmp_path_factory):
    """A cache with two studies: one whose study file was edited by hand into a broken one, one whose images
    were deleted or replaced by text and whose probe manifest was cut short."""
    from qrp_core.cache import Cache
    from qrp_core.config import KMeansConfig, ProbeConfig, RunConfig
    from qrp_core.demos.synthetic import make_synthetic_study
    from qrp_core.pipeline import Runner
    from qrp_core.study import load_study

    root = tmp_path_factory.mktemp("damaged")
    config = RunConfig(
        ks=(4,), seeds=(0,), kmeans=KMeansConfig(n_iter=5, n_restarts=1), probe=ProbeConfig(max_epochs=3)
    )
    broken = make_synthetic_study(root / "broken", n_images=300, dim=8)
    Runner(load_study(broken), config, Cache(root / "cache"), show_progress=False).run()
    broken.write_text(broken.read_text().replace("[concepts]", "[concept]"))
    study = load_study(make_synthetic_study(root / "images", n_images=400, dim=8))
    results = Runner(study, config, Cache(root / "cache"), show_progress=False).run()
    for n, path in enumerate(study.image_paths):
        target = study.path.parent / path
        target.unlink() if n % 2 else target.write_text("not an image")
    with running_app(root / "cache") as url:
        yield url, results


@pytest.mark.parametrize(
    ("path", "shown"),
    [
        ("?study=synthetic-300", "Study synthetic-300 cannot be opened"),
        ("ranking?study=synthetic-300", "unknown key concept (did you mean concepts?)"),  # `code` drawn as code
        ("cluster_browser?study=synthetic-400", "image file(s) could not be read"),
        ("ranking?study=synthetic-400&k=77&models=ghost", "From the link, not in this cache: models=ghost, k=77"),
    ],
)
def test_a_damaged_cache_shows_its_problems_in_the_browser_not_tracebacks(damaged_server, browser, path, shown):
    url, _ = damaged_server
    page = browser.new_page(viewport={"width": 1400, "height": 1200})
    page.goto(f"{url}/{path}", wait_until="networkidle")
    page.wait_for_selector('[data-testid="stSidebar"] >> text=Measure', timeout=60_000)
    page.wait_for_selector('[data-testid="stMain"] h1, [data-testid="stAlert"]', timeout=60_000)  # a stopped page
    page.wait_for_function("() => !document.querySelector('[data-testid=\"stStatusWidget\"]')", timeout=60_000)
    page.wait_for_timeout(500)
    exceptions = page.locator('[data-testid="stException"]')
    assert exceptions.count() == 0, f"{path}: {exceptions.first.inner_text()}"
    text = page.locator("body").inner_text()
    assert shown in text.replace("**", ""), text[:2000]
    page.close()


def test_selecting_two_clusters_on_the_map_opens_them_as_a_pair(server, browser):
    page = browser.new_page(viewport={"width": 1400, "height": 1800})
    _load(page, f"{server}/cluster_map?seed=0")
    page.wait_for_selector(".scatterlayer .point", timeout=30_000)
    points = page.locator(".scatterlayer .point")
    assert points.count() == 30  # one marker per cluster of the demo's K=30
    points.nth(0).click(force=True)
    page.wait_for_timeout(1000)
    points.nth(5).click(force=True, modifiers=["Shift"])
    page.wait_for_function("() => new URL(location.href).searchParams.has('pair')", timeout=30_000)
    wait_until_drawn(page)
    pair = dict(part.split("=") for part in urlsplit(page.url).query.split("&"))["pair"].replace("%2C", ",")
    i, j = (int(v) for v in pair.split(","))
    assert i != j
    page.wait_for_selector(f"text=Why {i} and {j} differ", timeout=30_000)
    page.close()
