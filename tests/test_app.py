"""Every page of the app on a small demo cache, asserting on content against the engine's numbers."""

import base64
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from qrp_core import browse
from qrp_core.analyses.ablation import gain_summary
from qrp_core.analyses.curves import k_curve
from qrp_core.analyses.pairs import explain_pair, most_informative_comparison, over_represented
from qrp_core.cache import Cache
from qrp_core.results import load_results, measure_warnings

APP = Path(__file__).resolve().parents[1] / "app.py"


def plotly_array(values) -> np.ndarray:
    """A trace's values from a figure's JSON: a list, or plotly's typed array {dtype, bdata (base64)}."""
    if isinstance(values, dict):
        return np.frombuffer(base64.b64decode(values["bdata"]), dtype=np.dtype(values["dtype"]))
    return np.asarray(values)


def frame(at, column):
    """The page's table that has this column (AppTest does not look tables up by key)."""
    return next(d.value for d in at.dataframe if column in d.value.columns)


def frame_or_none(at, column):
    return next((d.value for d in at.dataframe if column in d.value.columns), None)


@pytest.fixture
def app(demo_cache, monkeypatch):
    root, _ = demo_cache
    monkeypatch.setenv("QRP_CACHE", str(root))

    def open_page(page=None, **query):
        at = AppTest.from_file(str(APP), default_timeout=60)
        for key, value in query.items():
            at.query_params[key] = value
        at.run()
        if page:
            at.switch_page(f"pages/{page}.py").run()
        assert not at.exception, at.exception
        return at

    return open_page


def test_home_lists_the_demo_study(app, demo_cache):
    at = app()
    _, study = demo_cache
    assert at.title[0].value == "Quantized reverse probing"
    assert at.dataframe[0].value["study"].tolist() == [study.name]
    assert frame(at, "most frequent")["group"].tolist() == list(study.concepts.group_names)
    assert at.button(key="build_demo") and at.button(key="build_ssl")


def test_ranking_table_equals_the_engine(app, demo_cache):
    root, study = demo_cache
    at = app("ranking")
    table = frame(at, "NMI ±").set_index("model")
    results = load_results(Cache(root), study)
    rows = results[(results["k"] == 30) & (results["groups"] == "+".join(study.concepts.group_names))]
    for model, part in rows.groupby("model"):
        assert table.loc[model, "NMI"] == pytest.approx(100 * part["nmi"].mean())
        assert table.loc[model, "NMI ±"] == pytest.approx(100 * part["nmi"].std(ddof=1))
        assert table.loc[model, "MI (bits)"] == pytest.approx(part["mi_bits"].mean())
    chance = frame(at, "NMI chance").set_index("model")  # the demo ran the permutation baseline
    assert chance.loc["combo-net", "NMI chance"] < table.loc["combo-net", "NMI"] / 4
    assert table["NMI"].idxmax() == "combo-net"
    assert at.get("plotly_chart")
    assert "p-value" in frame(at, "p-value").columns  # several seeds: the neighbours' t-tests
    latex = next(b for b in at.get("download_button") if b.proto.url.endswith(".tex"))
    assert latex.proto.label == "Download LaTeX"  # its text is results.latex_table's (tests/test_results.py)
    # 600 images at K=30: 120 test images, 4 per cluster, which the page states and warns of
    per_cluster = rows["n_test"].mean() / 30
    assert any(f"{per_cluster:.1f} test images per cluster" in c.value for c in at.caption)
    assert [w.value for w in at.warning] == measure_warnings(rows) and "fewer than 10" in at.warning[0].value


def test_sidebar_selection_filters_and_lands_in_the_url(app):
    at = app("ranking", models="combo-net,noise-net", seed="1")
    table = frame(at, "NMI")
    assert sorted(table["model"]) == ["combo-net", "noise-net"]
    assert at.query_params["seed"] == ["1"] or at.query_params["seed"] == "1"
    assert "seed 1 only" in " ".join(c.value for c in at.caption)
    # one clustering has no std and no t-test: no columns of zeros, no table of undefined p-values
    assert "NMI ±" not in table.columns
    assert not any("p-value" in d.value.columns for d in at.dataframe)


