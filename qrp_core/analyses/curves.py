"""Curves over the results table: varying K (paper appendix D.2, Fig. 6 and 7) and layers of one network."""

from __future__ import annotations

import pandas as pd

from ..study import Study

CURVE_METRICS = ["nmi", "ami", "top1", "map", "mi_bits", "mi_norm"]


def _mean_std(results: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    grouped = results.groupby(by)
    table = grouped[CURVE_METRICS].agg(["mean", "std"])
    table.columns = [f"{m}_{s}" for m, s in table.columns]
    return table.assign(n_seeds=grouped.size()).reset_index()


def k_curve(results: pd.DataFrame, *, groups: str | None = None) -> pd.DataFrame:
    """Mean ± std over seeds of every metric per model and K (one group set), K ascending."""
    if groups is not None:
        results = results[results["groups"] == groups]
    return _mean_std(results, ["model", "groups", "k"]).sort_values(["model", "groups", "k"], ignore_index=True)


def layer_curve(study: Study, results: pd.DataFrame) -> pd.DataFrame:
    """Per network, the measure at each layer in order: models whose metadata has ``network`` and ``layer``."""
    meta = pd.DataFrame([{"model": name, "network": spec.metadata.get("network"), "layer": spec.metadata.get("layer")}
                         for name, spec in study.models.items()]).dropna()
    if meta.empty:
        return pd.DataFrame(columns=["network", "layer", "model"])
    table = _mean_std(results.merge(meta, on="model"), ["network", "layer", "model", "k", "groups"])
    return table.sort_values(["network", "k", "groups", "layer"], ignore_index=True)
