"""K-means on the CPU: each candidate backend against scikit-learn, same data and initial centroids.

    python -m bench.kmeans_cpu                 # N=100,000, D=512, K=1,000, 10 Lloyd iterations, idle and busy
    python -m bench.kmeans_cpu --n 20000 --k 200

Each candidate runs in a fresh process (a BLAS reads its settings when it loads), once on an idle machine
and once beside a process that keeps one core busy. Prints seconds, the ratio to scikit-learn's
``KMeans(init=<the same centroids>, n_init=1, max_iter=10)``, the final objective's relative difference
and the share of assignments that differ from bare faiss's (float rounding may move points that sit
on a boundary), and which BLAS kernel ran.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

CANDIDATES = {
    "faiss, bundled OpenBLAS as it loads": ("faiss", {"OPENBLAS_CORETYPE": ""}),
    "faiss, OPENBLAS_CORETYPE=SKYLAKEX": ("faiss", {"OPENBLAS_CORETYPE": "SKYLAKEX"}),
    "engine (qrp_core.quantize.kmeans)": ("engine", {}),
    "torch Lloyd (torch_kmeans, MKL)": ("torch", {}),
    "scikit-learn KMeans": ("sklearn", {}),
}


def cpu_name() -> str:
    try:
        return next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        import platform

        return platform.processor() or platform.machine()


def worker(kind: str, data: Path, n_iter: int) -> dict:
    """Run one candidate on the saved sample and initial centroids; returns seconds, objective, labels file."""
    x, init = np.load(data / "x.npy"), np.load(data / "init.npy")
    info = {}
    if kind == "faiss":
        import faiss

        def fit():
            km = faiss.Kmeans(
                x.shape[1], len(init), niter=n_iter, max_points_per_centroid=len(x), early_stop_threshold=-1.0
            )  # every iteration, as the engine runs them (faiss 1.15 stops once the objective stops falling)
            km.train(x, init_centroids=init)
            info["iterations"] = len(km.obj)
            return km.centroids
    elif kind == "engine":
        from qrp_core.config import KMeansConfig
        from qrp_core.quantize import _trainer, resolve_backend

        backend, device = resolve_backend("cpu")
        info["backend"] = backend

        def fit():
            centroids, objectives, extra = _trainer(x, backend, device)(
                init, KMeansConfig(n_clusters=len(init), n_iter=n_iter)
            )
            info.update(extra, iterations=len(objectives))
            return centroids
    elif kind == "torch":
        import torch

        from qrp_core.torch_kmeans import lloyd

        def fit():
            centroids, objectives, _ = lloyd(torch.from_numpy(x), torch.from_numpy(init), n_iter)
            info["iterations"] = len(objectives)
            return centroids.numpy()
    else:
        from sklearn.cluster import KMeans

        def fit():
            km = KMeans(len(init), init=init, n_init=1, max_iter=n_iter, tol=0.0, algorithm="lloyd").fit(x)
            info["iterations"] = int(km.n_iter_)  # fewer where no label changes (strict convergence)
            return km.cluster_centers_.astype(np.float32)

    started = time.perf_counter()  # libraries loaded: only the clustering is timed
    centroids = fit()
    seconds = time.perf_counter() - started
    distances = ((x**2).sum(1)[:, None] - 2 * x @ centroids.T + (centroids**2).sum(1)[None]).astype(np.float64)
    labels = distances.argmin(1)
    np.save(data / f"labels-{kind}-{os.getpid()}.npy", labels)
    return {
        "seconds": seconds,
        "objective": float(np.maximum(distances.min(1), 0).sum()),
        "labels": str(data / f"labels-{kind}-{os.getpid()}.npy"),
        "blas": blas_kernels(),
        **{k: v for k, v in info.items() if isinstance(v, str | int | float)},
    }


def blas_kernels() -> str:
    from threadpoolctl import threadpool_info

    return "; ".join(
        f"{Path(p['filepath']).name.split('-')[0]} {p.get('version')} {p.get('architecture', '')}"
        for p in threadpool_info()
        if p["user_api"] == "blas"
    )


def run(kind: str, env: dict, data: Path, n_iter: int, busy: bool) -> dict:
    environment = {**os.environ, **env}
    if env.get("OPENBLAS_CORETYPE") == "":
        environment.pop("OPENBLAS_CORETYPE", None)
        environment["QRP_OPENBLAS_CORETYPE"] = "off"
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if busy else None
    try:
        out = subprocess.run(
            [sys.executable, "-m", "bench.kmeans_cpu", "--worker", kind, "--data", str(data), "--iters", str(n_iter)],
            env=environment,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    finally:
        if hog is not None:
            hog.kill()
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--k", type=int, default=1000)
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.data, args.iters)))
        return
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(args.k, args.dim)).astype(np.float32)
    # blobs wider than their spacing: Lloyd's iterations keep moving points, none stops early
    x = centres[rng.integers(0, args.k, args.n)] + rng.normal(scale=2.0, size=(args.n, args.dim)).astype(np.float32)
    init = x[np.sort(rng.choice(args.n, size=args.k, replace=False))]
    print(
        f"{cpu_name()}, {len(os.sched_getaffinity(0))} cores; N={args.n:,}, D={args.dim}, K={args.k}, {args.iters} iterations"
    )
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp)
        np.save(data / "x.npy", x)
        np.save(data / "init.npy", init)
        for busy in (False, True):
            print(f"\n{'beside one busy process' if busy else 'idle'}")
            results = {name: run(kind, env, data, args.iters, busy) for name, (kind, env) in CANDIDATES.items()}
            reference = results["faiss, bundled OpenBLAS as it loads"]
            sklearn = results["scikit-learn KMeans"]["seconds"]
            ref_labels = np.load(reference["labels"])
            for name, r in results.items():
                moved = float((np.load(r["labels"]) != ref_labels).mean())
                gap = abs(r["objective"] - reference["objective"]) / reference["objective"]
                extra = f" [{r['backend']}, {r['cpu_threads']} threads]" if "backend" in r else ""
                print(
                    f"  {name + extra:56s} {r['seconds']:7.2f} s  {r['iterations']:3d} it  {r['seconds'] / sklearn:5.2f}x scikit-learn  "
                    f"objective {gap:.1e}  moved {moved:.1e}  BLAS: {r['blas']}"
                )


if __name__ == "__main__":
    main()
