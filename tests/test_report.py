"""The HTML report: one self-contained file whose numbers, pairs and images are the engine's."""

import base64
import io
import os
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from qrp_core.analyses.pairs import most_informative_comparison, nearest_images
from qrp_core.cache import Cache
from qrp_core.cli import main
from qrp_core.config import KMeansConfig, ProbeConfig, RunConfig
from qrp_core.demos.study_files import write_study
from qrp_core.pipeline import Runner
from qrp_core.report import IMAGES_PER_CLUSTER, PAIRS_PER_MODEL, THUMBNAIL_SIDE, build_report, report_pairs
from qrp_core.results import load_probe_run
from qrp_core.split import TEST
from qrp_core.study import load_study


class Page(HTMLParser):
    """The tables (rows of cell texts), image sources with their alt texts, and script sources of a page."""

    def __init__(self, text: str):
        super().__init__()
        self.tables, self.images, self.script_sources, self.links, self._cell = [], [], [], [], None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = ""
        elif tag == "img":
            self.images.append((attrs["src"], attrs.get("alt")))
        elif tag == "script" and "src" in attrs:
            self.script_sources.append(attrs["src"])
        elif tag == "link":
            self.links.append(attrs.get("href"))

    def handle_endtag(self, tag):
        if tag in ("td", "th"):
            self.tables[-1][-1].append(self._cell.strip())
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell += data


@pytest.fixture(scope="module")
def photo_study(tmp_path_factory):
    """120 drawn images, each a unique flat colour (so a thumbnail says which image it is), in 4 labelled
    groups that a planted model separates; two seeds at K=4."""
    root = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(0)
    n = 120
    labels = np.repeat(np.array(["apple", "boat", "cat", "drum"]), n // 4)
    colours = rng.integers(0, 256, size=(n, 3))
    (root / "images").mkdir()
    paths = []
    for i, colour in enumerate(colours):
        paths.append(f"images/{i:03d}.png")
        Image.new("RGB", (64, 48), tuple(int(c) for c in colour)).save(root / paths[-1])
    ids = np.array([f"p{i:03d}" for i in range(n)], dtype=object)
    code = np.searchsorted(["apple", "boat", "cat", "drum"], labels)
    shade = rng.integers(0, 2, n)
    concepts = pd.DataFrame({"image_id": ids, "concept": [f"[Color] c{v}" for v in shade], "group": "colour"})
    features = {
        "planted": np.eye(4)[code] * 4 + rng.normal(scale=0.6, size=(n, 4)),
        "noise": rng.normal(size=(n, 4)),
    }
    study = load_study(write_study(root, "photos", ids, concepts, features, {}, labels=labels, paths=np.array(paths)))
    cache = Cache(root / "cache")
    config = RunConfig(
        ks=(4,), seeds=(0, 1), kmeans=KMeansConfig(n_iter=10, n_restarts=2), probe=ProbeConfig(max_epochs=15)
    )
    Runner(study, config, cache, show_progress=False).run()
    return study, cache


def test_the_report_is_one_file_that_asks_for_nothing(photo_study):
    from plotly.offline import get_plotlyjs

    study, cache = photo_study
    page = build_report(study, cache, k=4)
    parsed = Page(page)
    assert parsed.script_sources == [] and parsed.links == []
    assert all(src.startswith("data:image/") for src, _ in parsed.images)
    assert page.count(get_plotlyjs()) == 1  # inlined once, however many figures use it
    assert page.count('class="plotly-graph-div"') >= 1


def test_ranking_cells_are_mean_and_sample_std_over_seeds(photo_study):
    study, cache = photo_study
    ranking = Page(build_report(study, cache, k=4)).tables[0]
    header = ranking[0]
    rows = pd.read_parquet(cache.root / "results" / "photos.parquet")
    for model in ("planted", "noise"):
        nmi = 100 * rows.loc[rows["model"] == model, "nmi"].to_numpy()
        shown = next(r for r in ranking[1:] if r[0] == model)[header.index("NMI")]
        assert shown == f"{nmi.mean():.2f} ± {np.std(nmi, ddof=1):.2f}"


def _brute_force_most_confused(cache, probe, n):
    run = load_probe_run(cache, probe)
    test = run.split == TEST
    truth, guess = run.assignments[test], run.predictions[test]
    k = run.n_clusters
    scores = []
    for i in range(k):
        for j in range(i + 1, k):
            mixed = np.sum((truth == i) & (guess == j)) + np.sum((truth == j) & (guess == i))
            size = np.sum(truth == i) + np.sum(truth == j)
            if mixed:
                scores.append((-mixed / size, i, j))
    return [(i, j) for _, i, j in sorted(scores)[:n]]


def test_without_a_pairs_comparison_the_pairs_are_the_probes_most_confused(photo_study):
    study, cache = photo_study
    rows = pd.read_parquet(cache.root / "results" / "photos.parquet")
    for model in ("planted", "noise"):
        shown = report_pairs(cache, study, rows, model)
        probe = rows.loc[(rows["model"] == model) & (rows["seed"] == 0), "probe"].iloc[0]
        assert shown.seed == 0 and "confuses most" in shown.title
        assert list(zip(shown.rows["i"], shown.rows["j"])) == _brute_force_most_confused(cache, probe, PAIRS_PER_MODEL)


def test_each_pair_shows_its_clusters_nearest_images_as_small_thumbnails(photo_study):
    study, cache = photo_study
    rows = pd.read_parquet(cache.root / "results" / "photos.parquet")
    shown = report_pairs(cache, study, rows, "noise")
    clustering = load_probe_run(cache, shown.rows["probe"].iloc[0]).clustering
    i, j = int(shown.rows["i"].iloc[0]), int(shown.rows["j"].iloc[0])
    expected = [
        *nearest_images(cache, clustering, i, IMAGES_PER_CLUSTER),
        *nearest_images(cache, clustering, j, IMAGES_PER_CLUSTER),
    ]
    page = build_report(study, cache, k=4, models=["noise"])
    thumbnails = [(src, alt) for src, alt in Page(page).images if src.startswith("data:image/jpeg")]
    first_pair = thumbnails[: len(expected)]
    for (src, alt), index in zip(first_pair, expected):
        image = Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1])))
        assert max(image.size) <= THUMBNAIL_SIDE and alt == study.labels[index]
        drawn = np.array(Image.open(study.path.parent / study.image_paths[index]).convert("RGB"))[0, 0]
        assert np.abs(np.asarray(image).reshape(-1, 3).mean(0) - drawn).max() < 4  # the same flat colour


