"""Stratified train / validation / test split by cluster id (appendix C: 80/20, then 20% of train for validation)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .config import SplitConfig
from .errors import InputError

TRAIN, VAL, TEST = 0, 1, 2


def stratified_split(
    assignments: np.ndarray, config: SplitConfig = SplitConfig(), *, seed: int
) -> tuple[np.ndarray, dict]:
    """Assign every image to train, validation or test, stratified by cluster.

    Each cluster of size n gives round(n * test_fraction) images to test and, of the rest,
    round(rest * val_fraction) to validation; so a cluster of 1 or 2 images stays wholly in
    train. Such clusters are counted in the stats, never an error.

    Parameters
    ----------
    assignments : ndarray of shape (n_images,), int
        Cluster id per image.

    Returns
    -------
    split : ndarray of shape (n_images,), int8
        ``TRAIN`` (0), ``VAL`` (1) or ``TEST`` (2) per image.
    stats : dict
        Split sizes and the clusters missing from the test or validation split.
    """
    assignments = np.asarray(assignments)
    rng = np.random.default_rng(seed)
    order = np.lexsort((rng.random(len(assignments)), assignments))  # by cluster, shuffled within
    clusters, starts, sizes = np.unique(assignments[order], return_index=True, return_counts=True)
    n_test, n_val = split_sizes(sizes, config)
    rank = np.arange(len(order)) - np.repeat(starts, sizes)  # position within its cluster
    per_item_test = np.repeat(n_test, sizes)
    per_item_val = np.repeat(n_val, sizes)
    split = np.full(len(assignments), TRAIN, dtype=np.int8)
    split[order[rank < per_item_test]] = TEST
    split[order[(rank >= per_item_test) & (rank < per_item_test + per_item_val)]] = VAL
    stats = {
        "n_train": int((split == TRAIN).sum()),
        "n_val": int((split == VAL).sum()),
        "n_test": int((split == TEST).sum()),
        "n_clusters_present": int(len(clusters)),
        "clusters_without_test": clusters[n_test == 0].tolist(),
        "clusters_without_val": clusters[n_val == 0].tolist(),
    }
    return split, stats


def split_sizes(sizes: np.ndarray, config: SplitConfig) -> tuple[np.ndarray, np.ndarray]:
    """Test and validation images of clusters of these sizes (rounded half up); the rest is train."""
    sizes = np.asarray(sizes, dtype=np.int64)
    n_test = np.floor(sizes * config.test_fraction + 0.5).astype(np.int64)
    n_val = np.floor((sizes - n_test) * config.val_fraction + 0.5).astype(np.int64)
    return n_test, n_val


def min_cluster_size(config: SplitConfig = SplitConfig()) -> int:
    """The smallest cluster that gives train, validation and test one image each (4 by default).

    Each split only grows with the cluster, so the first size that works is the bound."""
    sizes = np.arange(1, 10_001)
    n_test, n_val = split_sizes(sizes, config)
    works = np.flatnonzero((n_test >= 1) & (n_val >= 1) & (sizes - n_test - n_val >= 1))
    if not len(works):
        raise ValueError(f"no cluster size gives every split an image under {config}")
    return int(sizes[works[0]])


def check_splittable(
    n_clusters: int, n_images: int, config: SplitConfig = SplitConfig(), *, source: str | Path
) -> None:
    """K clusters of n_images must average enough images per cluster for every split to get one."""
    smallest = min_cluster_size(config)
    if n_clusters * smallest > n_images:
        raise InputError(
            f"K={n_clusters} leaves too few images per cluster for the train/validation/test "
            f"split ({n_images} images, {n_images / n_clusters:.3g} per cluster; at least "
            f"{smallest} give each split one)",
            where=source,
            fix=f"choose K <= {n_images // smallest} (the paper has about 50 images per cluster)",
        )
