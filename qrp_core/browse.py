"""Read-only access to a cache for the app: studies, tables, images, word clouds. Computes nothing heavy."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .cache import Cache, read_json, read_parquet_file
from .errors import InputError
from .results import ranking, registry_path, results_path
from .study import Study, load_study

BLUE, RED = "#1f5fbf", "#c62828"  # word-cloud colours: cluster i larger, cluster j larger


def list_studies(cache: Cache) -> pd.DataFrame:
    """One row per study the cache has results for: name, study file, rows, models, K values, seeds, and
    ``problem``: why its results cannot be read, if they cannot (a damaged registry reads as empty)."""
    registry = read_json(registry_path(cache), {})
    rows = []
    for name, entry in sorted(registry.items() if isinstance(registry, dict) else []):
        results_file = results_path(cache, name)
        if not isinstance(entry, dict) or "path" not in entry or not results_file.is_file():
            continue
        row = {"study": name, "path": entry["path"], "study_file_exists": Path(entry["path"]).is_file()}
        try:
            results = read_parquet_file(results_file)
        except InputError as exc:
            rows.append({**row, "problem": str(exc)})
            continue
        rows.append(
            {
                **row,
                "results": len(results),
                "models": results["model"].nunique(),
                "k": ", ".join(map(str, sorted(results["k"].unique()))),
                "seeds": results["seed"].nunique(),
                "updated": pd.Timestamp(results_file.stat().st_mtime, unit="s").strftime("%Y-%m-%d %H:%M"),
                "problem": "",
            }
        )
    columns = ["study", "path", "study_file_exists", "results", "models", "k", "seeds", "updated", "problem"]
    return pd.DataFrame(rows, columns=columns)


def open_study(cache: Cache, name: str) -> Study:
    registry = read_json(registry_path(cache), {})
    entry = registry.get(name) if isinstance(registry, dict) else None  # a damaged registry lists nothing
    if not isinstance(entry, dict) or "path" not in entry:
        raise InputError(
            f"the cache lists no study {name!r}",
            where=registry_path(cache),
            fix="run `python -m qrp_core run STUDY.toml` to list it again",
        )
    return load_study(entry["path"])


def model_metadata(study: Study) -> pd.DataFrame:
    rows = [{"model": name, **spec.metadata} for name, spec in study.models.items()]
    table = pd.DataFrame(rows)
    for column in ("family", "architecture", "linear_acc"):
        if column not in table:
            table[column] = None
    return table


def concept_groups(study: Study, *, n_examples: int = 5) -> pd.DataFrame:
    """One row per concept group: how many concepts it has, the share of images with at least one of
    them, and its most frequent concepts (names without the group prefix)."""
    matrix = study.concepts.matrix.tocsr()
    values = matrix.data != 0  # a stored False is no concept
    images_per_concept = np.bincount(matrix.indices[values], minlength=matrix.shape[1])
    groups = np.asarray(study.concepts.groups, dtype=object)
    names = list(study.concepts.group_names)
    # images x groups: how many of the group's concepts each image has (one pass over the nonzeros)
    membership = sp.csr_matrix(
        (np.ones(len(groups), np.float32), (np.arange(len(groups)), [names.index(g) for g in groups])),
        shape=(len(groups), len(names)),
    )
    per_group = (
        sp.csr_matrix((values.astype(np.float32), matrix.indices, matrix.indptr), shape=matrix.shape) @ membership
    )
    images_with_any = np.bincount(per_group.indices[per_group.data > 0], minlength=len(names))
    rows = []
    for g, group in enumerate(names):
        columns = np.flatnonzero(groups == group)
        frequent = columns[np.argsort(-images_per_concept[columns], kind="stable")[:n_examples]]
        rows.append(
            {
                "group": group,
                "concepts": len(columns),
                "images with any (%)": 100 * images_with_any[g] / study.n_images,
                "most frequent": ", ".join(study.concepts.names[c].split("] ", 1)[-1] for c in frequent),
            }
        )
    return pd.DataFrame(rows)


def ranking_table(cache: Cache, study: Study, results: pd.DataFrame) -> pd.DataFrame:
    """Mean ± std over seeds per model, with the metadata, and the permutation chance level and bootstrap
    interval of each metric (means over seeds) where ``significance`` has been run."""
    table = ranking(results).merge(model_metadata(study), on="model", how="left")
    significance = cache.read_table(study.name, "significance")
    if significance is not None:
        sig = significance[significance["probe"].isin(results["probe"])]
        summary = (
            sig.groupby(["model", "k", "groups", "metric"])[["null_mean", "ci_low", "ci_high", "p_value"]]
            .agg({"null_mean": "mean", "ci_low": "mean", "ci_high": "mean", "p_value": "max"})
            .unstack("metric")
        )
        summary.columns = [f"{metric}_{stat}" for stat, metric in summary.columns]
        table = table.merge(summary.reset_index(), on=["model", "k", "groups"], how="left")
    return table


def provenance(cache: Cache, results: pd.DataFrame) -> pd.DataFrame:
    """How each result row was made, read from its artefacts' manifests: the clustering (backend,
    device, restarts x iterations actually run, training points, the features' hash), the split, the
    probe's training (device, epochs, best epoch, schedule, the concepts' hash), versions and commit."""
    rows = []
    for row in results.sort_values(["model", "k", "seed"]).itertuples():
        clustering = cache.manifest("clusterings", row.clustering)
        split = cache.manifest("splits", row.split)["stats"]
        probe = cache.manifest("probes", row.probe)
        kmeans, trained, params = clustering.get("stats", {}), probe["stats"], probe["params"]
        runs = kmeans.get("iterations_run", [])  # per restart; all equal unless K-means may stop early
        iterations = f"{min(runs)}–{max(runs)}" if runs and max(runs) > min(runs) else max(runs, default=0)
        versions = probe["versions"]
        rows.append(
            {
                "model": row.model,
                "k": row.k,
                "seed": row.seed,
                "clustering": (
                    f"{kmeans['backend']} K-means on {kmeans['device']}"
                    if "backend" in kmeans
                    else "the model's given clusters"
                ),
                "restarts x iterations": f"{len(runs)} x {iterations}" if runs else "",
                "training points": kmeans.get("n_train_points"),
                "features sha256": clustering["inputs"].get("features_sha256", "")[:12],
                "train / val / test": f"{split['n_train']} / {split['n_val']} / {split['n_test']}",
                "probe": f"{trained['device']}, {trained['epochs_run']} epochs, kept {trained['best_epoch']}"
                + (" (the marginal: no epoch beat it)" if trained["best_epoch"] == 0 else ""),
                "schedule": (
                    f"lr {params['lr']:g} ÷{1 / params['lr_gamma']:g} at epochs "
                    f"{trained.get('lr_milestones', params.get('lr_milestones'))}, "
                    f"momentum {params['momentum']:g}, wd {params['weight_decay']:g}, "
                    f"batch {params['batch_size']}"
                ),
                "concepts sha256": probe["inputs"]["concepts_sha256"][:12],
                "versions": (
                    f"qrp {(versions.get('git_commit') or versions['qrp_core'])[:8]} · torch {versions['torch']}"
                    f" · faiss {versions['faiss']}"
                ),
                "created": probe["created"][:16].replace("T", " "),
                "probe key": row.probe,
            }
        )
    return pd.DataFrame(rows)


def training_curve(cache: Cache, probe_key: str) -> tuple[pd.DataFrame, int]:
    """A probe's per-epoch training and validation loss (and learning rate), and its kept epoch."""
    stats = cache.manifest("probes", probe_key)["stats"]
    return pd.DataFrame(stats["history"]), int(stats["best_epoch"])


