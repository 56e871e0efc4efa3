import numpy as np
import pytest

from conftest import TINY_RUN
from qrp_core.analyses.ablation import cumulative_sets, gain_sets, gain_summary, group_order, run_ablation
from qrp_core.analyses.curves import k_curve, layer_curve
from qrp_core.cache import Cache
from qrp_core.config import RunConfig
from qrp_core.pipeline import Runner
from qrp_core.study import GROUND_TRUTH, load_study


def test_group_order_follows_the_paper_then_the_rest(tiny_study):
    assert group_order(tiny_study) == ("texture", "other", "colour")  # paper order first, then alphabetical
    assert group_order(tiny_study, ("colour", "other", "texture")) == ("colour", "other", "texture")
    sets = cumulative_sets(tiny_study, ("colour", "texture"))
    assert sets == [
        ("with base", ("labels",)),
        ("with base", ("labels", "colour")),
        ("with base", ("labels", "colour", "texture")),
        ("without base", ("colour",)),
        ("without base", ("colour", "texture")),
    ]
    assert gain_sets(tiny_study, ("colour", "texture")) == [("labels",), ("labels", "colour"), ("labels", "texture")]


@pytest.fixture(scope="module")
def ablation(tiny_study, tiny_cache):
    cache, _ = tiny_cache
    config = RunConfig(**{**TINY_RUN.__dict__, "models": ("combo-net", "noise-net")})
    return run_ablation(tiny_study, config, cache, order=("colour", "texture", "other"), show_progress=False)


def test_cumulative_ablation_reuses_clusterings_and_matches_the_results(ablation, tiny_cache):
    cache, results = tiny_cache
    cumulative = ablation["cumulative"]
    assert len(cumulative) == 2 * 2 * (4 + 3)  # models x seeds x (4 prefixes with base, 3 without)
    main = results[results["model"] == "combo-net"]
    assert set(cumulative["clustering"]) <= set(results["clustering"])  # no new clusterings
    full = cumulative[
        (cumulative["variant"] == "with base") & (cumulative["step"] == 3) & (cumulative["model"] == "combo-net")
    ].sort_values("seed")
    # the full prefix is the same group set as the main run, only in another order: same probe inputs
    assert full["nmi"].to_numpy() == pytest.approx(main.sort_values("seed")["nmi"].to_numpy(), abs=1e-6)
    stored = cache.read_table("synthetic-600", "ablation-cumulative")
    assert len(stored) == len(cumulative)


def test_gain_table_is_the_difference_to_base_alone(ablation, tiny_cache):
    cache, _ = tiny_cache
    gain, cumulative = ablation["gain"], ablation["cumulative"]
    base = cumulative[(cumulative["variant"] == "with base") & (cumulative["step"] == 0)].set_index(["model", "seed"])
    colour = gain[gain["added"] == "colour"].set_index(["model", "seed"])
    for key, row in colour.iterrows():
        probe_nmi = cache.load_json("probes", row["probe"], "metrics.json")["nmi"]
        assert row["delta_nmi"] == pytest.approx(probe_nmi - base.loc[key, "nmi"])
    summary = gain_summary(gain).set_index("model")
    # combo-net clusters are shape x colour: colour adds a lot, texture and noise bits little
    assert summary.loc["combo-net", "colour"] > 20
    assert abs(summary.loc["combo-net", "texture"]) < summary.loc["combo-net", "colour"] / 4


def test_given_cluster_ids_and_the_ground_truth_probe(tiny_study_path, tmp_path):
    import shutil

    root = tmp_path / "study"
    shutil.copytree(tiny_study_path.parent, root)
    images = __import__("pandas").read_csv(root / "images.csv")
    images.assign(cluster=images["label"]).to_csv(root / "selflabels.csv", columns=["image_id", "cluster"], index=False)
    text = (root / "study.toml").read_text() + '\n[models.self-label]\nassignments = "selflabels.csv"\n'
    (root / "study.toml").write_text(text)
    study = load_study(root / "study.toml")
    config = RunConfig(
        **{
            **TINY_RUN.__dict__,
            "models": ("self-label", GROUND_TRUTH),
            "group_sets": (("labels", "colour"), ("colour", "texture")),
        }
    )
    results = Runner(study, config, Cache(tmp_path / "cache"), show_progress=False).run()
    assert set(results["k"]) == {6}  # six shapes, whatever --k says
    truth = results[results["model"] == GROUND_TRUTH]
    assert set(truth["groups"]) == {"colour", "colour+texture"}  # the labels group is dropped for ground truth
    selflabel = results[(results["model"] == "self-label") & (results["groups"] == "labels+colour")]
    assert (selflabel["top1"] == 1.0).all()  # the label concepts name these clusters exactly
    assert (truth["top1"] < 0.5).all()  # colour and texture say nothing about shape
    assert results.groupby("model")["clustering"].nunique().tolist() == [1, 1]  # one clustering for all seeds


