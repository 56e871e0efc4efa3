"""The results table of a study and the artefacts the app reads: where they live, how rows are kept,
and their summaries over seeds. Imports no torch or faiss, so browsing stays light."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from safetensors.numpy import load_file

from .cache import Cache, atomic_write_bytes, atomic_write_json, locked, read_json, read_parquet_file, replace_rows
from .errors import InputError
from .study import Study

RESULT_KEYS = ["model", "k", "seed", "groups"]
SETTINGS_SCOPE = ["model", "k", "groups"]  # the seeds of one (model, K, group set) share one settings key
STUDIES = "studies.json"  # study name -> study file, for the app
METRIC_COLUMNS = ["nmi", "ami", "top1", "map", "mi_bits", "mi_norm"]


def groups_label(groups: tuple[str, ...]) -> str:
    return "+".join(groups)


def parse_groups(text: str, study: Study) -> tuple[str, ...]:
    """``all`` or ``a+b+c`` -> a tuple of groups of the study (validated; errors name the study file)."""
    if text == "all":
        return study.concepts.group_names
    groups = tuple(g for g in text.split("+") if g)
    try:
        study.concepts.select(groups)  # raises on unknown or empty groups
    except InputError as exc:
        raise InputError(exc.problem, fix=exc.fix, where=study.path) from None
    return study.concepts.canonical(groups)


def results_path(cache: Cache, study_name: str) -> Path:
    """The results table of a study: ``results/<study>.parquet``."""
    return cache.root / "results" / f"{study_name}.parquet"


def registry_path(cache: Cache) -> Path:
    """The cache's study registry (study name -> study file), which the app lists."""
    return cache.root / STUDIES


def save_results(cache: Cache, study: Study, new: pd.DataFrame) -> pd.DataFrame:
    """Upsert rows into the study's results table (one row per model, K, seed, group set). Stored rows
    of the same model, K and group set but other settings (``Runner.settings_key``) are dropped too, so
    that the seeds of one mean share their settings; returns the rows dropped for that reason."""
    path = results_path(cache, study.name)
    with locked(path):
        old = _stored_results(path)
        kept = new if old is None else replace_rows(old.assign(settings=old.get("settings", "")), new, RESULT_KEYS)
        settings = new.drop_duplicates(SETTINGS_SCOPE).set_index(SETTINGS_SCOPE)["settings"]
        scope = kept.set_index(SETTINGS_SCOPE).index
        stale = scope.isin(settings.index) & (kept["settings"].to_numpy() != settings.reindex(scope).to_numpy())
        atomic_write_bytes(path, kept[~stale].sort_values(RESULT_KEYS).to_parquet(index=False))
    register_study(cache, study)
    return kept[stale]


def _stored_results(path: Path) -> pd.DataFrame | None:
    """The stored results table, or None when there is none; a damaged one is moved aside with a warning, and
    the run's rows start it again (its other rows come back when their runs are repeated: cached, so quick)."""
    if not path.is_file():
        return None
    try:
        return read_parquet_file(path)
    except InputError:
        aside = path.with_name(f"{path.stem}.damaged-{int(time.time())}.parquet")
        path.replace(aside)
        print(
            f"warning: {path} was damaged: moved to {aside.name}; rerun earlier `run`s to restore their rows "
            "(their artefacts are cached)",
            file=sys.stderr,
        )
        return None


def register_study(cache: Cache, study: Study) -> None:
    """Remember where the study file is, so the app can list the studies of a cache."""
    path = registry_path(cache)
    with locked(path):
        registry = read_json(path, {})  # a damaged registry is rebuilt by the runs that register
        registry = registry if isinstance(registry, dict) else {}
        registry[study.name] = {"path": str(Path(study.path).resolve())}
        atomic_write_json(path, registry)


def load_results(cache: Cache, study: Study) -> pd.DataFrame:
    path = results_path(cache, study.name)
    if not path.is_file():
        raise InputError(
            "no results for this study yet", where=path, fix=f"run `python -m qrp_core run {study.path}` first"
        )
    return read_parquet_file(path)


