"""Stratified train / validation / test split by cluster id (appendix C: 80/20, then 20% of train for validation)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

TRAIN, VAL, TEST = 0, 1, 2


@dataclass(frozen=True)
class SplitConfig:
    test_fraction: float = 0.2  # of all images, appendix C
    val_fraction: float = 0.2  # of the training images, appendix C


def stratified_split(assignments: np.ndarray, config: SplitConfig = SplitConfig(), *, seed: int
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
    n_test = np.floor(sizes * config.test_fraction + 0.5).astype(np.int64)
    n_val = np.floor((sizes - n_test) * config.val_fraction + 0.5).astype(np.int64)
    rank = np.arange(len(order)) - np.repeat(starts, sizes)  # position within its cluster
    per_item_test = np.repeat(n_test, sizes)
    per_item_val = np.repeat(n_val, sizes)
    split = np.full(len(assignments), TRAIN, dtype=np.int8)
    split[order[rank < per_item_test]] = TEST
    split[order[(rank >= per_item_test) & (rank < per_item_test + per_item_val)]] = VAL
    stats = {
        "n_train": int((split == TRAIN).sum()), "n_val": int((split == VAL).sum()),
        "n_test": int((split == TEST).sum()),
        "n_clusters_present": int(len(clusters)),
        "clusters_without_test": clusters[n_test == 0].tolist(),
        "clusters_without_val": clusters[n_val == 0].tolist(),
    }
    return split, stats