def test_expert_groups_gain_equals_the_engine(app, demo_cache):
    root, study = demo_cache
    at = app("expert_groups")
    table = frame(at, "labels alone (NMI %)").set_index("model")
    gain = Cache(root).read_table(study.name, "ablation-gain")
    expected = gain_summary(gain[gain["k"] == 30]).set_index("model")
    for model in expected.index:
        assert table.loc[model, "colour"] == pytest.approx(expected.loc[model, "colour"])


def test_cluster_pairs_are_ordered_by_drop_and_the_cloud_shows_the_top_concepts(app, demo_cache):
    root, study = demo_cache
    at = app("cluster_pairs", base="labels", added="colour", seed="0")
    pairs = frame(at, "drop (points)")
    drops = pairs["drop (points)"].to_numpy()
    assert len(drops) > 3 and np.all(np.diff(drops) <= 1e-9)
    stored = Cache(root).read_table(study.name, "pairs")
    top = (
        stored[(stored["model"] == "combo-net") & (stored["seed"] == 0) & (stored["k"] == 30)]
        .sort_values("drop", ascending=False)
        .iloc[0]
    )
    assert (pairs.iloc[0]["cluster i"], pairs.iloc[0]["cluster j"]) == (top["i"], top["j"])
    words = browse.wordcloud_words(
        explain_pair(study, Cache(root), top["probe_b"], int(top["i"]), int(top["j"]))["difference"]
    )
    caption = next(c.value for c in at.caption if c.value.startswith("Concepts that occur in either cluster"))
    assert caption.endswith(", ".join(words["concept"].head(12)))
    assert set(words["concept"].head(2)) <= {f"[Color] {c}" for c in ("red", "green", "blue", "yellow", "purple")}
    assert len(at.get("image")) >= 1 + 2 * 12  # the word cloud and a page of each cluster's images


def test_cluster_pairs_opens_on_the_most_informative_comparison_then_offers_the_others(app, demo_cache):
    root, study = demo_cache
    base, added, score = most_informative_comparison(Cache(root).read_table(study.name, "pairs"), 30)
    at = app("cluster_pairs")
    assert at.session_state["base"] == base.split("+") and at.session_state["added"] == added
    caption = " ".join(c.value for c in at.caption)
    assert f"Opened on **{base} → + {added}**" in caption and f"({100 * score:.1f} points on average)" in caption
    assert frame(at, "drop (points)").shape[0] > 0
    next(s for s in at.sidebar.selectbox if s.label == "Added group").set_value("(none)").run()
    suggested = at.get("code")[0].value
    assert suggested.endswith("--base labels --added other")  # the next group, as labels + colour is computed
    button = at.button(key="use_labels_colour")
    button.click().run()
    assert at.session_state["base"] == ["labels"] and at.session_state["added"] == "colour"
    assert at.query_params["added"] in ("colour", ["colour"])
    assert frame(at, "drop (points)").shape[0] > 0


def test_cluster_browser_shows_the_engine_profile(app, demo_cache):
    root, study = demo_cache
    at = app("cluster_browser", seed="0")
    at.number_input(key="browser_cluster").set_value(2).run()
    shown = frame(at, "lift")
    results = load_results(Cache(root), study)
    row = results[
        (results["model"] == "combo-net")
        & (results["k"] == 30)
        & (results["seed"] == 0)
        & (results["groups"] == "+".join(study.concepts.group_names))
    ].iloc[0]
    expected = over_represented(study, Cache(root), row["clustering"], 2, n=12)
    assert shown["concept"].tolist() == expected["concept"].tolist()


