import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as skm

from qrp_core.analyses.significance import bootstrap_ci, permutation_baseline, significance_table
from qrp_core.cache import Cache
from qrp_core.config import KMeansConfig, ProbeConfig, RunConfig
from qrp_core.demos.synthetic import make_synthetic_study
from qrp_core.pipeline import Runner
from qrp_core.results import compare_models
from qrp_core.study import load_study


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """A small study and cheap probes: 199 permutations must fit in seconds."""
    root = tmp_path_factory.mktemp("sig")
    study = load_study(make_synthetic_study(root / "study", n_images=400, dim=8, seed=1))
    config = RunConfig(
        ks=(6,),
        seeds=(0, 1, 2),
        models=("shape-net", "noise-net"),
        kmeans=KMeansConfig(n_iter=10, n_restarts=2),
        probe=ProbeConfig(max_epochs=5),
    )
    cache = Cache(root / "cache")
    return study, cache, Runner(study, config, cache, show_progress=False).run()


def test_permutation_baseline_is_zero_and_a_planted_dependence_is_significant(small):
    study, cache, results = small
    planted = results[(results["model"] == "shape-net") & (results["seed"] == 0)].iloc[0]
    perm = permutation_baseline(study, cache, planted["probe"], repeats=199, seed=0)
    assert abs(perm["mi_bits"]["mean"]) < 0.1  # shuffled concepts carry no information
    assert perm["mi_bits"]["p_value"] == pytest.approx(1 / 200)  # < 0.01: every null is below
    assert perm["nmi"]["p_value"] < 0.01
    noise = results[results["model"] == "noise-net"]
    p_values = [
        permutation_baseline(study, cache, probe, repeats=19, seed=0)["mi_bits"]["p_value"] for probe in noise["probe"]
    ]
    # the random representation is not distinguishable: the largest p over seeds (what `significance` prints) is
    # far above 0.05; one seed's p can be the smallest possible, 1/20, by chance (here seed 0, by 0.009 bits)
    assert max(p_values) > 0.5 and sorted(p_values)[1] > 0.05


def test_bootstrap_interval_brackets_the_observed_score_and_matches_a_direct_resample(small):
    study, cache, results = small
    for row in results[results["seed"] == 0].itertuples():
        ci = bootstrap_ci(study, cache, row.probe, n_boot=100, seed=3)
        for metric in ("nmi", "ami", "top1", "map", "mi_bits"):
            assert ci[metric]["low"] <= getattr(row, metric) <= ci[metric]["high"], (row.model, metric)
        assert bootstrap_ci(study, cache, row.probe, n_boot=100, seed=3) == ci  # cached
    # the noisy model's interval is wide, and equals a brute-force bootstrap with scikit-learn
    ci = bootstrap_ci(study, cache, row.probe, n_boot=100, seed=3)
    assert ci["nmi"]["high"] - ci["nmi"]["low"] > 0.01
    split = cache.load_array("splits", row.split, "split.npy")
    truth = cache.load_array("clusterings", row.clustering, "assignments.npy")[split == 2]
    predicted = cache.load_array("probes", row.probe, "predictions.npy")[split == 2]
    rng = np.random.default_rng(3)
    draws = [
        skm.normalized_mutual_info_score(truth[i], predicted[i])
        for i in (rng.integers(0, len(truth), len(truth)) for _ in range(100))
    ]
    bias = np.mean(draws) - row.nmi
    assert ci["nmi"]["bias"] == pytest.approx(bias, abs=1e-9)
    assert ci["nmi"]["low"] == pytest.approx(np.percentile(draws, 2.5) - bias, abs=1e-9)
    assert ci["nmi"]["high"] == pytest.approx(np.percentile(draws, 97.5) - bias, abs=1e-9)


def test_significance_table_and_model_comparison(small):
    study, cache, results = small
    table = significance_table(study, cache, results[results["seed"] == 0], repeats=9, n_boot=50)
    assert set(table["metric"]) == {"nmi", "ami", "top1", "map", "mi_bits", "mi_norm"}
    assert len(table) == 2 * 6
    assert cache.read_table(study.name, "significance") is not None
    comparison = compare_models(results)
    row = comparison.iloc[0]
    assert (row["model"], row["next_model"]) == ("shape-net", "noise-net")
    a = results.loc[results["model"] == "shape-net", "nmi"]
    b = results.loc[results["model"] == "noise-net", "nmi"]
    from scipy import stats

    assert row["p_value"] == pytest.approx(stats.ttest_ind(a, b, equal_var=False).pvalue)
    assert row["distinguishable"]
    same = pd.concat(
        [results[results["model"] == "noise-net"].assign(model="twin"), results[results["model"] == "noise-net"]]
    )
    assert not compare_models(same)["distinguishable"].iloc[0]  # identical scores: not distinguishable


def _row_keys(matrix) -> list:
    """Each row of a sparse concept matrix as a hashable tuple of its column indices."""
    m = matrix.tocsr()
    m.sort_indices()
    return [tuple(m.indices[m.indptr[i] : m.indptr[i + 1]]) for i in range(m.shape[0])]


