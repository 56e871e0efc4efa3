"""Where a GPU probe epoch goes: the engine's eager steps against one CUDA graph per step.

    python bench/gpu_probe_step.py                  # 1M training rows, M=1,700, K=1,000, 1 and 11 probes
    python bench/gpu_probe_step.py --rows 20000     # a CPU check: the padded static step equals the eager one

On the H200 (bench/gpu_imagenet_scale.py), an epoch of batch-512 SGD over 1M rows took 2.3 s for one
probe and 2.7 s for 11 stacked ones: ~1.15 ms per step whatever the work, so the steps are bound by
launching ~25 small kernels each, not by the GPU. A CUDA graph launches a whole step at once; it
needs fixed shapes, so each batch's concepts are padded to the longest row (EmbeddingBag's
``padding_idx`` ignores the padding). This script times both on the same shuffled batches and
checks that they give the same weights. Writes gpu_probe_step.json to $OUT when set.
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
from qrp_core.probe import ReverseProbe, SparseRows, train_one_epoch  # noqa: E402


def padded_batches(rows: SparseRows, batch_size: int, pad: int) -> torch.Tensor:
    """(n_full_batches, batch_size, longest row) concept indices, ``pad`` where a row is shorter."""
    n_full = len(rows) // batch_size
    lengths = rows.indptr[1:] - rows.indptr[:-1]
    width = int(lengths.max())
    out = torch.full((n_full * batch_size, width), pad, dtype=torch.int64, device=rows.indices.device)
    row_of = torch.repeat_interleave(torch.arange(len(rows), device=lengths.device), lengths)
    position = torch.arange(len(rows.indices), device=lengths.device) - rows.indptr[:-1][row_of]
    keep = row_of < n_full * batch_size
    out[row_of[keep], position[keep]] = rows.indices[keep]
    return out.view(n_full, batch_size, width)


class PaddedProbe(torch.nn.Module):
    """The reverse probe on fixed-width bags: row ``n_concepts`` of the table is padding."""

    def __init__(self, n_concepts: int, n_clusters: int, n_probes: int):
        super().__init__()
        self.n_probes, self.n_clusters = n_probes, n_clusters
        self.weight = torch.nn.EmbeddingBag(n_concepts + 1, n_probes * n_clusters, mode="sum", padding_idx=n_concepts)
        self.bias = torch.nn.Parameter(torch.zeros(n_probes * n_clusters))
        torch.nn.init.zeros_(self.weight.weight)

    def forward(self, bags: torch.Tensor) -> torch.Tensor:
        return self.weight(bags) + self.bias

    losses = ReverseProbe.losses


def optimiser(model, fused):
    return torch.optim.SGD(model.parameters(), lr=3.5, momentum=0.9, weight_decay=3e-6, fused=fused)


def run(rows, targets, n_clusters, n_probes, batch_size, device, use_graph) -> dict:
    n_concepts = int(rows.indices.max()) + 1
    n_full = len(rows) // batch_size
    fused = device.type == "cuda" or None

    # eager: the engine's own epoch (trained on the same order: train_one_epoch reshuffles with a fresh generator)
    eager = ReverseProbe(n_concepts, n_clusters, n_probes).to(device)
    opt = optimiser(eager, fused)
    generator = torch.Generator().manual_seed(1)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sync()
    t = time.perf_counter()
    train_one_epoch(eager, opt, rows, targets, batch_size=batch_size, generator=generator)
    sync()
    eager_s = time.perf_counter() - t

    # padded static steps, one graph each on a GPU, on the engine's shuffled order of the same epoch
    order = torch.randperm(len(rows), generator=torch.Generator().manual_seed(1)).to(device)
    shuffled, shuffled_targets = rows.take(order), targets[order]
    bags = padded_batches(shuffled, batch_size, pad=n_concepts)
    batch_targets = shuffled_targets[:n_full * batch_size].view(n_full, batch_size)
    model = PaddedProbe(n_concepts, n_clusters, n_probes).to(device)
    opt = optimiser(model, fused)
    static_bags, static_targets = bags[0].clone(), batch_targets[0].clone()

    def step():
        opt.zero_grad(set_to_none=False)
        model.losses(model(static_bags), static_targets).sum().backward()
        opt.step()

    graph = None
    if use_graph:
        snapshot = [p.detach().clone() for p in model.parameters()]
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(3):  # warm-up, as CUDA graph capture requires; undone below
                step()
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            step()
        with torch.no_grad():
            for p, saved in zip(model.parameters(), snapshot):
                p.copy_(saved)
            for state in opt.state.values():
                state["momentum_buffer"].zero_()
    sync()
    t = time.perf_counter()
    for b in range(n_full):
        static_bags.copy_(bags[b])
        static_targets.copy_(batch_targets[b])
        graph.replay() if graph is not None else step()
    sync()
    static_s = time.perf_counter() - t
    # the eager epoch also ran the last, partial batch; compare after the full batches only
    reference = ReverseProbe(n_concepts, n_clusters, n_probes).to(device)
    opt = optimiser(reference, fused)
    for b in range(n_full):
        indices, offsets = shuffled.batch(b * batch_size, (b + 1) * batch_size)
        opt.zero_grad(set_to_none=True)
        reference.losses(reference(indices, offsets), batch_targets[b]).sum().backward()
        opt.step()
    diff = float((model.weight.weight[:-1] - reference.weight.weight).detach().abs().max())
    return {"n_probes": n_probes, "rows": len(rows), "steps": n_full, "bag_width": bags.shape[2],
            "eager_s_per_epoch": eager_s, "static_s_per_epoch": static_s, "cuda_graph": graph is not None,
            "speedup": eager_s / static_s, "max_weight_diff_vs_eager": diff}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--probes", type=int, nargs="+", default=[1, 11])
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    _, concepts = make_study(args.rows, 4, 1000, 1700, 20, seed=0)
    concepts.sort_indices()
    rows = SparseRows.from_scipy(concepts, device)
    targets = torch.as_tensor(np.random.default_rng(0).integers(0, 1000, args.rows), device=device)
    figures = [run(rows, targets, 1000, p, 512, device, device.type == "cuda") for p in args.probes]
    print(json.dumps(figures, indent=2))
    if os.environ.get("OUT"):
        Path(os.environ["OUT"], "gpu_probe_step.json").write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
