"""The summaries the analysis verbs print or plot: K and layer curves, the result selection and the
ranking's text formats, against values computed by hand from a results table."""

import types

import numpy as np
import pandas as pd
import pytest

from qrp_core.analyses.curves import k_curve, layer_curve
from qrp_core.cli.output import print_ranking
from qrp_core.errors import InputError
from qrp_core.results import select_results

METRICS = ["nmi", "ami", "top1", "map", "mi_bits", "mi_norm"]


def _results(models=("a-net", "b-net", "c-net"), ks=(4, 12), groups=("labels", "labels+colour"), seeds=3):
    rng = np.random.default_rng(0)
    rows = [
        {
            "model": model,
            "k": k,
            "seed": s,
            "groups": g,
            **{m: rng.uniform(0.05, 0.95) for m in METRICS},
            "probe": f"{model}-{k}-{s}-{g}",
        }
        for model in models
        for k in ks
        for g in groups
        for s in range(seeds - (model == "c-net"))
    ]
    return pd.DataFrame(rows)


def test_k_curve_keeps_group_sets_apart_and_filters_one():
    results = _results()
    curve = k_curve(results)
    assert len(curve) == 3 * 2 * 2
    for row in curve.itertuples():
        part = results[(results["model"] == row.model) & (results["k"] == row.k) & (results["groups"] == row.groups)]
        assert row.n_seeds == len(part) == (2 if row.model == "c-net" else 3)
        assert row.nmi_mean == pytest.approx(part["nmi"].mean())
        assert row.top1_std == pytest.approx(part["top1"].std(ddof=1))
    one = k_curve(results, groups="labels+colour")
    assert set(one["groups"]) == {"labels+colour"} and one["k"].tolist() == [4, 12] * 3
    assert one["model"].tolist() == ["a-net"] * 2 + ["b-net"] * 2 + ["c-net"] * 2


def test_layer_curve_orders_layers_and_leaves_out_models_without_layers():
    study = types.SimpleNamespace(
        models={
            "a-net": types.SimpleNamespace(metadata={"network": "toy", "layer": 3}),
            "b-net": types.SimpleNamespace(metadata={"network": "toy", "layer": 1}),
            "c-net": types.SimpleNamespace(metadata={"family": "other"}),
        }
    )
    results = _results(groups=("labels",))
    curve = layer_curve(study, results)
    assert set(curve["model"]) == {"a-net", "b-net"}
    assert curve["model"].tolist() == ["b-net", "a-net"] * 2 and curve["k"].tolist() == [4, 4, 12, 12]
    row = curve[(curve["model"] == "a-net") & (curve["k"] == 12)].iloc[0]
    part = results[(results["model"] == "a-net") & (results["k"] == 12)]
    assert (row["layer"], row["n_seeds"]) == (3, 3) and row["mi_bits_mean"] == pytest.approx(part["mi_bits"].mean())


def test_select_results_filters_k_group_set_and_models(tiny_study):
    results = _results()
    chosen = select_results(results, tiny_study, k=12, groups="colour+labels", models=["a-net", "c-net"])
    expected = results[
        (results["k"] == 12) & (results["groups"] == "labels+colour") & results["model"].isin(["a-net", "c-net"])
    ]
    assert chosen.index.tolist() == expected.index.tolist() and len(chosen) == 5
    assert len(select_results(results, tiny_study)) == len(results)
    assert set(select_results(results, tiny_study, k=4)["k"]) == {4}
    with pytest.raises(InputError, match=r"no results for K=7.*--k from \[4, 12\]"):
        select_results(results, tiny_study, k=7)
    with pytest.raises(InputError, match=r"no results for models=\['z-net'\].*--models from \['a-net', 'b-net'"):
        select_results(results, tiny_study, models=["z-net"])


def test_ranking_table_text_is_mean_and_std_in_percent(capsys):
    results = _results(ks=(12,), groups=("labels",))
    print_ranking(results)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["model", "k", "groups", "nmi", "ami", "top1", "map", "mi_bits", "seeds"]
    shown = {line.split()[0]: line.split() for line in lines[1:]}
    assert list(shown) == list(results.groupby("model")["nmi"].mean().sort_values(ascending=False).index)
    for model, cells in shown.items():
        part = results[results["model"] == model]
        for i, metric in enumerate(["nmi", "ami", "top1", "map", "mi_bits"]):
            scale = 1 if metric == "mi_bits" else 100
            mean, pm, std = cells[3 + 3 * i : 6 + 3 * i]
            assert pm == "±"
            assert mean == f"{scale * part[metric].mean():.2f}", (model, metric)
            assert std == f"{scale * part[metric].std(ddof=1):.2f}", (model, metric)
        assert cells[-1] == str(len(part))


def test_ranking_per_seed_text_shows_every_metric_of_every_row(capsys):
    results = _results(ks=(12,), groups=("labels",), seeds=2)
    print_ranking(results, rows="seeds")
    lines = capsys.readouterr().out.splitlines()
    header = lines[0].split()
    assert header == ["model", "k", "seed", "groups", *METRICS, "probe"]
    assert len(lines) == 1 + len(results)
    for line, row in zip(lines[1:], results.itertuples()):
        cells = dict(zip(header, line.split()))
        assert cells["probe"] == row.probe and cells["seed"] == str(row.seed)
        for metric in METRICS:
            scale = 1 if metric == "mi_bits" else 100
            assert cells[metric] == f"{scale * getattr(row, metric):.2f}", metric
    print_ranking(results, format="csv")  # csv: one row per seed by default
    assert len(pd.read_csv(pd.io.common.StringIO(capsys.readouterr().out))) == len(results)
