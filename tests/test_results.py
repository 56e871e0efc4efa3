"""The results table's summaries: the ranking over seeds, neighbour t-tests and the LaTeX table."""

import re

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from qrp_core.results import compare_models, latex_table, ranking


def _results(seed=0, n_seeds=3):
    rng = np.random.default_rng(seed)
    rows = []
    for model, level in (("moco_v2", 0.62), ("dino & co", 0.55), ("random", 0.20)):
        for s in range(n_seeds):
            metrics = {m: level + 0.02 * rng.standard_normal() for m in ("nmi", "ami", "top1", "map", "mi_norm")}
            rows.append({"model": model, "k": 50, "seed": s, "groups": "labels+scene",
                         "mi_bits": 4 * level + 0.1 * rng.standard_normal(), **metrics})
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
