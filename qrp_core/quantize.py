"""Quantization (paper section 3, appendix C): standardise, then faiss K-means, best of R restarts."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np

from .errors import InputError
from .features import standardisation_stats, standardise


@dataclass(frozen=True)
class KMeansConfig:
    n_clusters: int = 1000  # K, paper section 4.2
    n_iter: int = 100  # Lloyd iterations, appendix C ("100 steps")
    n_restarts: int = 5  # keep the best of 5 runs by objective, appendix C
    max_points_per_centroid: int = 256  # training sample = K * this (faiss's default)
    early_stop_threshold: float = -1.0  # -1 runs every iteration; faiss 1.15's default 0.0 stops early
    device: str = "auto"  # "auto" uses faiss's GPU index when faiss sees a GPU


@dataclass
class Clustering:
    """assignments : (n_images,) int32; distances : (n_images,) float32, squared distance to the
    assigned centroid; centroids : (K, dim) float32, in standardised space."""

    assignments: np.ndarray
    distances: np.ndarray
    centroids: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    stats: dict


def resolve_faiss_device(device: str) -> str:
    n_gpus = faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0
    if device == "auto":
        return "cuda" if n_gpus > 0 else "cpu"
    if device == "cuda" and n_gpus == 0:
        raise InputError("device 'cuda' requested but faiss sees no GPU",
                         fix="use --device auto or cpu, or install the faiss-gpu wheel on a GPU machine")
    if device not in ("cpu", "cuda"):
        raise InputError(f"unknown device {device!r}", fix="use auto, cpu or cuda")
    return device


def check_n_clusters(n_clusters: int, n_images: int, *, source: str | Path) -> None:
    if n_clusters < 2:
        raise InputError(f"K={n_clusters} clusters is too few", where=source, fix="use K >= 2")
    if n_clusters > n_images:
        raise InputError(f"K={n_clusters} is larger than the number of images ({n_images})", where=source,
                         fix=f"choose K <= {n_images} (the paper uses about N/1000 or more images per cluster)")


def kmeans(x: np.ndarray, config: KMeansConfig, *, seed: int, source: str | Path = "features",
           progress=None, chunk_rows: int = 65536,
           standardisation: tuple[np.ndarray, np.ndarray, int] | None = None) -> Clustering:
    """Standardise ``x`` and cluster it with faiss K-means.

    Parameters
    ----------
    x : ndarray of shape (n_images, dim), floating
        Raw features; may be a memory map. Standardised chunk by chunk, never copied whole.
    config : KMeansConfig
    seed : int
        Seeds the training sample and every restart.
    progress : callable(str), optional
        Called with a short status line before each restart.
    standardisation : (mean, std, n_constant), optional
        ``features.standardisation_stats(x)`` when the caller already has it.

    Returns
    -------
    Clustering
        ``stats`` records every restart's objective and iterations actually run, the device,
        the training sample size and per-step wall times.
    """
    n, d = x.shape
    k = config.n_clusters
    check_n_clusters(k, n, source=source)
    device = resolve_faiss_device(config.device)
    t0 = time.perf_counter()
    if standardisation is None:
        standardisation = standardisation_stats(x, source=source, chunk_rows=chunk_rows)
    mean, std, n_constant = standardisation
    t_stats = time.perf_counter() - t0

    t = time.perf_counter()
    rng = np.random.default_rng(seed)
    n_train = min(n, k * config.max_points_per_centroid)
    if n_train == n:  # the whole collection trains: standardise once, reuse it for assignment
        sample = standardise(x, mean, std)
    else:
        sample = standardise(x[np.sort(rng.choice(n, size=n_train, replace=False))], mean, std)
    restart_seeds = [int(s) for s in rng.integers(0, 2**31 - 1, size=config.n_restarts)]
    t_standardise = time.perf_counter() - t

    restarts, best = [], None
    for r, restart_seed in enumerate(restart_seeds):
        if progress is not None:
            progress(f"K-means restart {r + 1}/{config.n_restarts}")
        km = faiss.Kmeans(d, k, niter=config.n_iter, nredo=1, seed=restart_seed, gpu=device == "cuda",
                          max_points_per_centroid=n_train, min_points_per_centroid=1,
                          early_stop_threshold=config.early_stop_threshold, verbose=False)
        t = time.perf_counter()
        objective = float(km.train(sample))
        restarts.append({"seed": restart_seed, "objective": objective, "iterations": len(km.obj),
                         "seconds": time.perf_counter() - t})
        if best is None or objective < best[0]:
            best = (objective, km.centroids.copy())
    best_restart = int(np.argmin([r["objective"] for r in restarts]))
    centroids = np.ascontiguousarray(best[1], dtype=np.float32)

    t = time.perf_counter()
    if n_train == n:
        assignments, distances = assign(sample, centroids, device=device, chunk_rows=chunk_rows)
    else:
        assignments, distances = assign(x, centroids, (mean, std), device=device, chunk_rows=chunk_rows)
    sizes = np.bincount(assignments, minlength=k)
    stats = {
        "device": device,
        "n_images": n, "dim": d, "n_train_points": int(n_train), "n_constant_dims": n_constant,
        "restarts": restarts, "best_restart": best_restart,
        "iterations_run": [r["iterations"] for r in restarts],
        "inertia_all_points": float(distances.sum(dtype=np.float64)),
        "n_empty_clusters": int((sizes == 0).sum()), "min_cluster_size": int(sizes.min()),
        "max_cluster_size": int(sizes.max()),
        "seconds": {"standardise_stats": t_stats, "standardise_sample": t_standardise, "kmeans": sum(r["seconds"] for r in restarts),
                    "assign": time.perf_counter() - t},
    }
    return Clustering(assignments, distances, centroids, mean, std, stats)


def assign(x: np.ndarray, centroids: np.ndarray, standardisation: tuple[np.ndarray, np.ndarray] | None = None,
           *, device: str = "cpu", chunk_rows: int = 65536) -> tuple[np.ndarray, np.ndarray]:
    """Nearest centroid of every row of ``x`` and the squared distance to it.

    ``standardisation`` = (mean, std) standardises each chunk on the fly; None means ``x`` already is.
    Returns (labels (n,) int32, distances (n,) float32).
    """
    index = faiss.IndexFlatL2(centroids.shape[1])
    if device == "cuda":
        index = faiss.index_cpu_to_all_gpus(index)
    index.add(centroids)
    labels = np.empty(len(x), dtype=np.int32)
    distances = np.empty(len(x), dtype=np.float32)
    for start in range(0, len(x), chunk_rows):
        chunk = x[start:start + chunk_rows]
        chunk = standardise(chunk, *standardisation) if standardisation else np.ascontiguousarray(chunk, np.float32)
        d, nearest = index.search(chunk, 1)
        labels[start:start + len(nearest)] = nearest[:, 0]
        distances[start:start + len(nearest)] = d[:, 0]
    return labels, distances