def result_rows(
    results: pd.DataFrame, *, models=None, k: int | None = None, seed: int | None = None, groups: str | None = None
) -> pd.DataFrame:
    """The rows of ``results`` of the given models, K, seed and group set label (``a+b``); None keeps all."""
    keep = np.ones(len(results), dtype=bool)
    if models is not None:
        keep &= results["model"].isin(list(models)).to_numpy()
    for column, value in (("k", k), ("seed", seed), ("groups", groups)):
        if value is not None:
            keep &= (results[column] == value).to_numpy()
    return results[keep]


def select_results(
    results: pd.DataFrame,
    study: Study,
    *,
    k: int | None = None,
    groups: str | None = None,
    models: list[str] | None = None,
) -> pd.DataFrame:
    """The result rows of one K, group set (``all`` or ``a+b``) and models; none is an error that lists
    what there is."""
    label = None if groups is None else groups_label(parse_groups(groups, study))
    chosen = result_rows(results, models=models or None, k=k, groups=label)
    if chosen.empty:
        asked = ", ".join(
            f"{name}={value}" for name, value in (("K", k), ("groups", groups), ("models", models)) if value is not None
        )
        there = [
            f"--k from {sorted(results['k'].unique().tolist())}",
            f"--groups from {sorted(results['groups'].unique().tolist())} or all",
        ]
        if models:
            there.append(f"--models from {sorted(results['model'].unique().tolist())}")
        raise InputError(
            f"no results for {asked}",
            where=study.path,
            fix=f"choose {', '.join(there)}; or `run` the missing ones first",
        )
    return chosen


def find_probe(results: pd.DataFrame, model: str, k: int, seed: int, groups: tuple[str, ...] | str) -> str | None:
    """The probe key of one result row (model, K, seed, group set), or None when there is none."""
    label = groups if isinstance(groups, str) else groups_label(groups)
    row = result_rows(results, models=[model], k=k, seed=seed, groups=label)
    return None if row.empty else str(row["probe"].iloc[0])


def require_probe(cache: Cache, study: Study, *, model: str, k: int, seed: int, groups: str) -> str:
    """``find_probe`` over the study's results; a missing probe is an error that gives the ``run`` command
    that computes it (``--seeds S`` runs seeds 0..S-1)."""
    study.model(model, check_files=False)  # an unknown model is named as such, not as a missing probe
    label = groups_label(parse_groups(groups, study))
    key = find_probe(load_results(cache, study), model, k, seed, label)
    if key is None:
        cache_option = f" --cache {cache.root}" if cache.root.resolve() != Cache().root.resolve() else ""
        raise InputError(
            f"no probe for model={model} k={k} seed={seed} groups={label}",
            where=study.path,
            fix=f"run `python -m qrp_core run {study.path}{cache_option} --models {model} --k {k} "
            f"--seeds {seed + 1} --groups {label}` first",
        )
    return key


