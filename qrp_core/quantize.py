"""Quantization (paper section 3, appendix C): standardise, then K-means, best of R restarts.

K-means runs in faiss (CPU, or its GPU index when faiss sees a GPU), or in torch on a CUDA
device that faiss cannot use (``torch_kmeans``). Every backend starts each restart from the
same centroids, drawn here from the seed, so they differ only by float rounding. On a CPU, faiss's BLAS
runs a kernel that knows the CPU and its threads are capped at the cores other processes leave free
(``blas.py``); the clustering's stats record both.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .blas import faiss_blas, faiss_threads_on_free_cores, import_faiss
from .config import FEATURE_ROWS_PER_BLOCK, GPU_RESIDENT_FEATURES_FRACTION, KMeansConfig
from .errors import InputError
from .features import read_rows, standardisation_stats, standardise, standardised_rows

faiss = import_faiss()  # with a BLAS kernel that knows this CPU (blas.py)


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


def resolve_backend(device: str) -> tuple[str, str]:
    """(backend, device) that runs K-means: ("faiss", "cuda") when faiss sees a GPU, ("torch", "cuda")
    when only torch does (e.g. a CUDA 13 stack beside faiss's CUDA 12 wheel), else ("faiss", "cpu")."""
    if device not in ("auto", "cpu", "cuda"):
        raise InputError(f"unknown device {device!r}", fix="use auto, cpu or cuda")
    if device == "cpu":
        return "faiss", "cpu"
    if hasattr(faiss, "get_num_gpus") and faiss.get_num_gpus() > 0:
        return "faiss", "cuda"
    if torch.cuda.is_available():
        return "torch", "cuda"
    if device == "cuda":
        raise InputError(
            "device 'cuda' requested but neither faiss nor torch sees a GPU",
            fix="use --device auto or cpu, or run on a machine with a CUDA GPU",
        )
    return "faiss", "cpu"


def check_n_clusters(n_clusters: int, n_images: int, *, source: str | Path) -> None:
    if n_clusters < 2:
        raise InputError(f"K={n_clusters} clusters is too few", where=source, fix="use K >= 2")
    if n_clusters > n_images:
        raise InputError(
            f"K={n_clusters} is larger than the number of images ({n_images})",
            where=source,
            fix=f"choose K <= {n_images} (the paper uses about N/1000 or more images per cluster)",
        )


def kmeans(
    x: np.ndarray,
    config: KMeansConfig,
    *,
    seed: int,
    source: str | Path = "features",
    progress=None,
    chunk_rows: int = FEATURE_ROWS_PER_BLOCK,
    standardisation: tuple[np.ndarray, np.ndarray, int] | None = None,
    on_device=None,
) -> Clustering:
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
    on_device : torch.Tensor, optional
        ``standardised_on_device(x, mean, std, device)`` for the torch backend: the training sample
        and the assignment are then taken from it, and ``x`` is not read again.

    Returns
    -------
    Clustering
        ``assignments`` (n_images,) int, ``distances`` to the own centroid, ``centroids`` (K, dim) in the
        standardised space, ``mean`` and ``std``; ``stats`` records every restart's objective and iterations
        actually run, the device, the training sample size and per-step wall times.

    Examples
    --------
    >>> import numpy as np
    >>> from qrp_core.config import KMeansConfig
    >>> from qrp_core.quantize import kmeans
    >>> rng = np.random.default_rng(0)
    >>> x = np.concatenate([rng.normal(centre, 0.1, (50, 2)) for centre in (0.0, 5.0)]).astype("float32")
    >>> clustering = kmeans(x, KMeansConfig(n_clusters=2, n_iter=10, n_restarts=1), seed=0)
    >>> sorted(np.bincount(clustering.assignments).tolist()), clustering.centroids.shape
    ([50, 50], (2, 2))
    """
    n, d = x.shape
    k = config.n_clusters
    check_n_clusters(k, n, source=source)
    backend, device = resolve_backend(config.device)
    t0 = time.perf_counter()
    if standardisation is None:
        standardisation = standardisation_stats(x, source=source, chunk_rows=chunk_rows)
    mean, std, n_constant = standardisation
    t_stats = time.perf_counter() - t0

    t = time.perf_counter()
    rng = np.random.default_rng(seed)
    n_train = min(n, k * config.max_points_per_centroid)
    rows = None if n_train == n else np.sort(rng.choice(n, size=n_train, replace=False))
    if on_device is not None:
        if backend != "torch" or on_device.shape != x.shape:
            raise ValueError("on_device takes the standardised features, for the torch backend")
        sample = on_device if rows is None else on_device[torch.as_tensor(rows, device=on_device.device)]
    else:  # with every row in the sample, standardise once and reuse it for the assignment
        sample = standardised_rows(x, mean, std, rows, chunk_rows=chunk_rows)
    restart_seeds = [int(s) for s in rng.integers(0, 2**31 - 1, size=config.n_restarts)]
    t_standardise = time.perf_counter() - t

    train = _trainer(sample, backend, device)
    restarts, best = [], None
    for r, restart_seed in enumerate(restart_seeds):
        if progress is not None:
            progress(f"K-means restart {r + 1}/{config.n_restarts}")
        init = sample[np.sort(np.random.default_rng(restart_seed).choice(n_train, size=k, replace=False))]
        t = time.perf_counter()
        centroids, objectives, extra = train(init, config)
        restarts.append(
            {
                "seed": restart_seed,
                "objective": objectives[-1],
                "iterations": len(objectives),
                "seconds": time.perf_counter() - t,
                **extra,
            }
        )
        if best is None or objectives[-1] < best[0]:
            best = (objectives[-1], centroids)
    best_restart = int(np.argmin([r["objective"] for r in restarts]))
    centroids = np.ascontiguousarray(best[1], dtype=np.float32)
    if on_device is not None:
        del sample, train  # a gathered copy on the device: free it before the assignment

    t = time.perf_counter()
    if on_device is not None or n_train == n:
        assignments, distances = assign(
            on_device if on_device is not None else sample,
            centroids,
            device=device,
            backend=backend,
            chunk_rows=chunk_rows,
        )
    else:
        assignments, distances = assign(
            x, centroids, (mean, std), device=device, backend=backend, chunk_rows=chunk_rows
        )
    sizes = np.bincount(assignments, minlength=k)
    stats = {
        "device": device,
        "backend": backend,
        **_device_names(device),
        **(faiss_blas() if device == "cpu" else {}),  # the CPU runs faiss: its BLAS kernel
        "n_images": n,
        "dim": d,
        "n_train_points": int(n_train),
        "n_constant_dims": n_constant,
        "features_resident_on_device": on_device is not None,
        "restarts": restarts,
        "best_restart": best_restart,
        "iterations_run": [r["iterations"] for r in restarts],
        "inertia_all_points": float(distances.sum(dtype=np.float64)),
        "n_empty_clusters": int((sizes == 0).sum()),
        "min_cluster_size": int(sizes.min()),
        "max_cluster_size": int(sizes.max()),
        "seconds": {
            "standardise_stats": t_stats,
            "standardise_sample": t_standardise,
            "kmeans": sum(r["seconds"] for r in restarts),
            "assign": time.perf_counter() - t,
        },
    }
    return Clustering(assignments, distances, centroids, mean, std, stats)


def _trainer(sample: np.ndarray, backend: str, device: str):
    """A function (init_centroids, config) -> (centroids, objectives, extra stats) on the chosen
    backend; the torch backend moves the sample to the device once, for all restarts."""
    if backend == "torch":
        from .torch_kmeans import lloyd

        resident = torch.as_tensor(sample, device=device)

        def train_torch(init: np.ndarray, config: KMeansConfig):
            centroids, objectives, recomputed = lloyd(
                resident,
                torch.as_tensor(init, device=device),
                config.n_iter,
                early_stop_threshold=config.early_stop_threshold,
            )
            products = "tf32, float32 where ambiguous" if resident.is_cuda else "float32"
            return (
                centroids.cpu().numpy(),
                objectives,
                {"distance_products": products, "assignments_recomputed_in_float32": recomputed},
            )

        return train_torch

    def train_faiss(init: np.ndarray, config: KMeansConfig):
        km = faiss.Kmeans(
            sample.shape[1],
            len(init),
            niter=config.n_iter,
            nredo=1,
            gpu=device == "cuda",
            max_points_per_centroid=len(sample),
            min_points_per_centroid=1,
            early_stop_threshold=config.early_stop_threshold,
            verbose=False,
        )
        with faiss_threads_on_free_cores() if device == "cpu" else contextlib.nullcontext():
            km.train(sample, init_centroids=init)
            threads = faiss.omp_get_max_threads()
        return km.centroids.copy(), [float(v) for v in km.obj], {"cpu_threads": threads} if device == "cpu" else {}

    return train_faiss


def standardised_on_device(
    x: np.ndarray, mean: np.ndarray, std: np.ndarray, device, *, chunk_rows: int = FEATURE_ROWS_PER_BLOCK
):
    """``standardise(x)`` as one float32 torch tensor on ``device``, built chunk by chunk there (the
    same float32 operations, so the same values), for K-means runs that share it."""
    standardise_chunk = _standardiser_on(device, mean, std)
    out = torch.empty(x.shape, dtype=torch.float32, device=device)
    for start in range(0, len(x), chunk_rows):
        chunk = torch.as_tensor(read_rows(x, start, start + chunk_rows)).to(device, torch.float32)
        out[start : start + len(chunk)] = standardise_chunk(chunk)
    return out


def _standardiser_on(device, mean: np.ndarray, std: np.ndarray):
    """chunk -> (chunk - mean) * (1 / std) on ``device``: ``features.standardise``'s float32 operations."""
    shift = torch.as_tensor(mean.astype(np.float32), device=device)
    scale = torch.as_tensor((1.0 / std).astype(np.float32), device=device)
    return lambda chunk: (chunk - shift) * scale


def features_on_device(
    x: np.ndarray, standardisation: tuple[np.ndarray, np.ndarray, int], device: str = "auto", *, sample_rows: int
):
    """The standardised features as one tensor on the GPU that torch K-means runs on, for the
    clusterings of one model to share (a sample is then a gather on the device and the assignment
    reads no file); None where K-means runs elsewhere or they would not fit beside the training
    sample of ``sample_rows`` rows."""
    backend, device = resolve_backend(device)
    if backend != "torch" or not fits_on_device(x.shape, device, sample_rows=sample_rows):
        return None
    return standardised_on_device(x, standardisation[0], standardisation[1], device)


def fits_on_device(shape: tuple[int, int], device, *, sample_rows: int) -> bool:
    """Would ``resident_bytes`` take at most ``GPU_RESIDENT_FEATURES_FRACTION`` of the memory the GPU has available (free, and held by
    torch but unused)? The rest is for the distance blocks and the probes."""
    device = torch.device(device)
    if device.type != "cuda":
        return False
    free, _ = torch.cuda.mem_get_info(device)
    available = free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    return resident_bytes(shape, sample_rows) <= GPU_RESIDENT_FEATURES_FRACTION * available


def resident_bytes(shape: tuple[int, int], sample_rows: int) -> int:
    """GPU memory of K-means on resident features: the features (float32), the training sample gathered
    from them (none when every row trains) and Lloyd's copy of the sample sorted by cluster."""
    n, dim = shape
    sample_copies = 2 if sample_rows < n else 1
    return 4 * dim * (n + sample_copies * min(sample_rows, n))


def _device_names(device: str) -> dict:
    if device != "cuda":
        return {}
    return {"gpu_name": torch.cuda.get_device_name() if torch.cuda.is_available() else "faiss GPU"}


def assign(
    x: np.ndarray,
    centroids: np.ndarray,
    standardisation: tuple[np.ndarray, np.ndarray] | None = None,
    *,
    device: str = "cpu",
    backend: str = "faiss",
    chunk_rows: int = FEATURE_ROWS_PER_BLOCK,
) -> tuple[np.ndarray, np.ndarray]:
    """Nearest centroid of every row of ``x`` and the squared distance to it.

    ``standardisation`` = (mean, std) standardises each chunk on the fly; None means ``x`` already is
    (``x`` may then be a tensor on the torch backend's device).
    Returns (labels (n,) int32, distances (n,) float32).
    """
    if backend == "torch":
        from .torch_kmeans import nearest_centroids

        on_device = torch.as_tensor(centroids, device=device)
        standardise_chunk = _standardiser_on(device, *standardisation) if standardisation else None

        def search(chunk):  # standardised on the device: the same float32 operations as ``standardise``
            if not isinstance(chunk, torch.Tensor):
                chunk = torch.as_tensor(np.ascontiguousarray(chunk, np.float32), device=device)
            if standardise_chunk is not None:
                chunk = standardise_chunk(chunk)
            labels, d, _ = nearest_centroids(chunk, on_device)
            return labels.cpu().numpy(), d.cpu().numpy()
    else:
        index = faiss.IndexFlatL2(centroids.shape[1])
        if device == "cuda":
            index = faiss.index_cpu_to_all_gpus(index)
        index.add(centroids)

        def search(chunk):
            chunk = standardise(chunk, *standardisation) if standardisation else np.ascontiguousarray(chunk, np.float32)
            d, nearest = index.search(chunk, 1)
            return nearest[:, 0], d[:, 0]

    labels = np.empty(len(x), dtype=np.int32)
    distances = np.empty(len(x), dtype=np.float32)
    with faiss_threads_on_free_cores() if backend == "faiss" and device == "cpu" else contextlib.nullcontext():
        for start in range(0, len(x), chunk_rows):
            chunk = (
                x[start : start + chunk_rows]
                if isinstance(x, torch.Tensor)
                else read_rows(x, start, start + chunk_rows)
            )
            labels[start : start + len(chunk)], distances[start : start + len(chunk)] = search(chunk)
    return labels, distances