def test_varying_k_and_transfer(app, demo_cache):
    at = app("varying_k")
    root, study = demo_cache
    results = load_results(Cache(root), study)
    curve = k_curve(results, groups="+".join(study.concepts.group_names)).set_index(["model", "k"])
    assert curve.index.get_level_values("k").nunique() >= 3  # the demo's K=30 and its sweep
    mi_chart, nmi_chart = (json.loads(chart.proto.spec) for chart in at.get("plotly_chart"))
    for chart, column, scale in ((mi_chart, "mi_bits", 1), (nmi_chart, "nmi", 100)):
        drawn = {trace["name"]: trace for trace in chart["data"]}
        assert set(drawn) == set(curve.index.get_level_values("model"))
        for model, trace in drawn.items():
            expected = curve.loc[model].sort_index()
            assert plotly_array(trace["x"]).tolist() == expected.index.tolist()
            assert plotly_array(trace["y"]) == pytest.approx(scale * expected[f"{column}_mean"].to_numpy())
            errors = plotly_array(trace["error_y"]["array"])
            assert errors == pytest.approx(scale * expected[f"{column}_std"].to_numpy())
    at = app("transfer")  # the sidebar's probe reads labels; the demo transferred the experts-only probe
    assert not frame_or_none(at, "top-1, target")
    experts = "colour+other+texture"
    at.button(key=f"transfer_groups_{experts}").click().run()
    table = frame(at, "top-1, target").set_index("model")
    assert set(table.index) == {"combo-net", "shape-net", "noise-net"}
    (target,) = (Path(root) / "analyses" / study.name).glob("transfer-*.parquet")
    stored = Cache(root).read_table(study.name, target.stem)
    stored = stored[(stored["k"] == 30) & (stored["groups"] == experts)].groupby("model")["target_top1"]
    for model, cell in table["top-1, target"].items():
        mean, std = map(float, cell.split(" ± "))
        assert (mean, std) == pytest.approx((100 * stored.mean()[model], 100 * stored.std()[model]), abs=0.005)
    assert stored.mean()["combo-net"] > 2 * stored.mean()["noise-net"]  # colour predicts combo-net's clusters


def test_pages_say_how_to_compute_what_is_missing(tmp_path, monkeypatch, tiny_cache):
    cache, _ = tiny_cache
    monkeypatch.setenv("QRP_CACHE", str(cache.root))
    at = AppTest.from_file(str(APP), default_timeout=60).run()
    at.switch_page("pages/transfer.py").run()
    assert not at.exception
    assert any("python -m qrp_core transfer" in c.value for c in at.code)


def test_cluster_pairs_choice_follows_the_model(app):
    """The pair list is per model: switching models shows the new model's first pair, never a stale one."""
    at = app("cluster_pairs", base="labels", added="colour", seed="0")
    next(s for s in at.selectbox if s.label == "Pair").set_value(3).run()
    pairs = frame(at, "drop (points)")
    i, j = pairs.iloc[3][["cluster i", "cluster j"]].astype(int)
    assert at.subheader[0].value.startswith(f"Why {i} and {j} ")
    at.selectbox(key="pairs_model").set_value("noise-net").run()
    assert not at.exception
    pairs = frame(at, "drop (points)")
    i, j = pairs.iloc[0][["cluster i", "cluster j"]].astype(int)
    assert at.subheader[0].value.startswith(f"Why {i} and {j} ")


def test_ranking_without_results_offers_the_computed_group_sets(app, demo_cache):
    import itertools

    root, study = demo_cache
    computed = set(load_results(Cache(root), study)["groups"])
    missing = next(
        pair for pair in itertools.combinations(study.concepts.group_names, 2) if "+".join(pair) not in computed
    )
    at = app("ranking", base=",".join(missing))
    assert any("No results for K=30" in i.value for i in at.info)
    full = "+".join(study.concepts.group_names)
    at.button(key=f"ranking_groups_{full}").click().run()
    assert list(frame(at, "NMI")["model"])  # the page now shows the probes on every group
    assert at.session_state["base"] == list(study.concepts.group_names)


