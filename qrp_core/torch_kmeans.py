"""Lloyd's K-means and nearest-centroid search in torch, for GPUs that faiss cannot use.

Meta's faiss-gpu wheel is built for CUDA 12; beside a CUDA 13-only stack (or without the wheel)
faiss sees no GPU and would run on the CPU. This module runs the same iteration as
``faiss.Kmeans`` on any torch device: exact squared L2 distances through one matrix product
per chunk (||x||^2 + ||c||^2 - 2 x.c, clamped at 0, as faiss's flat index), centroids as the
mean of their points, empty clusters re-seeded by splitting a large cluster in two with faiss's
rule and random draws. Started from the same centroids, it follows faiss's trajectory up to
float rounding (tests/test_quantize.py).
"""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np
import torch

from .config import FEATURE_ROWS_PER_BLOCK

SPLIT_EPS = 1.0 / 1024  # faiss's relative perturbation when it splits a cluster


def tf32_relative_error(dim: int) -> float:
    """A bound on |tf32(x.c) - x.c| / (|x| |c|) in ``dim`` dimensions: TF32 keeps 10 of float32's 23
    mantissa bits (at most 2^-10 per input even if truncated, so 2^-9 per product) and accumulates
    in float32 (at most dim * 2^-24); doubled for margin."""
    return 2 * (2.0**-9 + dim * 2.0**-24)


@contextmanager
def _cuda_matmul_precision(precision: str):
    """float32 products on a GPU in "tf32" or "ieee" (true float32, whatever the global setting)."""
    matmul = torch.backends.cuda.matmul
    previous = matmul.fp32_precision
    matmul.fp32_precision = precision
    try:
        yield
    finally:
        matmul.fp32_precision = previous


def _tf32_matmul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    with _cuda_matmul_precision("tf32"):
        return a @ b.T


def _float32_scores(chunk: torch.Tensor, centroids: torch.Tensor, c_norms: torch.Tensor) -> torch.Tensor:
    """||c||^2 - 2 x.c for every row and centroid, in float32."""
    with _cuda_matmul_precision("ieee"):
        return torch.addmm(c_norms, chunk, centroids.T, alpha=-2.0)