def test_k_curve_and_layer_curve(tiny_study_path, tmp_path):
    import shutil

    root = tmp_path / "study"
    shutil.copytree(tiny_study_path.parent, root)
    text = (root / "study.toml").read_text()
    text = text.replace('family = "planted (shape x colour)"', 'network = "toy"\nlayer = 2')
    text = text.replace('family = "planted (shape)"', 'network = "toy"\nlayer = 1')
    (root / "study.toml").write_text(text)
    study = load_study(root / "study.toml")
    config = RunConfig(**{**TINY_RUN.__dict__, "ks": (4, 12), "models": ("combo-net", "shape-net")})
    results = Runner(study, config, Cache(tmp_path / "cache"), show_progress=False).run()
    curve = k_curve(results)
    assert curve[curve["model"] == "combo-net"]["k"].tolist() == [4, 12]
    part = results[(results["model"] == "combo-net") & (results["k"] == 12)]
    row = curve[(curve["model"] == "combo-net") & (curve["k"] == 12)].iloc[0]
    assert row["mi_bits_mean"] == pytest.approx(part["mi_bits"].mean())
    assert row["mi_bits_std"] == pytest.approx(part["mi_bits"].std(ddof=1))
    layers = layer_curve(study, results)
    assert layers[layers["k"] == 12]["model"].tolist() == ["shape-net", "combo-net"]  # layer 1, then 2
    assert np.all(np.diff(layers[layers["k"] == 12]["layer"]) > 0)


def test_gain_base_nmi_is_the_base_probes_nmi_and_the_summary_is_in_points(ablation, tiny_study, tiny_cache):
    cache, _ = tiny_cache
    gain = ablation["gain"]
    assert len(gain) == 2 * 2 * 3  # models x seeds x added groups
    for row in gain.itertuples():
        base = cache.load_json("probes", row.base_probe, "metrics.json")
        added = cache.load_json("probes", row.probe, "metrics.json")
        assert (
            cache.manifest("probes", row.base_probe)["inputs"]["clustering"]
            == cache.manifest("probes", row.probe)["inputs"]["clustering"]
        )
        assert row.base_nmi == pytest.approx(base["nmi"])  # the labels-only probe, whatever was added
        assert row.delta_nmi == pytest.approx(added["nmi"] - base["nmi"])
        assert abs(added["nmi"] - base["nmi"]) > 1e-4  # so base and added NMI cannot be swapped unnoticed
    summary = gain_summary(gain).set_index(["model", "k"])
    for (model, k), part in gain.groupby(["model", "k"]):
        per_seed = {cache.load_json("probes", p, "metrics.json")["nmi"] for p in part["base_probe"]}
        assert len(per_seed) == 2  # one base probe per seed, shared by the added groups
        assert summary.loc[(model, k), "base_nmi"] == pytest.approx(100 * np.mean(sorted(per_seed)))
        for added, rows in part.groupby("added"):
            assert summary.loc[(model, k), added] == pytest.approx(100 * rows["delta_nmi"].mean())
    assert (summary["base_nmi"] > 1).all()  # in points, not a fraction


def test_rerunning_the_ablation_on_fewer_seeds_keeps_the_other_seeds_stored_rows(ablation, tiny_study, tiny_cache):
    cache, _ = tiny_cache
    config = RunConfig(**{**TINY_RUN.__dict__, "models": ("combo-net", "noise-net"), "seeds": (0,)})
    again = run_ablation(tiny_study, config, cache, order=("colour", "texture", "other"), show_progress=False)
    assert set(again["gain"]["seed"]) == {0} and set(again["cumulative"]["seed"]) == {0}
    for name, table in (("ablation-gain", ablation["gain"]), ("ablation-cumulative", ablation["cumulative"])):
        stored = cache.read_table(tiny_study.name, name)
        key = ["model", "k", "seed", "added"] + (["variant", "step"] if name == "ablation-cumulative" else [])
        assert set(stored["seed"]) == {0, 1}, name
        assert len(stored) == len(table), name  # seed 0's rows replaced, seed 1's kept, none twice
        merged = stored.merge(table, on=key, suffixes=("", "_first"))
        assert len(merged) == len(table), name
        assert (merged["probe"] == merged["probe_first"]).all(), name