def test_the_added_group_belongs_to_cluster_pairs_only(app):
    """'Added group' is offered and applied where probes are compared; elsewhere the probe's groups are
    exactly the sidebar's 'Probe on groups'."""
    at = app("ranking", base="labels,colour", added="texture")
    assert not any(s.label == "Added group" for s in at.sidebar.selectbox)
    assert "probe on **labels+colour** ·" in " ".join(c.value for c in at.caption)
    at = app("cluster_pairs", base="labels", added="colour", seed="0")
    assert any(s.label == "Added group" for s in at.sidebar.selectbox)
    assert "on labels+colour" in at.subheader[0].value


def test_a_cleared_sidebar_choice_stays_empty(app):
    """Clearing Models (or the groups) asks for a choice instead of silently selecting everything again."""
    at = app("ranking")
    models = lambda: next(m for m in at.multiselect if m.label == "Models")  # noqa: E731
    models().set_value([]).run()
    assert any("Select at least one model" in w.value for w in at.warning)
    assert models().value == []
    models().set_value(["combo-net"]).run()
    assert frame(at, "NMI ±")["model"].tolist() == ["combo-net"]
    next(m for m in at.multiselect if m.label == "Probe on groups").set_value([]).run()
    assert any("Select at least one concept group" in w.value for w in at.warning)