def test_with_a_pairs_comparison_the_pairs_are_its_largest_drops(demo_cache):
    root, study = demo_cache
    cache = Cache(root)
    rows = pd.read_parquet(root / "results" / f"{study.name}.parquet")
    k = int(rows["k"].mode()[0])
    rows = rows[(rows["k"] == k) & (rows["groups"] == "+".join(study.concepts.group_names))]
    pairs = cache.read_table(study.name, "pairs")
    for model in rows["model"].unique():
        base, added, _ = most_informative_comparison(pairs[pairs["model"] == model], k)
        mine = pairs[
            (pairs["model"] == model) & (pairs["k"] == k) & (pairs["base"] == base) & (pairs["added"] == added)
        ]
        first = mine[mine["seed"] == mine["seed"].min()]
        largest = sorted(zip(-first["drop"], first["i"], first["j"]))[:PAIRS_PER_MODEL]
        shown = report_pairs(cache, study, rows, model)
        assert f"when {added} joins {base}" in shown.title
        assert np.allclose(shown.rows["drop (points)"], [-100 * d for d, _, _ in largest])
        assert set(shown.rows["probe"]) <= set(first["probe_b"])


def test_the_command_writes_the_file_and_refuses_what_it_cannot_do(photo_study, tmp_path, capsys):
    study, cache = photo_study
    out = tmp_path / "out" / "report.html"
    assert main(["report", str(study.path), "--cache", str(cache.root), "--out", str(out)]) == 0
    assert out.read_text().startswith("<!DOCTYPE html>") and [p.name for p in out.parent.iterdir()] == ["report.html"]
    assert (
        main(["report", str(study.path), "--cache", str(cache.root), "--k", "7", "--out", str(tmp_path / "x.html")])
        == 2
    )
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith("error: ") and "--k from [4]" in error
    assert not (tmp_path / "x.html").exists()


def test_the_report_draws_offline_in_chromium(photo_study, tmp_path):
    from bench.app_server import CHROMIUM, CHROMIUM_ARGS

    playwright = pytest.importorskip("playwright.sync_api", reason="needs playwright")
    if not Path(CHROMIUM).exists():
        pytest.skip("needs Debian's chromium (apt-get install chromium)")
    study, cache = photo_study
    report = tmp_path / "report.html"
    report.write_text(build_report(study, cache, k=4))
    asked, errors = [], []
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1300, "height": 1000})
        # the network is closed: any request but the file itself is recorded and refused
        page.route(
            "**/*",
            lambda route: (
                route.continue_()
                if route.request.url == report.as_uri()
                else (asked.append(route.request.url), route.abort())
            ),
        )
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto(report.as_uri())
        page.wait_for_function("document.querySelectorAll('.plotly-graph-div .main-svg').length > 0")
        graphs = page.locator(".plotly-graph-div").count()
        drawn = page.locator(".plotly-graph-div .main-svg").count()
        broken = page.evaluate("[...document.images].filter(i => !i.complete || i.naturalWidth === 0).length")
        shots = Path(os.environ.get("QRP_SCREENSHOTS", tmp_path))
        shots.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=shots / "report.png", full_page=True)
        browser.close()
    assert asked == [] and errors == []
    assert graphs >= 1 and drawn >= graphs  # every figure drew its svg (plotly draws 2-3 per figure)
    assert broken == 0 and len(Page(report.read_text()).images) > 0


def test_the_ranking_page_builds_the_report_of_the_sidebars_selection(photo_study, monkeypatch):
    from streamlit.testing.v1 import AppTest

    study, cache = photo_study
    monkeypatch.setenv("QRP_CACHE", str(cache.root))
    at = AppTest.from_file(str(Path(__file__).resolve().parents[1] / "app.py"), default_timeout=60)
    at.query_params["models"] = "noise"
    at.run()
    at.switch_page("pages/ranking.py").run()
    assert not [b for b in at.get("download_button") if b.proto.label == "Download report"]
    at.button(key="report_build").click().run()
    assert not at.exception, at.exception
    download = next(b for b in at.get("download_button") if b.proto.label == "Download report")
    assert download.proto.url.endswith(".html")
    ranking = Page(at.session_state["_report"][1].decode()).tables[0]
    assert [row[0] for row in ranking[1:]] == ["noise"]  # the sidebar's models, not every model
    at.run()  # the built report stays for the session: no second build
    assert next(b for b in at.get("download_button") if b.proto.label == "Download report")


def test_without_k_the_command_asks_which_when_the_results_hold_several(demo_cache, tmp_path, capsys):
    root, study = demo_cache
    held = sorted(int(k) for k in pd.read_parquet(root / "results" / f"{study.name}.parquet")["k"].unique())
    out = tmp_path / "r.html"
    assert len(held) > 1
    assert main(["report", str(study.path), "--cache", str(root), "--out", str(out)]) == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith("error: ") and f"--k {held[-1]}" in error and not out.exists()
