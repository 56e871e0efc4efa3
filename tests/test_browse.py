"""What the app shows, from qrp_core.browse, against hand-computed values: the ranking table's merge of
the significance summaries, the word-cloud words and the linear fit."""

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from qrp_core.browse import BLUE, RED, linear_fit, ranking_table, wordcloud_words
from qrp_core.cache import Cache

METRICS = ["nmi", "ami", "top1", "map", "mi_bits", "mi_norm"]


def _results():
    rng = np.random.default_rng(0)
    rows = []
    for model in ("combo-net", "noise-net"):
        for seed in range(3):
            rows.append(
                {
                    "model": model,
                    "k": 8,
                    "seed": seed,
                    "groups": "labels",
                    "probe": f"{model}-{seed}",
                    **{m: rng.uniform(0.1, 0.9) for m in METRICS},
                }
            )
    return pd.DataFrame(rows)


def test_ranking_table_summarises_significance_over_seeds_of_the_shown_probes(tiny_study, tmp_path):
    results = _results()
    rng = np.random.default_rng(1)
    rows = [
        {
            "model": r.model,
            "k": r.k,
            "seed": r.seed,
            "groups": r.groups,
            "probe": r.probe,
            "metric": m,
            "null_mean": rng.uniform(0, 0.1),
            "ci_low": rng.uniform(0.1, 0.3),
            "ci_high": rng.uniform(0.7, 0.9),
            "p_value": rng.uniform(0, 0.05),
        }
        for r in results.itertuples()
        for m in METRICS
    ]
    # a stale row of a probe that is no longer in the results (e.g. earlier settings) must not count
    rows.append(
        {**rows[0], "seed": 9, "probe": "stale", "null_mean": 50.0, "ci_low": -50.0, "ci_high": 50.0, "p_value": 0.9}
    )
    significance = pd.DataFrame(rows)
    cache = Cache(tmp_path)
    cache.write_table(tiny_study.name, "significance", significance, {})
    table = ranking_table(cache, tiny_study, results).set_index("model")
    for model, part in results.groupby("model"):
        assert table.loc[model, "n_seeds"] == 3
        for m in METRICS:
            assert table.loc[model, f"{m}_mean"] == pytest.approx(np.mean(part[m]))
            assert table.loc[model, f"{m}_std"] == pytest.approx(np.std(part[m], ddof=1))
            sig = significance[
                (significance["model"] == model) & (significance["metric"] == m) & (significance["probe"] != "stale")
            ]
            assert len(sig) == 3
            assert table.loc[model, f"{m}_null_mean"] == pytest.approx(np.mean(sig["null_mean"]))
            assert table.loc[model, f"{m}_ci_low"] == pytest.approx(np.mean(sig["ci_low"]))
            assert table.loc[model, f"{m}_ci_high"] == pytest.approx(np.mean(sig["ci_high"]))
            assert table.loc[model, f"{m}_p_value"] == pytest.approx(np.max(sig["p_value"]))  # the largest p
    assert table.loc["combo-net", "family"] == tiny_study.models["combo-net"].metadata["family"]
    without = ranking_table(Cache(tmp_path / "empty"), tiny_study, results)
    assert not any(c.endswith("_p_value") for c in without.columns)


def test_wordcloud_words_are_the_largest_differences_of_concepts_present_in_either_cluster():
    difference = pd.DataFrame(
        {
            "concept": ["a", "b", "c", "d", "e", "f", "g"],
            "difference": [0.5, -2.0, 1.0, 0.0, -0.7, 3.0, -0.1],
            "frequency_i": [0.2, 0.0, 0.5, 0.3, 0.0, 0.0, 0.1],
            "frequency_j": [0.0, 0.4, 0.5, 0.3, 0.0, 0.2, 0.0],
        }
    )
    # e occurs in neither cluster; d has no difference; f has the largest |difference|, then b, c, a, g
    words = wordcloud_words(difference, n=4)
    assert words["concept"].tolist() == ["f", "b", "c", "a"]
    assert words["size"].tolist() == [3.0, 2.0, 1.0, 0.5]
    assert words["colour"].tolist() == [BLUE, RED, BLUE, BLUE]  # blue: theta_i larger
    everything = wordcloud_words(difference, n=40)
    assert everything["concept"].tolist() == ["f", "b", "c", "a", "g"]  # no e (absent), no d (zero)
    assert everything.set_index("concept").loc["g", "colour"] == RED
    # without frequencies, every concept with a non-zero difference may be shown
    plain = wordcloud_words(difference[["concept", "difference"]], n=3)
    assert plain["concept"].tolist() == ["f", "b", "c"]


def test_linear_fit_is_least_squares_and_pearson_r():
    rng = np.random.default_rng(2)
    x = rng.uniform(0, 10, 30)
    y = 0.3 - 1.5 * x + rng.normal(0, 4, 30)
    fit = linear_fit(x, y)
    slope, intercept = np.polyfit(x, y, 1)
    r = np.corrcoef(x, y)[0, 1]
    assert fit["slope"] == pytest.approx(slope) and fit["intercept"] == pytest.approx(intercept)
    assert fit["r"] == pytest.approx(r) and r < -0.5
    assert fit["p_value"] == pytest.approx(stats.pearsonr(x, y).pvalue)