def test_browsing_imports_neither_torch_nor_faiss(demo_cache):
    """The app only reads artefacts, so every page (a pair opened too) renders without the engine's heavy
    libraries: a cold start stays about a second and a half lighter."""
    root, _ = demo_cache
    pages = sorted(p.stem for p in (APP.parent / "pages").glob("*.py") if not p.stem.startswith("_"))
    script = f"""
import sys
from streamlit.testing.v1 import AppTest
at = AppTest.from_file({str(APP)!r}, default_timeout=60)
at.query_params.update(base="labels", added="colour", seed="0")
at.run()
for page in {pages!r}:
    at.switch_page(f"pages/{{page}}.py").run()
    assert not at.exception, (page, at.exception)
print(sorted(name for name in ("torch", "faiss") if name in sys.modules))
"""
    done = subprocess.run(
        [sys.executable, "-c", script],
        env={**os.environ, "QRP_CACHE": str(root)},
        capture_output=True,
        text=True,
        cwd=APP.parent,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "[]"


def test_provenance_says_how_each_number_was_made(tiny_cache, tiny_study):
    """Each result row's clustering, split and probe as their manifests record them, checked against the
    run's configuration, the feature files' bytes and the stored split."""
    import hashlib

    import faiss
    import torch

    from conftest import TINY_RUN
    from qrp_core.config import ProbeConfig

    cache, results = tiny_cache
    rows = results[results["groups"] == results["groups"].iloc[0]]
    made = browse.provenance(cache, rows).set_index(["model", "seed"])
    assert len(made) == len(rows)
    for row in rows.itertuples():
        line = made.loc[(row.model, row.seed)]
        assert line["restarts x iterations"] == f"{TINY_RUN.kmeans.n_restarts} x {TINY_RUN.kmeans.n_iter}"
        features = tiny_study.model(row.model).features
        assert line["features sha256"] == hashlib.sha256(features.read_bytes()).hexdigest()[:12]
        split = np.bincount(cache.load_array("splits", row.split, "split.npy"), minlength=3)
        assert line["train / val / test"] == " / ".join(map(str, split))
        curve, best = browse.training_curve(cache, row.probe)
        assert len(curve) == TINY_RUN.probe.max_epochs + 1  # epoch 0, the marginal, and every trained epoch
        assert best == int(curve["val_loss"].idxmin()) and curve["epoch"].tolist() == list(range(len(curve)))
        kept = f"{TINY_RUN.probe.max_epochs} epochs, kept {best}"
        assert line["probe"].endswith((kept, f"{kept} (the marginal: no epoch beat it)"))
        assert f"at epochs {list(ProbeConfig(max_epochs=TINY_RUN.probe.max_epochs).lr_milestones)}" in line["schedule"]
        assert f"torch {torch.__version__} · faiss {faiss.__version__}" in line["versions"]
        assert line["probe key"] == row.probe


def test_ranking_shows_provenance_and_a_training_curve(app):
    at = app("ranking")
    made = frame(at, "restarts x iterations")
    assert len(made) == len(frame(at, "NMI ±")) * 2  # the fixture's two seeds per model
    assert at.selectbox(key="ranking_curve").value == 0
    assert any(chart.proto.id and "ranking_losses" in chart.proto.id for chart in at.get("plotly_chart"))


@pytest.mark.parametrize("damage", ["deleted", "edited by hand", "an older version's key"])
def test_a_study_that_cannot_be_opened_is_named_on_every_page_without_a_traceback(damage, tmp_path, monkeypatch):
    from qrp_core.config import KMeansConfig, ProbeConfig, RunConfig
    from qrp_core.demos.synthetic import make_synthetic_study
    from qrp_core.pipeline import Runner
    from qrp_core.study import load_study

    study_path = make_synthetic_study(tmp_path / "study", n_images=300, dim=8)
    config = RunConfig(
        ks=(4,), seeds=(0,), kmeans=KMeansConfig(n_iter=5, n_restarts=1), probe=ProbeConfig(max_epochs=3)
    )
    Runner(load_study(study_path), config, Cache(tmp_path / "cache"), show_progress=False).run()
    text = study_path.read_text()
    if damage == "deleted":
        study_path.unlink()
    elif damage == "edited by hand":
        study_path.write_text(text.replace('table = "concepts.parquet"', 'tabel = "concepts.parquet"'))
    else:
        study_path.write_text(text + 'weights = "old.pt"\n')
    monkeypatch.setenv("QRP_CACHE", str(tmp_path / "cache"))
    for page in ("home", "ranking", "cluster_browser", "cluster_pairs"):
        at = AppTest.from_file(str(APP), default_timeout=60).run()
        if page != "home":
            at.switch_page(f"pages/{page}.py").run()
        assert not at.exception, (page, at.exception)
        (error,) = at.error
        assert error.value.startswith("Study **synthetic-300** cannot be opened: ") and str(study_path) in error.value
        if page == "home":  # the page goes on: the studies table marks the study file
            table = frame(at, "study_file_exists")
            assert table.set_index("study").loc["synthetic-300", "study_file_exists"] == (damage != "deleted")


@pytest.fixture
def small_cache(tmp_path, monkeypatch):
    """A study of drawn thumbnails and one tiny run, in a cache of its own (the tests damage it)."""
    from qrp_core.config import KMeansConfig, ProbeConfig, RunConfig
    from qrp_core.demos.synthetic import make_synthetic_study
    from qrp_core.pipeline import Runner
    from qrp_core.study import load_study

    study = load_study(make_synthetic_study(tmp_path / "study", n_images=300, dim=8))
    config = RunConfig(
        ks=(4,), seeds=(0,), kmeans=KMeansConfig(n_iter=5, n_restarts=1), probe=ProbeConfig(max_epochs=3)
    )
    results = Runner(study, config, Cache(tmp_path / "cache"), show_progress=False).run()
    monkeypatch.setenv("QRP_CACHE", str(tmp_path / "cache"))
    return study, Cache(tmp_path / "cache"), results


def test_unreadable_image_files_get_placeholders_and_a_note(small_cache):
    study, cache, results = small_cache
    from qrp_core.analyses.pairs import nearest_images

    clustering = results[results["model"] == "combo-net"]["clustering"].iloc[0]
    shown = nearest_images(cache, clustering, 0, n=18)
    root = study.path.parent
    (root / study.image_paths[shown[0]]).unlink()  # deleted: Streamlit raised MediaFileStorageError
    (root / study.image_paths[shown[1]]).write_text("not an image")  # PIL raised UnidentifiedImageError
    at = AppTest.from_file(str(APP), default_timeout=60).run()
    at.switch_page("pages/cluster_browser.py").run()
    assert not at.exception, at.exception
    assert any("2 image file(s) could not be read" in c.value for c in at.caption)
    captions = [caption for image in at.image for caption in image.captions]
    assert len(captions) == 18 and sum(c.endswith("(unreadable)") for c in captions) == 2


@pytest.mark.parametrize("page", ["cluster_browser", "ranking"])
def test_a_damaged_artefact_is_named_on_the_page_with_the_fix(page, small_cache):
    study, cache, results = small_cache
    for clustering in results["clustering"].unique():
        path = cache.path("clusterings", clustering) / "assignments.npy"
        path.write_bytes(path.read_bytes()[:40])
    probe = results["probe"].iloc[0]
    (cache.path("probes", probe) / "manifest.json").write_text("{")
    at = AppTest.from_file(str(APP), default_timeout=60).run()
    at.switch_page(f"pages/{page}.py").run()
    assert not at.exception, at.exception
    if page == "ranking":  # the table is drawn before "How these numbers were made" reads the manifests
        assert frame(at, "NMI") is not None
    (error,) = at.error
    assert error.value.startswith("This page cannot be drawn: ") and "Fix: delete the folder" in error.value


def test_a_links_values_that_the_cache_lacks_are_named_once(demo_cache, monkeypatch):
    root, study = demo_cache
    monkeypatch.setenv("QRP_CACHE", str(root))
    at = AppTest.from_file(str(APP), default_timeout=60)
    for key, value in {"study": study.name, "k": "999", "models": "combo-net,ghost", "seed": "1"}.items():
        at.query_params[key] = value
    at.run()
    assert not at.exception
    (warning,) = [w.value for w in at.warning if w.value.startswith("From the link")]
    assert warning == "From the link, not in this cache: models=combo-net,ghost, k=999. Showing the defaults instead."
    assert at.selectbox(key="k").value == 30 and at.multiselect(key="models").value == ["combo-net"]
    at.run()  # said once: the next run shows the page as chosen
    assert not [w for w in at.warning if w.value.startswith("From the link")]


def test_a_read_only_cache_disables_the_build_buttons(app, monkeypatch):
    monkeypatch.setattr(os, "access", lambda *args, **kwargs: False)  # root may write anywhere: pretend not
    at = app()
    assert at.button(key="build_demo").disabled and at.button(key="build_ssl").disabled
    monkeypatch.undo()
    at = app()
    assert not at.button(key="build_demo").disabled


def test_cluster_map_shows_the_pair_in_the_url_and_the_browser_opens_it(app, demo_cache):
    from qrp_core.analyses.pairs import pair_confusion
    from qrp_core.results import find_probe, result_rows

    root, study = demo_cache
    at = app("cluster_map", seed="0")
    assert any("Select two clusters on the map" in i.value for i in at.info)
    at = app("cluster_map", seed="0", pair="2,5")
    results = load_results(Cache(root), study)
    rows = result_rows(results, models=["combo-net"], k=30, groups="+".join(study.concepts.group_names))
    probe = find_probe(rows, "combo-net", 30, 0, tuple(study.concepts.group_names))
    confusion = 100 * pair_confusion(Cache(root), probe, 2, 5)
    assert any("Clusters **2** and **5**" in m.value and f"{confusion:.1f} %" in m.value for m in at.markdown)
    assert at.subheader[0].value.startswith("Why 2 and 5 differ")
    at = app("cluster_browser", seed="0")
    at.number_input(key="browser_cluster").set_value(3).run()
    at.number_input(key="browser_other").set_value(7).run()
    at.button(key="browser_compare").click().run()
    assert at.query_params["pair"] in ("3,7", ["3,7"])
    assert at.subheader[0].value.startswith("Why 3 and 7 differ")
