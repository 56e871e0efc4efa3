"""Probe epochs on a GPU: the autograd steps against the engine's fixed-shape steps (compiled with
torch.compile on a GPU), replayed as one CUDA graph per epoch (qrp_core/probe_steps.py), on the same
shuffled batches; on a GPU also the same steps uncompiled, with and without the graph.

    python bench/gpu_probe_step.py                  # 1M training rows, M=1,700, K=1,000, 1 and 11 probes
    python bench/gpu_probe_step.py --rows 20000     # a CPU check: both give the same weights

On the H200 (bench/gpu_imagenet_scale.py), an autograd epoch of batch-512 SGD over 1M rows took 2.3 s
for one probe and 2.7 s for 11 stacked ones: ~1.15 ms per step whatever the work, bound by launching
small kernels and by EmbeddingBag's backward reading a count back to the host every step. Prints,
and writes gpu_probe_step.json to $OUT when set: seconds per epoch of each, the first graphed epoch
(which captures the graph), epochs/s, and the largest weight difference after the same epochs.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.pipeline import make_study  # noqa: E402
from qrp_core.probe_model import ReverseProbe, SparseRows  # noqa: E402
from qrp_core.probe_steps import FixedShapeEpochs  # noqa: E402
from tests.reference import train_one_epoch  # noqa: E402  (the plain autograd epoch)


def _timed(fn, device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def run(rows: SparseRows, targets: torch.Tensor, n_clusters: int, n_probes: int, epochs: int, device) -> dict:
    n_concepts = int(rows.indices.max()) + 1
    eager = ReverseProbe(n_concepts, n_clusters, n_probes).to(device)
    optimizer = torch.optim.SGD(
        eager.parameters(), lr=3.5, momentum=0.9, weight_decay=3e-6, fused=device.type == "cuda" or None
    )
    generator = torch.Generator().manual_seed(1)
    eager_s = [
        _timed(lambda: train_one_epoch(eager, optimizer, rows, targets, batch_size=512, generator=generator), device)
        for _ in range(epochs)
    ]

    graphed = ReverseProbe(n_concepts, n_clusters, n_probes).to(device)
    steps = FixedShapeEpochs(graphed, rows, targets, batch_size=512, momentum=0.9, weight_decay=3e-6)
    generator = torch.Generator().manual_seed(1)
    graphed_s = [_timed(lambda: steps.run(generator, 3.5), device) for _ in range(epochs)]
    diff = float((graphed.weight.weight - eager.weight.weight).detach().abs().max())
    scale = float(eager.weight.weight.detach().abs().max())
    later = graphed_s[1:] or graphed_s
    figures = {
        "n_probes": n_probes,
        "rows": len(rows),
        "steps_per_epoch": steps.n_steps,
        "epochs": epochs,
        "slot_capacity": steps.capacity,
        "mode": steps.mode,
        "graph_failure": steps.graph_failure,
        "compile_failure": steps.compile_failure,
        "autograd_s_per_epoch": float(np.median(eager_s)),
        "first_graphed_epoch_s": graphed_s[0],
        "graphed_s_per_epoch": float(np.median(later)),
        "graphed_epochs_per_s": 1.0 / float(np.median(later)),
        "speedup": float(np.median(eager_s) / np.median(later)),
        "max_weight_diff": diff,
        "max_weight": scale,
    }
    # on a GPU the engine's steps without compiling, and without a graph: what each saves; on a CPU compiled
    variants = (
        (
            ("uncompiled_graph", {"compile_steps": False}),
            ("uncompiled_without_graph", {"compile_steps": False, "use_graph": False}),
        )
        if device.type == "cuda"
        else (("compiled", {"compile_steps": True}),)
    )
    for name, options in variants:
        other = FixedShapeEpochs(
            ReverseProbe(n_concepts, n_clusters, n_probes).to(device),
            rows,
            targets,
            batch_size=512,
            momentum=0.9,
            weight_decay=3e-6,
            **options,
        )
        generator = torch.Generator().manual_seed(1)
        seconds = [
            _timed(lambda other=other, generator=generator: other.run(generator, 3.5), device) for _ in range(epochs)
        ]
        figures[f"{name}_s_per_epoch"] = float(np.median(seconds[1:] or seconds))
        figures[f"{name}_first_epoch_s"] = seconds[0]
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--probes", type=int, nargs="+", default=[1, 11])
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    _, concepts = make_study(args.rows, 4, 1000, 1700, 20, seed=0)
    concepts.sort_indices()
    rows = SparseRows.from_scipy(concepts, device)
    targets = torch.as_tensor(np.random.default_rng(0).integers(0, 1000, args.rows), device=device)
    figures = []
    for p in args.probes:
        figures.append(run(rows, targets, 1000, p, args.epochs, device))
        print(json.dumps(figures[-1]), flush=True)
        if os.environ.get("OUT"):
            Path(os.environ["OUT"], "gpu_probe_step.json").write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
