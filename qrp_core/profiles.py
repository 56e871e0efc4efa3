"""Concept counts per cluster: a clustering's profile over the study's concepts, which the explanations
read (over-represented concepts, the word cloud's frequencies). The run writes one per clustering;
reading never writes, so the app only reads the cache."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from .cache import Cache, save_npy, stable_hash
from .study import Study


def profile_key(study: Study, clustering_key: str) -> str:
    return stable_hash({"clustering": clustering_key, "concepts": study.concepts.content_hash()})


def concept_counts(concepts: sp.csr_matrix, assignments: np.ndarray, n_clusters: int) -> sp.csr_matrix:
    """(K, n_concepts) int64: how many images of each cluster have each concept."""
    onehot = sp.csr_matrix(
        (np.ones(len(assignments), np.int64), (assignments, np.arange(len(assignments)))),
        shape=(n_clusters, len(assignments)),
    )
    return (onehot @ concepts.astype(np.int64)).tocsr()


def save_cluster_profile(study: Study, cache: Cache, clustering_key: str) -> str:
    """Write the clustering's profile over the study's concepts unless the cache has it; returns its key."""
    key = profile_key(study, clustering_key)
    if not cache.has("profiles", key):
        assignments = cache.load_array("clusterings", clustering_key, "assignments.npy")
        k = int(cache.manifest("clusterings", clustering_key)["params"]["n_clusters"])
        counts = concept_counts(study.concepts.matrix, assignments, k)
        cache.write(
            "profiles",
            key,
            {
                "counts.npz": lambda p: sp.save_npz(p, counts),
                "cluster_sizes.npy": save_npy(np.bincount(assignments, minlength=k)),
            },
            {"inputs": {"clustering": clustering_key, "concepts_sha256": study.concepts.content_hash()}},
        )
    return key


def cluster_concept_counts(study: Study, cache: Cache, clustering_key: str) -> sp.csr_matrix:
    """(K, n_concepts) counts of each concept in each cluster: the stored profile, or (for a cache from
    before runs wrote profiles) the same counts computed and not stored."""
    key = profile_key(study, clustering_key)
    if cache.has("profiles", key):
        return sp.load_npz(cache.path("profiles", key) / "counts.npz").tocsr()
    assignments = cache.load_array("clusterings", clustering_key, "assignments.npy")
    k = int(cache.manifest("clusterings", clustering_key)["params"]["n_clusters"])
    return concept_counts(study.concepts.matrix, assignments, k)
