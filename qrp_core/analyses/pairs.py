"""Confused cluster pairs and why (paper section 4.4, Fig. 5, 8-11).

For one clustering, compare a probe on groups A with a probe on A + G: rank cluster pairs by
how much less they are confused once G is known, and explain a pair by the difference of its
two clusters' probe coefficients. Everything is computed per pair; nothing is K x K x M.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ..cache import Cache, read_parquet_file
from ..config import RunConfig
from ..errors import InputError
from ..profiles import cluster_concept_counts
from ..results import ProbeRun, groups_label, load_probe, load_probe_run, result_rows, results_path
from ..split import TEST
from ..study import Study


def confusion_matrix(true: np.ndarray, predicted: np.ndarray, n_clusters: int) -> sp.csr_matrix:
    """Sparse (K, K) counts: row = true cluster, column = predicted cluster."""
    return sp.csr_matrix((np.ones(len(true), np.int64), (true, predicted)), shape=(n_clusters, n_clusters))


def pairwise_confusion(confusion: sp.spmatrix) -> pd.DataFrame:
    """Symmetric confusion of each pair i < j that is confused at all.

    confusion(i, j) = (C[i, j] + C[j, i]) / (n_i + n_j): the fraction of the two clusters' test
    images predicted as the other one, where n_i counts the test images of cluster i.
    """
    c = sp.coo_matrix(confusion)
    sizes = np.asarray(confusion.sum(axis=1)).ravel()
    off = c.row != c.col
    i, j = np.minimum(c.row[off], c.col[off]), np.maximum(c.row[off], c.col[off])
    sym = sp.coo_matrix((c.data[off], (i, j)), shape=confusion.shape).tocsr()
    sym.sum_duplicates()
    sym = sym.tocoo()
    return pd.DataFrame(
        {"i": sym.row, "j": sym.col, "confused": sym.data, "confusion": sym.data / (sizes[sym.row] + sizes[sym.col])}
    )


def _test_confusion(run: ProbeRun) -> sp.csr_matrix:
    test = run.split == TEST
    return confusion_matrix(run.assignments[test], run.predictions[test], run.n_clusters)


def pair_confusion(cache: Cache, probe: str, i: int, j: int) -> float:
    """The probe's symmetric confusion of clusters i and j on test images: (C[i,j] + C[j,i]) / (n_i + n_j)."""
    confusion = _test_confusion(load_probe_run(cache, probe)).tocsr()
    sizes = np.asarray(confusion.sum(axis=1)).ravel()
    return float((confusion[i, j] + confusion[j, i]) / max(sizes[i] + sizes[j], 1))


def most_confused_pairs(cache: Cache, probe: str, n: int) -> pd.DataFrame:
    """The ``n`` pairs the probe confuses most on test images (``pairwise_confusion``), ties by cluster ids."""
    confused = pairwise_confusion(_test_confusion(load_probe_run(cache, probe)))
    return confused.sort_values(["confusion", "i", "j"], ascending=[False, True, True], kind="stable").head(n)


def confusion_drop(cache: Cache, probe_a: str, probe_b: str) -> pd.DataFrame:
    """Pairs ranked by how much less probe B confuses them than probe A (same clustering and split).

    Columns: i, j, confusion_a, confusion_b, drop (= a - b), largest drop first.
    """
    run_a, run_b = load_probe_run(cache, probe_a), load_probe_run(cache, probe_b)
    if (run_a.clustering, run_a.manifest["inputs"]["split"]) != (run_b.clustering, run_b.manifest["inputs"]["split"]):
        raise InputError(
            "the two probes were trained on different clusterings or splits",
            fix="compare probes of the same model, K and seed",
        )
    a = pairwise_confusion(_test_confusion(run_a)).set_index(["i", "j"])["confusion"]
    b = pairwise_confusion(_test_confusion(run_b)).set_index(["i", "j"])["confusion"]
    table = pd.concat({"confusion_a": a, "confusion_b": b}, axis=1).fillna(0.0)
    table["drop"] = table["confusion_a"] - table["confusion_b"]
    return table.reset_index().sort_values(["drop", "i", "j"], ascending=[False, True, True], ignore_index=True)


def coefficient_difference(probe: dict, i: int, j: int) -> pd.DataFrame:
    """theta_i - theta_j per concept (positive: the concept speaks for cluster i), largest |difference| first.

    ``probe`` is ``results.load_probe(...)``: weight (n_concepts, K) and the concept names and groups.
    """
    weight = probe["weight"]
    diff = weight[:, i] - weight[:, j]
    table = pd.DataFrame(
        {
            "concept": probe["names"],
            "group": probe["groups"],
            "difference": diff,
            "theta_i": weight[:, i],
            "theta_j": weight[:, j],
        }
    )
    return table.reindex(np.argsort(-np.abs(diff), kind="stable")).reset_index(drop=True)


