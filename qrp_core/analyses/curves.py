"""Curves over the results table: varying K (paper appendix D.2, Fig. 6 and 7) and layers of one network."""

from __future__ import annotations

import dataclasses

import pandas as pd

from ..cache import Cache
from ..config import RunConfig
from ..errors import InputError
from ..results import mean_std
from ..study import Study


def k_curve(results: pd.DataFrame, *, groups: str | None = None) -> pd.DataFrame:
    """Mean ± std over seeds of every metric per model and K (one group set), K ascending."""
    if groups is not None:
        results = results[results["groups"] == groups]
    return mean_std(results, ["model", "groups", "k"]).sort_values(["model", "groups", "k"], ignore_index=True)


def layer_curve(study: Study, results: pd.DataFrame) -> pd.DataFrame:
    """Per network, the measure at each layer in order: models whose metadata has ``network`` and ``layer``."""
    meta = pd.DataFrame(
        [
            {"model": name, "network": spec.metadata.get("network"), "layer": spec.metadata.get("layer")}
            for name, spec in study.models.items()
        ]
    ).dropna()
    if meta.empty:
        return pd.DataFrame(columns=["network", "layer", "model"])
    table = mean_std(results.merge(meta, on="model"), ["network", "layer", "model", "k", "groups"])
    return table.sort_values(["network", "k", "groups", "layer"], ignore_index=True)


def run_k_curve(study: Study, config: RunConfig, cache: Cache, *, show_progress: bool = True) -> pd.DataFrame:
    """Run (or reuse) ``config``'s grid, one K after another, and return its ``k_curve``."""
    from ..pipeline import Runner  # torch and faiss load here, not when the app reads curves

    return k_curve(Runner(study, config, cache, show_progress=show_progress).run())


def run_layer_curve(study: Study, config: RunConfig, cache: Cache, *, show_progress: bool = True) -> pd.DataFrame:
    """Run (or reuse) ``config``'s grid on the models with ``network`` and ``layer`` metadata, and return
    their ``layer_curve``."""
    from ..pipeline import Runner

    models = tuple(m for m, spec in study.models.items() if "layer" in spec.metadata and "network" in spec.metadata)
    if not models:
        raise InputError(
            "no model has `network` and `layer` metadata",
            where=study.path,
            fix='add network = "name" and layer = <int> to each layer\'s [models.NAME] table',
        )
    results = Runner(study, dataclasses.replace(config, models=models), cache, show_progress=show_progress).run()
    return layer_curve(study, results)