@torch.no_grad()
def nearest_centroids(
    x: torch.Tensor, centroids: torch.Tensor, *, chunk_rows: int = FEATURE_ROWS_PER_BLOCK, coarse_products="auto"
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Index of the nearest centroid of every row of ``x``, the squared distance to it, and how many
    rows needed the float32 products.

    On a GPU the products x.c first run on TF32 tensor cores (several times float32's speed). A row
    takes its nearest centroid from them only where the runner-up is farther by more than twice the
    TF32 error bound, so that no rounding can swap the two; every other row is recomputed in float32.
    The result is float32's search up to float32 rounding. ``coarse_products``: "auto" (TF32 on a
    GPU, none on a CPU), None (float32 only), or (function (a, b) -> a @ b.T, its relative error
    bound), which tests use to emulate low precision on the CPU.
    """
    if coarse_products == "auto":
        coarse_products = (_tf32_matmul, tf32_relative_error(x.shape[1])) if x.is_cuda else None
    c_norms = (centroids * centroids).sum(1)
    labels = torch.empty(len(x), dtype=torch.int64, device=x.device)
    distances = torch.empty(len(x), dtype=torch.float32, device=x.device)
    recomputed = torch.zeros((), dtype=torch.int64, device=x.device)
    if coarse_products is not None:
        products, relative_error = coarse_products
        c_lengths = c_norms.sqrt()
        longest = c_lengths.max()
    for start in range(0, len(x), chunk_rows):
        chunk = x[start : start + chunk_rows]
        x_norms = (chunk * chunk).sum(1)
        if coarse_products is None:
            best, idx = _float32_scores(chunk, centroids, c_norms).min(1)
        else:
            two_best, two_idx = (c_norms - 2 * products(chunk, centroids)).topk(2, dim=1, largest=False)
            idx = two_idx[:, 0]
            best = c_norms[idx] - 2 * torch.linalg.vecdot(chunk, centroids[idx])
            # each distance errs by at most 2 e |x| |c|, the two compared ones possibly in opposite directions
            margin = 2 * relative_error * x_norms.sqrt() * (c_lengths[idx] + longest)
            unsure = torch.nonzero(two_best[:, 1] - two_best[:, 0] <= margin).ravel()
            exact_best, exact_idx = _float32_scores(chunk[unsure], centroids, c_norms).min(1)
            best[unsure], idx[unsure] = exact_best, exact_idx
            recomputed += len(unsure)
        labels[start : start + len(chunk)] = idx
        distances[start : start + len(chunk)] = (best + x_norms).clamp_(min=0)
    return labels, distances, int(recomputed) if coarse_products is not None else 0


@torch.no_grad()
def lloyd(
    x: torch.Tensor,
    init_centroids: torch.Tensor,
    n_iter: int,
    *,
    early_stop_threshold: float = -1.0,
    coarse_products="auto",
) -> tuple[torch.Tensor, list[float], float]:
    """Run Lloyd iterations from ``init_centroids``.

    Returns the final centroids, the objective (sum of squared distances of the assignment step)
    of every iteration run, as ``faiss.Kmeans.obj``, and the fraction of assignments that
    needed float32 products (``nearest_centroids``, which takes ``coarse_products``). With ``early_stop_threshold >= 0`` it stops
    when the objective's relative change falls to that value, like faiss.
    """
    n, k = len(x), len(init_centroids)
    centroids = init_centroids.clone()
    objectives: list[float] = []
    recomputed = 0
    for _ in range(n_iter):
        labels, distances, unsure = nearest_centroids(x, centroids, coarse_products=coarse_products)
        recomputed += unsure
        objectives.append(float(distances.sum(dtype=torch.float64)))
        if (
            early_stop_threshold >= 0
            and len(objectives) > 1
            and abs(objectives[-2] - objectives[-1]) <= early_stop_threshold * abs(objectives[-2])
        ):
            break
        counts = torch.bincount(labels, minlength=k)
        # each cluster's points summed in index order (as faiss does): deterministic on a GPU,
        # where index_add_'s atomic float adds are not
        sums = torch.segment_reduce(x[torch.argsort(labels, stable=True)], "sum", lengths=counts)
        centroids = sums / counts.clamp(min=1).unsqueeze(1).to(sums.dtype)
        if (counts == 0).any():
            _split_large_clusters(centroids, counts.cpu().numpy(), n)
    return centroids, objectives, recomputed / (n * len(objectives))


def _split_large_clusters(centroids: torch.Tensor, counts: np.ndarray, n: int) -> None:
    """faiss's ``split_clusters``: each empty cluster, in order, takes a copy of a cluster picked by
    walking the clusters cyclically and accepting cluster j when a uniform draw falls below
    (size_j - 1) / (n - K); the two centroids then move apart by +-1/1024 in alternating
    dimensions. Draws come from a Mersenne Twister seeded with 1234 at every call, in float32,
    exactly as faiss draws them, so both pick the same clusters."""
    k = len(counts)
    sizes = counts.astype(np.float32)
    twister = np.random.RandomState(1234)  # MT19937 seeded like std::mt19937(1234)
    draws, used = np.empty(0, np.float32), 0
    sign = torch.ones(centroids.shape[1], dtype=centroids.dtype, device=centroids.device)
    sign[1::2] = -1
    for empty in np.flatnonzero(sizes == 0):
        accept = ((sizes.astype(np.float64) - 1.0) / np.float64(np.float32(n - k))).astype(np.float32)
        while True:  # each pass of the walk visits clusters 0..K-1 with one draw each
            if used + k > len(draws):
                raw = twister.randint(0, 2**32, size=4 * k, dtype=np.uint32)
                # rand_float = mt() / float(mt.max()), in float32 (mt.max() rounds to 2^32)
                draws, used = np.concatenate([draws[used:], raw.astype(np.float32) / np.float32(2**32)]), 0
            hits = np.flatnonzero(draws[used : used + k] < accept)
            if len(hits):
                donor = int(hits[0])
                used += donor + 1
                break
            used += k
        centroids[empty] = centroids[donor] * (1 + SPLIT_EPS * sign)
        centroids[donor] = centroids[donor] * (1 - SPLIT_EPS * sign)
        sizes[empty] = sizes[donor] / 2
        sizes[donor] -= sizes[empty]
