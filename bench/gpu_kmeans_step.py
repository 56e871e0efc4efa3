"""Lloyd iterations on a GPU: float32 products against TF32 products with float32 where a row's two
nearest centroids are too close to tell apart (qrp_core/torch_kmeans.py), from the same centroids.

    python bench/gpu_kmeans_step.py                  # 256,000 x 2,048, K=1,000: one ImageNet-scale restart's shape
    python bench/gpu_kmeans_step.py --rows 20000 --dim 64 --k 100   # a CPU check (no TF32 there: equal by construction)

Two kinds of features: well-separated planted clusters (noise 0.8 around random centres, as
gpu_imagenet_scale.py writes) and heavily overlapping ones (noise 3), where many rows need the
float32 products. Prints, and writes gpu_kmeans_step.json to $OUT when set: seconds per iteration
of each, their ratio, the fraction of rows recomputed in float32, and how far the objectives and
assignments of the two runs are apart after the same iterations.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from qrp_core.torch_kmeans import lloyd, nearest_centroids  # noqa: E402


def features(rows: int, dim: int, k: int, noise: float, device: torch.device) -> torch.Tensor:
    generator = torch.Generator(device).manual_seed(0)
    centres = torch.randn(k, dim, generator=generator, device=device)
    x = centres[torch.randint(0, k, (rows,), generator=generator, device=device)]
    x += noise * torch.randn(rows, dim, generator=generator, device=device)
    return (x - x.mean(0)) / x.std(0)


def timed_lloyd(x: torch.Tensor, init: torch.Tensor, iterations: int, coarse_products) -> tuple[float, tuple]:
    lloyd(x, init, 1, coarse_products=coarse_products)  # warm-up: kernels, cuBLAS handles
    if x.is_cuda:
        torch.cuda.synchronize()
    start = time.perf_counter()
    result = lloyd(x, init, iterations, coarse_products=coarse_products)
    if x.is_cuda:
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / iterations, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=256_000)
    parser.add_argument("--dim", type=int, default=2048)
    parser.add_argument("--k", type=int, default=1000)
    parser.add_argument("--iterations", type=int, default=10)
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    figures = {
        "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
        "rows": args.rows,
        "dim": args.dim,
        "k": args.k,
        "iterations": args.iterations,
        "runs": [],
    }
    for noise in (0.8, 3.0):
        x = features(args.rows, args.dim, args.k, noise, device)
        init = x[torch.randperm(args.rows, generator=torch.Generator().manual_seed(1))[: args.k].to(device)]
        float32_s, (c32, obj32, _) = timed_lloyd(x, init, args.iterations, None)
        auto_s, (c_auto, obj_auto, recomputed) = timed_lloyd(x, init, args.iterations, "auto")
        labels32 = nearest_centroids(x, c32, coarse_products=None)[0]
        labels_auto = nearest_centroids(x, c_auto, coarse_products=None)[0]
        run = {
            "noise": noise,
            "float32_s_per_iteration": float32_s,
            "auto_s_per_iteration": auto_s,
            "speedup": float32_s / auto_s,
            "rows_recomputed_in_float32": recomputed,
            "objective_rel_diff_last": abs(obj_auto[-1] / obj32[-1] - 1),
            "same_final_assignment_fraction": float((labels32 == labels_auto).float().mean()),
        }
        figures["runs"].append(run)
        print(json.dumps(run), flush=True)
        del x
    if os.environ.get("OUT"):
        Path(os.environ["OUT"], "gpu_kmeans_step.json").write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