def mean_std(results: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """Mean and sample std (ddof=1) of every metric over the seeds of each ``by`` group, and ``n_seeds``."""
    grouped = results.groupby(by)
    table = grouped[METRIC_COLUMNS].agg(["mean", "std"])
    table.columns = [f"{metric}_{stat}" for metric, stat in table.columns]
    return table.assign(n_seeds=grouped.size()).reset_index()


MIN_TEST_IMAGES_PER_CLUSTER = 10  # below this, NMI, AMI and top-1 of a probe are mostly chance (README: Choosing K)


def ranking(results: pd.DataFrame) -> pd.DataFrame:
    """Mean and sample std (ddof=1) over seeds per (model, K, group set), best NMI first; a model whose
    clusterings left clusters empty (``empty_clusters``: the most over its seeds) ranks after every other,
    whatever its scores, which measure fewer clusters than K."""
    table = mean_std(results, ["model", "k", "groups"])
    empty = results.get("n_empty_clusters", pd.Series(0, index=results.index)).fillna(0)
    table = table.merge(
        empty.groupby([results["model"], results["k"], results["groups"]]).max().rename("empty_clusters").reset_index(),
        on=["model", "k", "groups"],
    )
    table["empty_clusters"] = table["empty_clusters"].astype(int)
    table["degenerate"] = table["empty_clusters"] > 0
    return table.sort_values(
        ["k", "groups", "degenerate", "nmi_mean"], ascending=[True, True, True, False], ignore_index=True
    ).drop(columns="degenerate")


def measure_warnings(results: pd.DataFrame) -> list[str]:
    """What makes the given result rows' numbers untrustworthy, one line each: clusterings with empty
    clusters, and K too large for the test split (fewer than ``MIN_TEST_IMAGES_PER_CLUSTER`` per cluster)."""
    lines = []
    if "n_empty_clusters" in results:
        bad = results[results["n_empty_clusters"].fillna(0) > 0]
        for (model, k), part in bad.groupby(["model", "k"]):
            seeds = sorted(part["seed"].unique())
            lines.append(
                f"{model} K={k}: K-means left up to {int(part['n_empty_clusters'].max())} of {k} clusters empty "
                f"(seed {', '.join(map(str, seeds))}): its scores measure fewer clusters than K, so it ranks last; "
                "its features hardly differ between images"
            )
    if "n_test" in results:
        per_cluster = results.groupby("k")["n_test"].mean() / results.groupby("k")["k"].first()
        for k, value in per_cluster.items():
            if round(value, 1) < MIN_TEST_IMAGES_PER_CLUSTER:  # as printed: 9.99 reads 10.0 and is 10
                lines.append(
                    f"K={k}: {value:.1f} test images per cluster (fewer than {MIN_TEST_IMAGES_PER_CLUSTER}): NMI, AMI "
                    f"and top-1 are mostly chance at this K; choose K <= {max(2, int(value * k // MIN_TEST_IMAGES_PER_CLUSTER))} "
                    "for this collection (README: Choosing K)"
                )
    return lines


@dataclass(frozen=True)
class ProbeRun:
    """One probe and what it was trained on, read from the cache (``load_probe_run``)."""

    key: str
    manifest: dict  # the probe's manifest: inputs, params, stats
    clustering: str  # the clustering's key
    n_clusters: int  # K
    groups: tuple[str, ...]  # the concept groups the probe saw
    assignments: np.ndarray  # (n_images,) int: the clustering's cluster of every image
    split: np.ndarray  # (n_images,) int8: TRAIN, VAL or TEST
    predictions: np.ndarray  # (n_images,) int32: the probe's predicted cluster


def load_probe_run(cache: Cache, probe_key: str) -> ProbeRun:
    """The probe's manifest, its clustering's assignments, its split and its predictions."""
    manifest = cache.manifest("probes", probe_key)
    clustering = manifest["inputs"]["clustering"]
    return ProbeRun(
        key=probe_key,
        manifest=manifest,
        clustering=clustering,
        n_clusters=int(cache.manifest("clusterings", clustering)["params"]["n_clusters"]),
        groups=tuple(manifest["inputs"]["groups"]),
        assignments=cache.load_array("clusterings", clustering, "assignments.npy"),
        split=cache.load_array("splits", manifest["inputs"]["split"], "split.npy"),
        predictions=cache.load_array("probes", probe_key, "predictions.npy"),
    )


def per_image_table(study: Study, cache: Cache, probe_key: str) -> pd.DataFrame:
    """image_id, split, cluster, predicted for every image, from one probe's artefacts."""
    run = load_probe_run(cache, probe_key)
    names = np.array(["train", "val", "test"])
    return pd.DataFrame(
        {
            "image_id": study.image_ids,
            "split": names[run.split],
            "cluster": run.assignments,
            "predicted": run.predictions,
        }
    )


def load_probe(cache: Cache, probe_key: str) -> dict:
    """weight (n_concepts, K), bias (K,) and the concept names and groups of one probe."""
    tensors = load_file(str(cache.path("probes", probe_key) / "probe.safetensors"))
    return {**tensors, **cache.load_json("probes", probe_key, "concepts.json")}


def welch_p_value(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sided p-value of Welch's t-test, as ``scipy.stats.ttest_ind(a, b, equal_var=False)``, from Student's
    t distribution in ``scipy.special``: importing scipy.stats would take longer than the app's first page."""
    from scipy.special import stdtr

    share_a, share_b = np.var(a, ddof=1) / len(a), np.var(b, ddof=1) / len(b)
    variance = share_a + share_b
    if not variance > 0:  # no spread on either side: as scipy, p = 0 for different means, undefined for equal ones
        return 0.0 if np.mean(a) != np.mean(b) else float("nan")
    t = (np.mean(a) - np.mean(b)) / np.sqrt(variance)
    dof = variance**2 / (share_a**2 / (len(a) - 1) + share_b**2 / (len(b) - 1))
    return float(2 * stdtr(dof, -abs(t)))


def compare_models(results: pd.DataFrame, *, metric: str = "nmi", alpha: float = 0.05) -> pd.DataFrame:
    """Each model against the next one down the ranking (per K and group set): the difference of
    mean ``metric`` over seeds and Welch's t-test p-value; ``distinguishable`` when p < alpha."""
    rows = []
    for (k, groups), part in results.groupby(["k", "groups"]):
        means = part.groupby("model")[metric].mean().sort_values(ascending=False)
        for better, worse in zip(means.index[:-1], means.index[1:]):
            a = part.loc[part["model"] == better, metric].to_numpy()
            b = part.loc[part["model"] == worse, metric].to_numpy()
            p = welch_p_value(a, b) if min(len(a), len(b)) > 1 else float("nan")
            rows.append(
                {
                    "k": k,
                    "groups": groups,
                    "model": better,
                    "next_model": worse,
                    "metric": metric,
                    "difference": means[better] - means[worse],
                    "p_value": p,
                    "distinguishable": bool(p < alpha) if np.isfinite(p) else False,
                }
            )
    return pd.DataFrame(rows)


LATEX_COLUMNS = {"nmi": "NMI", "ami": "AMI", "top1": "Top-1", "map": "mAP", "mi_bits": "MI (bits)"}
_LATEX_SPECIAL = str.maketrans(
    {c: "\\" + c for c in "&%$#_{}"} | {"~": r"\textasciitilde{}", "^": r"\^{}", "\\": r"\textbackslash{}"}
)


def latex_table(ranked: pd.DataFrame) -> str:
    """``ranking(results)`` as booktabs tables, one per K and group set, for a paper: metrics in percent
    with one decimal (MI in bits, two), mean ± std over seeds, the best mean of each column in bold."""
    blocks = []
    for (k, groups), part in ranked.groupby(["k", "groups"], sort=False):
        cells = {}
        for metric in LATEX_COLUMNS:
            scale, digits = (1, 2) if metric == "mi_bits" else (100, 1)
            means = (part[f"{metric}_mean"] * scale).round(digits)
            stds = (part[f"{metric}_std"] * scale).round(digits)
            cells[metric] = [
                (rf"\mathbf{{{m:.{digits}f}}}" if m == means.max() and len(part) > 1 else f"{m:.{digits}f}")
                + ("" if np.isnan(s) else rf" \pm {s:.{digits}f}")
                for m, s in zip(means, stds)
            ]
        seeds = ", ".join(map(str, sorted(part["n_seeds"].unique())))
        lines = [
            f"% K={k}, probe on {groups}: mean ± std (ddof=1) over {seeds} seed(s); best in bold",
            r"\begin{tabular}{l" + "c" * len(LATEX_COLUMNS) + "}",
            r"\toprule",
            " & ".join(["Model", *LATEX_COLUMNS.values()]) + r" \\",
            r"\midrule",
        ]
        empty = part["empty_clusters"] if "empty_clusters" in part else pd.Series(0, index=part.index)
        for row, (model, n_empty) in enumerate(zip(part["model"], empty)):
            name = str(model).translate(_LATEX_SPECIAL) + (r"$^\dagger$" if n_empty else "")
            lines.append(" & ".join([name, *(f"${cells[m][row]}$" for m in LATEX_COLUMNS)]) + r" \\")
        if empty.any():
            lines.insert(1, r"% $^\dagger$: K-means left clusters empty; ranked last")
        blocks.append("\n".join([*lines, r"\bottomrule", r"\end{tabular}"]))
    return "\n\n".join(blocks) + "\n"