def test_permutation_p_value_counts_ties_and_shuffles_concept_rows_only(small, monkeypatch):
    """With training and scoring replaced by recorders, the p-value is (1 + #{null >= observed}) / (R + 1)
    on scripted nulls (ties count), each repeat trains on its own permutation of the concept rows (clusters and
    split as stored), scores the shuffled test rows, and the seed chooses the permutations."""
    import types

    import qrp_core.analyses.significance as significance

    study, cache, results = small
    row = results[(results["model"] == "shape-net") & (results["seed"] == 1)].iloc[0]
    manifest = cache.manifest("probes", row["probe"])
    assignments = cache.load_array("clusterings", row["clustering"], "assignments.npy")
    split = cache.load_array("splits", row["split"], "split.npy")
    concepts = study.concepts.select(tuple(row["groups"].split("+")))
    observed = cache.load_json("probes", row["probe"], "metrics.json")
    offsets = [0.0, 0.1, -0.1, 0.0, -0.2, 0.3, -0.05]  # 4 of 7 nulls >= observed, two of them ties
    trained, scored = [], []

    def fake_train(matrix, clusters, split_, k, config, *, seed):
        trained.append({"matrix": matrix, "clusters": clusters.copy(), "split": split_.copy(), "k": k, "seed": seed})
        return types.SimpleNamespace(weight=np.zeros((matrix.shape[1], k), np.float32), bias=np.zeros(k, np.float32))

    def fake_logits(weight, bias, rows, device="auto"):
        scored.append(rows)
        return np.zeros((rows.shape[0], weight.shape[1]), np.float32)

    def fake_scores(truth, logits, sizes):
        r = len(scored) - 1
        return {m: observed[m] + offsets[r % len(offsets)] for m in observed}

    monkeypatch.setattr(significance, "train_probe", fake_train)
    monkeypatch.setattr(significance, "probe_logits", fake_logits)
    monkeypatch.setattr(significance, "probe_scores", fake_scores)
    perm = permutation_baseline(study, cache, row["probe"], repeats=7, seed=11)  # keys no other test uses
    for m in ("nmi", "ami", "top1", "map", "mi_bits", "mi_norm"):
        assert perm[m]["p_value"] == pytest.approx(5 / 8), m
        assert perm[m]["mean"] == pytest.approx(observed[m] + np.mean(offsets)), m
        assert perm[m]["std"] == pytest.approx(np.std(offsets, ddof=1)), m
    test_rows = np.flatnonzero(split == 2)
    original = sorted(_row_keys(concepts.matrix))
    shuffles = []
    for call, rows in zip(trained, scored):
        np.testing.assert_array_equal(call["clusters"], assignments)
        np.testing.assert_array_equal(call["split"], split)
        assert call["k"] == 6 and call["seed"] == manifest["params"]["seed"] == 1
        keys = _row_keys(call["matrix"])
        assert sorted(keys) == original  # a permutation of the concept rows
        assert _row_keys(rows) == [keys[i] for i in test_rows]  # the shuffled test rows are scored
        shuffles.append(tuple(keys))
    assert len(set(shuffles)) == 7 and tuple(_row_keys(concepts.matrix)) not in shuffles
    trained.clear(), scored.clear()
    permutation_baseline(study, cache, row["probe"], repeats=7, seed=12)
    assert not {tuple(_row_keys(call["matrix"])) for call in trained} & set(shuffles)  # another seed, other shuffles


def test_bootstrap_interval_of_every_metric_equals_a_brute_force_resample(small):
    """Every metric's interval from the stored probe weights, resampled by hand: scikit-learn AMI, top-1 and
    average precision of the resampled rows, and MI = H(cluster sizes over all images) - CE of the resample."""
    import math

    from safetensors.numpy import load_file
    from scipy import special
    from scipy import stats as sst

    study, cache, results = small
    row = results[(results["model"] == "noise-net") & (results["seed"] == 2)].iloc[0]
    ci = bootstrap_ci(study, cache, row["probe"], n_boot=60, seed=5)
    probe = load_file(str(cache.path("probes", row["probe"]) / "probe.safetensors"))
    concepts = study.concepts.select(tuple(row["groups"].split("+")))
    split = cache.load_array("splits", row["split"], "split.npy")
    assignments = cache.load_array("clusterings", row["clustering"], "assignments.npy")
    test = np.flatnonzero(split == 2)
    x = concepts.matrix[test].toarray().astype(np.float64)
    logits = (x @ probe["weight"].astype(np.float64) + probe["bias"]).astype(np.float32).astype(np.float64)
    log_probs = special.log_softmax(logits, axis=1)
    truth, predicted = assignments[test], cache.load_array("probes", row["probe"], "predictions.npy")[test]
    np.testing.assert_array_equal(log_probs.argmax(1), predicted)
    h = sst.entropy(np.bincount(assignments, minlength=6))  # nats, over the whole collection
    observed = cache.load_json("probes", row["probe"], "metrics.json")
    rng = np.random.default_rng(5)
    draws = {m: [] for m in ("ami", "top1", "map", "mi_bits", "mi_norm")}
    for _ in range(60):
        i = rng.integers(0, len(test), len(test))
        t, p, lp = truth[i], predicted[i], log_probs[i]
        draws["ami"].append(skm.adjusted_mutual_info_score(t, p))
        draws["top1"].append(np.mean(t == p))
        draws["map"].append(np.mean([skm.average_precision_score(t == c, lp[:, c]) for c in np.unique(t)]))
        ce = -np.mean(lp[np.arange(len(t)), t])
        draws["mi_bits"].append((h - ce) / math.log(2))
        draws["mi_norm"].append((h - ce) / h)
    for m, values in draws.items():
        bias = np.mean(values) - observed[m]
        assert ci[m]["bias"] == pytest.approx(bias, abs=1e-6), m
        assert ci[m]["low"] == pytest.approx(np.percentile(values, 2.5) - bias, abs=1e-6), m
        assert ci[m]["high"] == pytest.approx(np.percentile(values, 97.5) - bias, abs=1e-6), m
    assert ci["mi_bits"]["high"] - ci["mi_bits"]["low"] > 0.01 and ci["map"]["high"] - ci["map"]["low"] > 0.01