def linear_fit(x: np.ndarray, y: np.ndarray) -> dict:
    """Least-squares line and Pearson r of y on x (Fig. 3), with r's two-sided p-value as
    ``scipy.stats.linregress`` gives it (from ``scipy.special``: scipy.stats is slow to import for the app)."""
    from scipy.special import stdtr

    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    dx, dy = x - x.mean(), y - y.mean()
    slope = float(dx @ dy / (dx @ dx))
    r = float(np.clip(dx @ dy / np.sqrt((dx @ dx) * (dy @ dy)), -1, 1))
    dof = len(x) - 2
    if dof < 1:
        p_value = float("nan")
    else:
        p_value = 0.0 if abs(r) == 1 else float(2 * stdtr(dof, -abs(r) * np.sqrt(dof / ((1 - r) * (1 + r)))))
    return {"slope": slope, "intercept": float(y.mean() - slope * x.mean()), "r": r, "p_value": p_value}


def image_files(study: Study, indices: np.ndarray) -> list[Path | None]:
    """The image files of the given rows (relative paths start at the study file's folder)."""
    if study.image_paths is None:
        return [None] * len(indices)
    root = Path(study.path).parent
    return [root / study.image_paths[i] for i in indices]


def thumbnail(path: Path, side: int = 256):
    """The image at ``path`` as a PIL image of at most ``side`` pixels a side, or None when the file is
    missing or is not an image."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            image.thumbnail((side, side))
            return image.convert("RGB")
    except (OSError, UnidentifiedImageError, ValueError):
        return None


def placeholder_image(side: int = 64):
    """A grey square that stands in for an image file that cannot be read."""
    from PIL import Image

    return Image.new("RGB", (side, side), (200, 200, 200))


def wordcloud_words(difference: pd.DataFrame, n: int = 40) -> pd.DataFrame:
    """The ``n`` concepts of largest |theta_i - theta_j| among those that occur in either cluster
    (when ``difference`` has the frequencies of ``explain_pair``): size = |difference|, colour = side."""
    if "frequency_i" in difference:
        difference = difference[(difference["frequency_i"] > 0) | (difference["frequency_j"] > 0)]
    top = difference.reindex(difference["difference"].abs().sort_values(ascending=False).index).head(n)
    top = top[top["difference"] != 0]
    return top.assign(size=top["difference"].abs(), colour=np.where(top["difference"] > 0, BLUE, RED))


def wordcloud_image(words: pd.DataFrame, *, width: int = 640, height: int = 320):
    """A PIL image of the words (blue: cluster i larger, red: cluster j larger)."""
    from wordcloud import WordCloud

    colours = dict(zip(words["concept"], words["colour"]))
    cloud = WordCloud(
        width=width,
        height=height,
        background_color="white",
        prefer_horizontal=1.0,
        random_state=0,
        collocations=False,
        margin=4,
        color_func=lambda word, **_: colours.get(word, "#555555"),
    )
    cloud.generate_from_frequencies(dict(zip(words["concept"], words["size"])))
    return cloud.to_image()
