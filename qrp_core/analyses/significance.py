"""Is a score more than chance, and how sure is it? (beyond the paper)

* Permutation baseline: concept rows are shuffled across images (clusters and split kept), the
  probe is retrained R times with the same settings; the p-value is (1 + #{null >= observed}) / (R + 1).
* Bootstrap: test images are resampled with replacement B times; the 2.5 and 97.5 percentiles of
  each metric, shifted by the bootstrap estimate of the metric's bias (mean of the resamples minus
  the observed score), form its 95% confidence interval.
* Model comparison (``results.compare_models``): Welch's t-test over seeds (clusterings), the main
  source of variance.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import torch

from ..cache import Cache, save_json, stable_hash
from ..config import ProbeConfig
from ..metrics import (
    RankedScores,
    adjusted_mutual_info,
    contingency_matrix,
    log_softmax,
    mutual_info_bits,
    normalized_mutual_info,
    probe_scores,
    scored_cluster_sizes,
)
from ..probe import probe_logits, train_probe
from ..results import METRIC_COLUMNS, load_probe, load_probe_run
from ..split import TEST
from ..study import Study


def probe_config(params: dict) -> ProbeConfig:
    """The ``ProbeConfig`` a probe's manifest records (its fields; tuples come back from JSON as lists)."""
    fields = {f.name for f in dataclasses.fields(ProbeConfig)}
    return ProbeConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in params.items() if k in fields})


def permutation_baseline(
    study: Study, cache: Cache, probe_key: str, *, repeats: int = 20, seed: int = 0, progress=None
) -> dict:
    """Scores of ``repeats`` probes trained on concepts shuffled across images; cached per probe."""
    key = stable_hash({"probe": probe_key, "repeats": repeats, "seed": seed, "test": "permutation"})
    if cache.has("significance", key):
        return cache.load_json("significance", key, "permutation.json")
    run = load_probe_run(cache, probe_key)
    manifest, assignments, split, k = run.manifest, run.assignments, run.split, run.n_clusters
    concepts = study.concepts.select(run.groups)
    config = probe_config(manifest["params"])
    rng = np.random.default_rng(seed)
    test = split == TEST
    sizes = np.bincount(assignments, minlength=k)
    null = []
    for r in range(repeats):
        shuffled = concepts.matrix[rng.permutation(study.n_images)]
        result = train_probe(shuffled, assignments, split, k, config, seed=manifest["params"]["seed"])
        logits = probe_logits(result.weight, result.bias, shuffled[np.flatnonzero(test)], device=config.device)
        null.append(probe_scores(assignments[test], logits, sizes))
        if progress is not None:
            progress(r)
    observed = cache.load_json("probes", probe_key, "metrics.json")
    out = {"observed": {m: observed[m] for m in METRIC_COLUMNS}, "repeats": repeats, "seed": seed}
    for m in METRIC_COLUMNS:
        values = np.array([s[m] for s in null])
        out[m] = {
            "null": values.tolist(),
            "mean": float(values.mean()),
            "std": float(values.std(ddof=1)),
            "p_value": float((1 + np.sum(values >= observed[m])) / (repeats + 1)),
        }
    cache.write(
        "significance",
        key,
        {"permutation.json": save_json(out)},
        {"inputs": {"probe": probe_key}, "params": {"repeats": repeats, "seed": seed}},
    )
    return out