def top_concepts(probe: dict, cluster: int, n: int = 10) -> pd.DataFrame:
    """The concepts with the largest probe coefficients for one cluster."""
    column = probe["weight"][:, cluster]
    order = np.argsort(-column, kind="stable")[:n]
    return pd.DataFrame(
        {
            "concept": np.asarray(probe["names"])[order],
            "group": np.asarray(probe["groups"])[order],
            "coefficient": column[order],
        }
    )


def nearest_images(cache: Cache, clustering_key: str, cluster: int, n: int = 32) -> np.ndarray:
    """Indices of the cluster's images, nearest its centroid first (all members when n is None)."""
    assignments = cache.load_array("clusterings", clustering_key, "assignments.npy")
    members = np.flatnonzero(assignments == cluster)
    distances_path = cache.path("clusterings", clustering_key) / "distances.npy"
    if distances_path.is_file():  # given cluster ids have no centroids: they keep image order
        distances = np.load(distances_path)[members]
        members = members[np.argsort(distances, kind="stable")]
    return members if n is None else members[:n]


def over_represented(study: Study, cache: Cache, clustering_key: str, cluster: int, n: int = 10) -> pd.DataFrame:
    """Concepts most over-represented in one cluster relative to the whole collection.

    Ranked by p_c * log(p_c / p), the concept's contribution to the KL divergence between the
    cluster's and the collection's concept frequencies: frequent *and* specific concepts first. Only
    concepts more frequent in the cluster than overall (lift > 1), so there may be fewer than ``n``.
    """
    counts = cluster_concept_counts(study, cache, clustering_key)
    size = int(np.sum(cache.load_array("clusterings", clustering_key, "assignments.npy") == cluster))
    overall = np.asarray(study.concepts.matrix.sum(axis=0)).ravel() / study.n_images
    row = counts[cluster]
    in_cluster = row.data / max(size, 1)
    base = overall[row.indices]
    score = in_cluster * np.log(in_cluster / base)
    over = np.flatnonzero(score > 0)
    order = over[np.argsort(-score[over], kind="stable")][:n]
    return pd.DataFrame(
        {
            "concept": np.asarray(study.concepts.names)[row.indices[order]],
            "group": np.asarray(study.concepts.groups)[row.indices[order]],
            "in_cluster": in_cluster[order],
            "overall": base[order],
            "lift": in_cluster[order] / base[order],
            "score": score[order],
        }
    )


def explain_pair(study: Study, cache: Cache, probe_key: str, i: int, j: int, *, n: int = 10) -> dict:
    """Why a probe tells clusters ``i`` and ``j`` apart: everything the pair view draws.

    Parameters
    ----------
    study : Study
    cache : Cache
    probe_key : str
        A probe of the study (the ``probe`` column of the results).
    i, j : int
        Two cluster ids of the probe's clustering.
    n : int, default 10
        Concepts and images per side.

    Returns
    -------
    dict
        ``difference``: theta_i - theta_j per concept, largest |difference| first (with each concept's
        frequency in either cluster); ``top_i``, ``top_j``: each cluster's largest coefficients;
        ``images_i``, ``images_j``: row indices of the images nearest each centroid; ``over_i``,
        ``over_j``: the concepts most over-represented in each cluster.

    Examples
    --------
    >>> from qrp_core.analyses.pairs import explain_pair
    >>> from qrp_core.cache import Cache
    >>> from qrp_core.config import KMeansConfig, ProbeConfig, RunConfig
    >>> from qrp_core.demos.synthetic import make_synthetic_study
    >>> from qrp_core.pipeline import Runner
    >>> from qrp_core.study import load_study
    >>> study, cache = load_study(make_synthetic_study("doc-pair", n_images=400, dim=8)), Cache("doc-pair/cache")
    >>> config = RunConfig(models=("combo-net",), ks=(6,), seeds=(0,), kmeans=KMeansConfig(n_iter=10, n_restarts=1),
    ...                    probe=ProbeConfig(max_epochs=10))
    >>> probe = Runner(study, config, cache, show_progress=False).run()["probe"].iloc[0]
    >>> parts = explain_pair(study, cache, probe, 0, 1, n=3)
    >>> sorted(parts)
    ['difference', 'images_i', 'images_j', 'over_i', 'over_j', 'top_i', 'top_j']
    >>> list(parts["difference"].columns)
    ['concept', 'group', 'difference', 'theta_i', 'theta_j', 'frequency_i', 'frequency_j']
    >>> len(parts["images_i"])
    3
    """
    probe = load_probe(cache, probe_key)
    k = probe["weight"].shape[1]
    if i == j or not (0 <= i < k and 0 <= j < k):
        raise InputError(
            f"cannot tell cluster {i} from cluster {j} of a clustering with K={k}",
            fix=f"give two different cluster ids in 0..{k - 1}",
        )
    clustering = cache.manifest("probes", probe_key)["inputs"]["clustering"]
    difference = coefficient_difference(probe, i, j)
    # how often each concept occurs in either cluster: a coefficient of a concept that neither
    # cluster's images have is unconstrained by them, so views show the concepts that occur
    counts = cluster_concept_counts(study, cache, clustering)[[i, j]].toarray()
    assignments = cache.load_array("clusterings", clustering, "assignments.npy")
    sizes = np.bincount(assignments, minlength=max(i, j) + 1)[[i, j]].clip(min=1)
    column = {name: c for c, name in enumerate(study.concepts.names)}
    index = difference["concept"].map(column).to_numpy()
    difference["frequency_i"] = counts[0, index] / sizes[0]
    difference["frequency_j"] = counts[1, index] / sizes[1]
    return {
        "difference": difference,
        "top_i": top_concepts(probe, i, n),
        "top_j": top_concepts(probe, j, n),
        "images_i": nearest_images(cache, clustering, i, n),
        "images_j": nearest_images(cache, clustering, j, n),
        "over_i": over_represented(study, cache, clustering, i, n),
        "over_j": over_represented(study, cache, clustering, j, n),
    }


