"""The results table's summaries: the ranking over seeds, neighbour t-tests and the LaTeX table."""

import re

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from qrp_core.results import compare_models, latex_table, measure_warnings, ranking, welch_p_value


def _results(seed=0, n_seeds=3):
    rng = np.random.default_rng(seed)
    rows = []
    for model, level in (("moco_v2", 0.62), ("dino & co", 0.55), ("random", 0.20)):
        for s in range(n_seeds):
            metrics = {m: level + 0.02 * rng.standard_normal() for m in ("nmi", "ami", "top1", "map", "mi_norm")}
            rows.append(
                {
                    "model": model,
                    "k": 50,
                    "seed": s,
                    "groups": "labels+scene",
                    "mi_bits": 4 * level + 0.1 * rng.standard_normal(),
                    **metrics,
                }
            )
    return pd.DataFrame(rows)


def _cells(latex: str) -> dict[str, list[str]]:
    body = latex.split("\\midrule\n")[1].split("\n\\bottomrule")[0]
    return {line.split(" & ")[0]: line.removesuffix(r" \\").split(" & ")[1:] for line in body.splitlines()}


def test_latex_table_holds_the_ranking_with_the_best_in_bold():
    results = _results()
    ranked = ranking(results)
    cells = _cells(latex_table(ranked))
    assert list(cells) == [r"moco\_v2", r"dino \& co", "random"]  # escaped, in ranking order
    escaped = {r"moco\_v2": "moco_v2", r"dino \& co": "dino & co", "random": "random"}
    for name, cell in cells.items():
        part = results[results["model"] == escaped[name]]
        plain = [c.replace(r"\mathbf{", "").replace("}", "") for c in cell]
        assert plain[0] == f"${100 * part['nmi'].mean():.1f} \\pm {100 * part['nmi'].std(ddof=1):.1f}$"
        assert plain[4] == f"${part['mi_bits'].mean():.2f} \\pm {part['mi_bits'].std(ddof=1):.2f}$"
    for column in range(5):
        bold = [name for name in cells if r"\mathbf" in cells[name][column]]
        assert bold == [max(cells, key=lambda n: float(re.search(r"[\d.]+", cells[n][column]).group()))]


def test_latex_table_one_block_per_k_and_group_set_and_no_std_for_one_seed():
    one_seed = pd.concat([_results(n_seeds=1), _results(n_seeds=1).assign(k=100)])
    latex = latex_table(ranking(one_seed))
    assert latex.count(r"\begin{tabular}{lccccc}") == 2 and "% K=100, probe on labels+scene" in latex
    assert r"\pm" not in latex and "over 1 seed(s)" in latex


def test_compare_models_is_welchs_t_test_between_neighbours():
    results = _results(seed=1, n_seeds=5)
    comparison = compare_models(results).set_index("model")
    a, b = (results.loc[results["model"] == m, "nmi"] for m in ("moco_v2", "dino & co"))
    assert comparison.loc["moco_v2", "next_model"] == "dino & co"
    assert comparison.loc["moco_v2", "p_value"] == pytest.approx(stats.ttest_ind(a, b, equal_var=False).pvalue)
    assert comparison.loc["dino & co", "distinguishable"]  # 0.55 against 0.20 with std 0.02


def test_ranking_orders_by_k_then_group_set_then_best_nmi_and_counts_each_rows_seeds():
    rows = []
    for k, groups, model, nmis in (
        (100, "a", "x", [0.5, 0.7]),
        (100, "a", "y", [0.9, 0.8, 0.85]),
        (20, "b", "x", [0.1, 0.3, 0.2]),
        (20, "b", "y", [0.05]),
        (100, "b", "x", [0.4]),
        (20, "a", "y", [0.6, 0.2]),
    ):
        rows += [
            {
                "model": model,
                "k": k,
                "seed": s,
                "groups": groups,
                "nmi": v,
                **{m: v / 2 for m in ("ami", "top1", "map", "mi_bits", "mi_norm")},
            }
            for s, v in enumerate(nmis)
        ]
    ranked = ranking(pd.DataFrame(rows))
    assert list(zip(ranked["k"], ranked["groups"], ranked["model"])) == [
        (20, "a", "y"),
        (20, "b", "x"),
        (20, "b", "y"),
        (100, "a", "y"),
        (100, "a", "x"),
        (100, "b", "x"),
    ]
    assert ranked["n_seeds"].tolist() == [2, 3, 1, 3, 2, 1]
    assert ranked["nmi_mean"].tolist() == pytest.approx([0.4, 0.2, 0.05, 0.85, 0.6, 0.4])
    assert ranked["nmi_std"].iloc[:2].tolist() == pytest.approx([np.std([0.6, 0.2], ddof=1), 0.1])
    assert np.isnan(ranked["nmi_std"].iloc[2])  # one seed: no sample std


def test_compare_models_difference_is_better_minus_next_per_k_and_group_set():
    results = pd.concat([_results(seed=2, n_seeds=4), _results(seed=3, n_seeds=4).assign(k=10)])
    comparison = compare_models(results)
    assert len(comparison) == 4  # two neighbour pairs in each of two K
    for row in comparison.itertuples():
        part = results[results["k"] == row.k]
        a, b = (part.loc[part["model"] == m, "nmi"] for m in (row.model, row.next_model))
        assert a.mean() > b.mean()
        assert row.difference == pytest.approx(a.mean() - b.mean())
        assert row.p_value == pytest.approx(stats.ttest_ind(a, b, equal_var=False).pvalue)