def bootstrap_ci(
    study: Study, cache: Cache, probe_key: str, *, n_boot: int = 200, seed: int = 0, level: float = 0.95
) -> dict:
    """Percentile confidence intervals of every metric over test images resampled with replacement."""
    key = stable_hash(
        {
            "probe": probe_key,
            "n_boot": n_boot,
            "seed": seed,
            "level": level,
            "test": "bootstrap, percentile shifted by the bias",
        }
    )
    if cache.has("significance", key):
        return cache.load_json("significance", key, "bootstrap.json")
    run = load_probe_run(cache, probe_key)
    assignments, split, k = run.assignments, run.split, run.n_clusters
    concepts = study.concepts.select(run.groups)
    probe = load_probe(cache, probe_key)
    test = np.flatnonzero(split == TEST)
    truth = assignments[test]
    sizes = np.bincount(assignments, minlength=k)
    log_probs = log_softmax(probe_logits(probe["weight"], probe["bias"], concepts.matrix[test]).astype(np.float64))
    predicted = log_probs.argmax(axis=1)
    true_log_prob = log_probs[np.arange(len(test)), truth]
    # ranked as probe_scores ranks them: log-probabilities
    ranked = RankedScores(torch.as_tensor(truth), torch.as_tensor(log_probs), torch.as_tensor(np.unique(truth)))
    rng = np.random.default_rng(seed)
    draws = {m: [] for m in METRIC_COLUMNS}
    for _ in range(n_boot):
        idx = rng.integers(0, len(test), len(test))
        t, p = truth[idx], predicted[idx]
        c = contingency_matrix(t, p)
        mi_bits, mi_norm = mutual_info_bits(scored_cluster_sizes(sizes, t), float(-true_log_prob[idx].mean()))
        draws["nmi"].append(normalized_mutual_info(t, p, contingency=c))
        draws["ami"].append(adjusted_mutual_info(t, p, contingency=c))
        draws["top1"].append(float(np.mean(t == p)))
        counts = torch.as_tensor(np.bincount(idx, minlength=len(test)))
        draws["map"].append(float(torch.nanmean(ranked.average_precision(counts))))
        draws["mi_bits"].append(mi_bits)
        draws["mi_norm"].append(mi_norm)
    observed = cache.load_json("probes", probe_key, "metrics.json")
    tail = (1 - level) / 2 * 100
    out = {}
    for m, values in draws.items():
        # plug-in NMI/AMI/MI are biased upwards, more so on resamples (repeated images): re-centre
        # the percentile interval by the bootstrap estimate of that bias
        bias = float(np.mean(values)) - observed[m]
        out[m] = {
            "low": float(np.percentile(values, tail)) - bias,
            "high": float(np.percentile(values, 100 - tail)) - bias,
            "bias": bias,
        }
    out.update(n_boot=n_boot, seed=seed, level=level)
    cache.write(
        "significance",
        key,
        {"bootstrap.json": save_json(out)},
        {"inputs": {"probe": probe_key}, "params": {"n_boot": n_boot, "seed": seed, "level": level}},
    )
    return out


def significance_table(
    study: Study,
    cache: Cache,
    results: pd.DataFrame,
    *,
    repeats: int = 20,
    n_boot: int = 200,
    seed: int = 0,
    progress=None,
) -> pd.DataFrame:
    """One row per result row and metric: observed, permutation mean/std/p-value, bootstrap CI."""
    rows = []
    for row in results.itertuples():
        perm = permutation_baseline(study, cache, row.probe, repeats=repeats, seed=seed)
        boot = bootstrap_ci(study, cache, row.probe, n_boot=n_boot, seed=seed)
        for m in METRIC_COLUMNS:
            rows.append(
                {
                    "model": row.model,
                    "k": row.k,
                    "seed": row.seed,
                    "groups": row.groups,
                    "metric": m,
                    "observed": getattr(row, m),
                    "null_mean": perm[m]["mean"],
                    "null_std": perm[m]["std"],
                    "p_value": perm[m]["p_value"],
                    "ci_low": boot[m]["low"],
                    "ci_high": boot[m]["high"],
                    "repeats": repeats,
                    "n_boot": n_boot,
                    "probe": row.probe,
                }
            )
        if progress is not None:
            progress()
    table = pd.DataFrame(rows)
    cache.write_table(
        study.name,
        "significance",
        table,
        {"repeats": repeats, "n_boot": n_boot, "seed": seed},
        keys=["model", "k", "seed", "groups"],
    )
    return table


def significance_summary(table: pd.DataFrame, metric: str = "nmi") -> pd.DataFrame:
    """One row per model, K and group set of ``significance_table``'s ``metric``: the observed score, the
    permutation mean and the bootstrap interval as means over seeds, and the largest p-value over seeds."""
    return (
        table[table["metric"] == metric]
        .groupby(["model", "k", "groups"])
        .agg(
            observed=("observed", "mean"),
            null_mean=("null_mean", "mean"),
            max_p=("p_value", "max"),
            ci_low=("ci_low", "mean"),
            ci_high=("ci_high", "mean"),
        )
        .reset_index()
    )
