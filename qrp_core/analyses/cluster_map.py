"""The cluster map: a clustering's K centroids laid out in 2-D, each with its size and most telling concepts,
so that any two clusters can be picked and compared (the app's Cluster map page)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..cache import Cache
from ..profiles import cluster_concept_counts
from ..study import Study


def centroid_layout(centroids: np.ndarray) -> np.ndarray:
    """(K, 2): the centroids projected on their first two principal axes, each axis signed so that its
    largest loading is positive (the same layout on every call)."""
    centred = np.asarray(centroids, np.float64) - np.mean(centroids, axis=0, dtype=np.float64)
    _, _, axes = np.linalg.svd(centred, full_matrices=False)
    axes = axes[:2]
    axes *= np.sign(axes[np.arange(len(axes)), np.abs(axes).argmax(1)])[:, None]
    layout = centred @ axes.T
    return np.pad(layout, ((0, 0), (0, 2 - layout.shape[1])))  # a 1-D feature space lies on the x axis


def cluster_map(study: Study, cache: Cache, clustering_key: str, *, n_top: int = 3) -> pd.DataFrame:
    """One row per cluster: ``x``, ``y`` (``centroid_layout``), ``size`` (images), ``group`` of its most
    over-represented concept ("none" when no concept is more frequent in it than overall) and its ``n_top``
    most over-represented concepts, ranked as ``pairs.over_represented`` ranks them (p_c log(p_c / p))."""
    centroids = cache.load_array("clusterings", clustering_key, "centroids.npy")
    assignments = cache.load_array("clusterings", clustering_key, "assignments.npy")
    sizes = np.bincount(assignments, minlength=len(centroids))
    counts = cluster_concept_counts(study, cache, clustering_key)
    overall = np.asarray(study.concepts.matrix.sum(axis=0)).ravel() / study.n_images
    names, groups = np.asarray(study.concepts.names), np.asarray(study.concepts.groups)
    top, top_group = [], []
    for cluster in range(len(centroids)):
        row = counts[cluster]
        in_cluster = row.data / max(int(sizes[cluster]), 1)
        score = in_cluster * np.log(in_cluster / overall[row.indices])
        over = np.flatnonzero(score > 0)
        order = row.indices[over[np.argsort(-score[over], kind="stable")][:n_top]]
        top.append(", ".join(names[order]))
        top_group.append(groups[order[0]] if len(order) else "none")
    layout = centroid_layout(centroids)
    return pd.DataFrame(
        {
            "cluster": np.arange(len(centroids)),
            "x": layout[:, 0],
            "y": layout[:, 1],
            "size": sizes,
            "group": top_group,
            "top_concepts": top,
        }
    )
