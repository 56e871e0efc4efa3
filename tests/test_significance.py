import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as skm

from qrp_core.analyses.significance import bootstrap_ci, permutation_baseline, significance_table
from qrp_core.cache import Cache
from qrp_core.pipeline import RunConfig, Runner
from qrp_core.probe import ProbeConfig
from qrp_core.quantize import KMeansConfig
from qrp_core.results import compare_models
from qrp_core.study import load_study
from qrp_core.synthetic import make_synthetic_study


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """A small study and cheap probes: 199 permutations must fit in seconds."""
    root = tmp_path_factory.mktemp("sig")
    study = load_study(make_synthetic_study(root / "study", n_images=400, dim=8, seed=1))
    config = RunConfig(ks=(6,), seeds=(0, 1, 2), models=("shape-net", "noise-net"),
                       kmeans=KMeansConfig(n_iter=10, n_restarts=2), probe=ProbeConfig(max_epochs=5))
    cache = Cache(root / "cache")
    return study, cache, Runner(study, config, cache, show_progress=False).run()


def test_permutation_baseline_is_zero_and_a_planted_dependence_is_significant(small):
    study, cache, results = small
    planted = results[(results["model"] == "shape-net") & (results["seed"] == 0)].iloc[0]
    perm = permutation_baseline(study, cache, planted["probe"], repeats=199, seed=0)
    assert abs(perm["mi_bits"]["mean"]) < 0.1  # shuffled concepts carry no information
    assert perm["mi_bits"]["p_value"] == pytest.approx(1 / 200)  # < 0.01: every null is below
    assert perm["nmi"]["p_value"] < 0.01
    noise = results[(results["model"] == "noise-net") & (results["seed"] == 0)].iloc[0]
    null_noise = permutation_baseline(study, cache, noise["probe"], repeats=19, seed=0)
    assert null_noise["mi_bits"]["p_value"] > 0.05  # the random representation is not distinguishable


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
    draws = [skm.normalized_mutual_info_score(truth[i], predicted[i])
             for i in (rng.integers(0, len(truth), len(truth)) for _ in range(100))]
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
    same = pd.concat([results[results["model"] == "noise-net"].assign(model="twin"),
                      results[results["model"] == "noise-net"]])
    assert not compare_models(same)["distinguishable"].iloc[0]  # identical scores: not distinguishable