def pair_groups(cache: Cache, study: Study, *, model: str, k: int, seed: int, i: int, j: int) -> str:
    """The group set (``a+b``) under which ``explain`` shows a pair by default: that of the ``pairs``
    comparison (base + added) that ranked this pair for this model, K and seed; else the only group set the
    results hold for them; else every group. Two comparisons that ranked the pair are an error listing both."""
    pairs = cache.read_table(study.name, "pairs")
    if pairs is not None:
        rows = pairs[(pairs["model"] == model) & (pairs["k"] == k) & (pairs["seed"] == seed)]
        rows = rows[((rows["i"] == i) & (rows["j"] == j)) | ((rows["i"] == j) & (rows["j"] == i))]
        sets = sorted(
            {groups_label(study.concepts.canonical((*b.split("+"), a))) for b, a in zip(rows["base"], rows["added"])}
        )
        if len(sets) == 1:
            return sets[0]
        if sets:
            raise InputError(
                f"clusters {i} and {j} of {model} K={k} seed {seed} were compared under several group sets: {sets}",
                where=study.path,
                fix=f"choose one with --groups ({' or '.join(sets)})",
            )
    path = results_path(cache, study.name)
    held = result_rows(read_parquet_file(path), models=[model], k=k, seed=seed) if path.is_file() else None
    sets = [] if held is None else sorted(held["groups"].unique())
    return sets[0] if len(sets) == 1 else groups_label(study.concepts.group_names)


def run_pairs(
    study: Study, config: RunConfig, cache: Cache, *, base: tuple[str, ...], added: str, show_progress: bool = True
) -> pd.DataFrame:
    """Train (or reuse) the probes on ``base`` and ``base + added`` for every model, K and seed of
    ``config`` and rank each clustering's pairs by the drop in confusion. Stored as the study's
    ``pairs`` analysis table, one row per pair and comparison."""
    from ..pipeline import Runner  # torch and faiss load here, not when the app reads pairs

    if added not in study.concepts.group_names:
        raise InputError(
            f"the study has no concept group {added!r} to add",
            where=study.path,
            fix=f"choose --added from {list(study.concepts.group_names)}",
        )
    if added in base:
        raise InputError(
            f"group {added!r} is already among the base groups {list(base)}", fix="add a group that the base set lacks"
        )
    base = study.concepts.canonical(base)
    with_added = study.concepts.canonical((*base, added))
    results = Runner(
        study, dataclasses.replace(config, group_sets=(base, with_added)), cache, show_progress=show_progress
    ).run()
    probes = results.pivot_table(index=["model", "k", "seed"], columns="groups", values="probe", aggfunc="first")
    tables = []
    for (model, k, seed), row in probes.iterrows():
        table = confusion_drop(cache, row[groups_label(base)], row[groups_label(with_added)])
        tables.append(
            table.assign(
                model=model,
                k=k,
                seed=seed,
                base=groups_label(base),
                added=added,
                probe_a=row[groups_label(base)],
                probe_b=row[groups_label(with_added)],
            )
        )
    pairs = pd.concat(tables, ignore_index=True)
    cache.write_table(
        study.name, "pairs", pairs, {"base": list(base), "added": added}, keys=["model", "k", "seed", "base", "added"]
    )
    return pairs


TOP_PAIRS = 10  # pairs per clustering that score a comparison


def most_informative_comparison(pairs: pd.DataFrame, k: int) -> tuple[str, str, float] | None:
    """Of the comparisons computed at ``k`` (base groups, added group), the one whose largest confusion drops
    are largest: per model and seed the mean of its ``TOP_PAIRS`` largest drops, then the mean over model and
    seed. Returns (base, added, that score as a share of confusion), or None when none was computed at ``k``."""
    at_k = pairs[pairs["k"] == k]
    if at_k.empty:
        return None
    keys = ["base", "added", "model", "seed"]
    top = at_k.sort_values("drop", ascending=False, kind="stable").groupby(keys).head(TOP_PAIRS)
    score = top.groupby(keys)["drop"].mean().groupby(["base", "added"]).mean()
    base, added = score.idxmax()
    return base, added, float(score.max())