def test_latex_table_of_one_model_has_no_bold():
    one_model = _results()
    one_model = one_model[one_model["model"] == "random"]
    latex = latex_table(ranking(one_model))
    assert r"\mathbf" not in latex
    assert f"${100 * one_model['nmi'].mean():.1f} \\pm {100 * one_model['nmi'].std(ddof=1):.1f}$" in latex


def test_parse_groups_gives_the_table_order_whatever_the_order_typed(tiny_study):
    from qrp_core.errors import InputError
    from qrp_core.results import parse_groups

    assert tiny_study.concepts.group_names == ("labels", "colour", "other", "texture")
    assert parse_groups("colour+labels", tiny_study) == ("labels", "colour")  # not alphabetical: labels first
    assert parse_groups("texture+labels", tiny_study) == ("labels", "texture")
    assert parse_groups("other+colour+", tiny_study) == ("colour", "other")
    assert parse_groups("all", tiny_study) == ("labels", "colour", "other", "texture")
    with pytest.raises(InputError, match="unknown concept group 'scene'"):
        parse_groups("labels+scene", tiny_study)


def test_per_image_table_names_each_images_split_cluster_and_prediction(tiny_study, tiny_cache):
    from qrp_core.results import per_image_table

    cache, results = tiny_cache
    row = results.iloc[0]
    table = per_image_table(tiny_study, cache, row["probe"])
    split = cache.load_array("splits", row["split"], "split.npy")  # 0 train, 1 val, 2 test
    assert table["image_id"].tolist() == list(tiny_study.image_ids)
    assert table["split"].tolist() == [("train", "val", "test")[s] for s in split]
    np.testing.assert_array_equal(
        table["cluster"], cache.load_array("clusterings", row["clustering"], "assignments.npy")
    )
    test = table["split"] == "test"
    assert np.mean(table.loc[test, "cluster"] == table.loc[test, "predicted"]) == pytest.approx(row["top1"])


def test_a_clustering_with_empty_clusters_is_flagged_and_ranked_last():
    """All-zero features used to leave 9 of 10 clusters empty and score 100% on everything, ranked first."""
    results = _results().assign(n_empty_clusters=0, n_test=1000)
    results.loc[results["model"] == "random", ["nmi", "ami", "top1", "map"]] = 1.0  # a perfect score...
    results.loc[(results["model"] == "random") & (results["seed"] == 1), "n_empty_clusters"] = 41  # ...of few clusters
    ranked = ranking(results)
    assert ranked["model"].tolist() == ["moco_v2", "dino & co", "random"]  # NMI order, the degenerate last
    assert ranked.set_index("model")["empty_clusters"].to_dict() == {"moco_v2": 0, "dino & co": 0, "random": 41}
    (line,) = measure_warnings(results)
    assert line.startswith("random K=50: K-means left up to 41 of 50 clusters empty (seed 1)")
    assert r"random$^\dagger$" in latex_table(ranked) and "K-means left clusters empty" in latex_table(ranked)


# 499 test images make 9.98 per cluster, printed as 10.0: the warning compares what it prints
@pytest.mark.parametrize(("n_test", "warned"), [(120, True), (490, True), (499, False), (500, False), (2000, False)])
def test_too_few_test_images_per_cluster_are_warned_of(n_test, warned):
    """K=50 on 600 images left ~2.4 test images per cluster; NMI then hardly told a random network (65)
    from the best (81)."""
    results = _results().assign(n_test=n_test)
    lines = measure_warnings(results)
    assert bool(lines) == warned
    if warned:
        assert lines[0].startswith(f"K=50: {n_test / 50:.1f} test images per cluster (fewer than 10)")
        assert f"choose K <= {max(2, n_test // 10)} for this collection" in lines[0]


def test_welch_p_value_is_scipys_including_degenerate_samples():
    rng = np.random.default_rng(3)
    for size_a, size_b in [(2, 2), (5, 5), (3, 8), (20, 4)]:
        a, b = rng.normal(0, 1, size_a), rng.normal(0.5, 2, size_b)
        assert welch_p_value(a, b) == pytest.approx(stats.ttest_ind(a, b, equal_var=False).pvalue, rel=1e-9)
    one_flat = (np.array([0.5, 0.5, 0.5]), np.array([0.1, 0.3, 0.2, 0.6]))
    assert welch_p_value(*one_flat) == pytest.approx(stats.ttest_ind(*one_flat, equal_var=False).pvalue, rel=1e-9)
    apart, equal = (np.array([0.5, 0.5]), np.array([0.25, 0.25])), (np.array([0.5, 0.5]), np.array([0.5, 0.5]))
    assert welch_p_value(*apart) == stats.ttest_ind(*apart, equal_var=False).pvalue == 0.0
    assert np.isnan(welch_p_value(*equal)) and np.isnan(stats.ttest_ind(*equal, equal_var=False).pvalue)
