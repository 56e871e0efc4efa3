"""The reverse probe (paper section 3, appendix C): a linear map from sparse binary concepts to cluster ids.

The concept matrix is never densified: a batch is a flat list of active concept indices
plus offsets, and ``nn.EmbeddingBag(mode="sum")`` sums the rows of the (n_concepts, K)
weight matrix for them, which equals ``concepts @ weight`` exactly.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn

from .split import TRAIN, VAL


@dataclass(frozen=True)
class ProbeConfig:
    lr: float = 3.5  # appendix C
    momentum: float = 0.9
    weight_decay: float = 3e-6  # L2 on weight and bias
    batch_size: int = 512
    max_epochs: int = 100
    lr_milestones: tuple[int, ...] = (60, 80)  # lr / 10 at these epochs
    lr_gamma: float = 0.1
    device: str = "auto"  # "auto" uses CUDA when torch sees it


@dataclass
class ProbeResult:
    """weight : (n_concepts, K) float32; bias : (K,) float32, from the epoch of lowest validation loss."""

    weight: np.ndarray
    bias: np.ndarray
    best_epoch: int
    history: list[dict] = field(default_factory=list)
    stats: dict = field(default_factory=dict)


def resolve_torch_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


class SparseRows:
    """A CSR matrix on a torch device, sliced into EmbeddingBag (indices, offsets) batches."""

    def __init__(self, indptr: torch.Tensor, indices: torch.Tensor):
        self.indptr, self.indices = indptr, indices

    @classmethod
    def from_scipy(cls, matrix: sp.csr_matrix, device: torch.device) -> "SparseRows":
        return cls(torch.as_tensor(matrix.indptr.astype(np.int64), device=device),
                   torch.as_tensor(matrix.indices.astype(np.int64), device=device))

    def __len__(self) -> int:
        return len(self.indptr) - 1

    def take(self, rows: torch.Tensor) -> "SparseRows":
        """The given rows, in that order (one gather, no Python loop)."""
        starts, ends = self.indptr[rows], self.indptr[rows + 1]
        lengths = ends - starts
        indptr = torch.zeros(len(rows) + 1, dtype=torch.int64, device=rows.device)
        torch.cumsum(lengths, 0, out=indptr[1:])
        flat = torch.repeat_interleave(starts - indptr[:-1], lengths) + torch.arange(
            int(indptr[-1]), device=rows.device)
        return SparseRows(indptr, self.indices[flat])

    def batch(self, start: int, stop: int) -> tuple[torch.Tensor, torch.Tensor]:
        lo, hi = self.indptr[start], self.indptr[stop]
        return self.indices[lo:hi], self.indptr[start:stop] - lo


class ReverseProbe(nn.Module):
    """logits = concepts @ weight + bias, with concepts given as EmbeddingBag (indices, offsets)."""

    def __init__(self, n_concepts: int, n_clusters: int):
        super().__init__()
        self.weight = nn.EmbeddingBag(n_concepts, n_clusters, mode="sum")
        self.bias = nn.Parameter(torch.zeros(n_clusters))
        nn.init.zeros_(self.weight.weight)  # convex problem: a fixed start makes runs reproducible

    def forward(self, indices: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
        return self.weight(indices, offsets) + self.bias


@torch.no_grad()
def _mean_loss(model: ReverseProbe, rows: SparseRows, targets: torch.Tensor, chunk: int = 8192) -> float:
    total = 0.0
    for start in range(0, len(rows), chunk):
        stop = min(start + chunk, len(rows))
        logits = model(*rows.batch(start, stop))
        total += float(nn.functional.cross_entropy(logits, targets[start:stop], reduction="sum"))
    return total / max(len(rows), 1)


def train_one_epoch(model: ReverseProbe, optimizer: torch.optim.Optimizer, rows: SparseRows,
                    targets: torch.Tensor, *, batch_size: int, generator: torch.Generator) -> dict:
    order = torch.randperm(len(rows), generator=generator).to(targets.device)
    shuffled, shuffled_targets = rows.take(order), targets[order]
    total, n_batches = torch.zeros((), device=targets.device), 0
    for start in range(0, len(rows), batch_size):
        stop = min(start + batch_size, len(rows))
        loss = nn.functional.cross_entropy(model(*shuffled.batch(start, stop)), shuffled_targets[start:stop])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total += loss.detach()
        n_batches += 1
    return {"train_loss": float(total) / max(n_batches, 1)}


def train_probe(concepts: sp.csr_matrix, targets: np.ndarray, split: np.ndarray, n_clusters: int,
                config: ProbeConfig = ProbeConfig(), *, seed: int, progress=None) -> ProbeResult:
    """Train the reverse probe on the train split, keeping the epoch of lowest validation loss.

    Parameters
    ----------
    concepts : csr_matrix of shape (n_images, n_concepts)
        Binary concepts (nonzero = present).
    targets : ndarray of shape (n_images,), int
        Cluster id per image.
    split : ndarray of shape (n_images,), int8
        ``TRAIN``/``VAL``/``TEST`` per image (see ``split.stratified_split``).
    progress : callable(epoch, stats), optional
        Called after each epoch.
    """
    device = resolve_torch_device(config.device)
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    concepts = sp.csr_matrix(concepts)
    concepts.sort_indices()
    targets_t = torch.as_tensor(np.asarray(targets, dtype=np.int64), device=device)
    all_rows = SparseRows.from_scipy(concepts, device)
    train_idx = torch.as_tensor(np.flatnonzero(split == TRAIN), device=device)
    val_idx = torch.as_tensor(np.flatnonzero(split == VAL), device=device)
    train_rows, train_targets = all_rows.take(train_idx), targets_t[train_idx]
    val_rows, val_targets = all_rows.take(val_idx), targets_t[val_idx]

    model = ReverseProbe(concepts.shape[1], n_clusters).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum,
                                weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=list(config.lr_milestones),
                                                     gamma=config.lr_gamma)
    history, best_loss, best_state, best_epoch = [], math.inf, None, -1
    t0 = time.perf_counter()
    for epoch in range(config.max_epochs):
        lr = optimizer.param_groups[0]["lr"]
        stats = train_one_epoch(model, optimizer, train_rows, train_targets,
                                batch_size=config.batch_size, generator=generator)
        scheduler.step()
        # with no validation images (tiny studies) the training loss picks the epoch
        stats["val_loss"] = _mean_loss(model, val_rows, val_targets) if len(val_rows) else stats["train_loss"]
        stats.update(epoch=epoch, lr=lr)
        history.append(stats)
        if stats["val_loss"] < best_loss:
            best_loss, best_epoch, best_state = stats["val_loss"], epoch, copy.deepcopy(model.state_dict())
        if progress is not None:
            progress(epoch, stats)
    model.load_state_dict(best_state)
    return ProbeResult(
        weight=model.weight.weight.detach().cpu().numpy().copy(),
        bias=model.bias.detach().cpu().numpy().copy(),
        best_epoch=best_epoch, history=history,
        stats={"device": str(device), "epochs_run": len(history), "best_val_loss": best_loss,
               "n_train": len(train_rows), "n_val": len(val_rows),
               "seconds": time.perf_counter() - t0, "torch_threads": torch.get_num_threads()},
    )


@torch.no_grad()
def probe_logits(weight: np.ndarray, bias: np.ndarray, concepts: sp.csr_matrix, *, device: str = "auto",
                 chunk: int = 8192) -> np.ndarray:
    """Logits of the probe for each row of ``concepts``: (n_rows, K) float32."""
    dev = resolve_torch_device(device)
    model = ReverseProbe(*weight.shape).to(dev)
    model.weight.weight.copy_(torch.as_tensor(weight))
    model.bias.copy_(torch.as_tensor(bias))
    concepts = sp.csr_matrix(concepts)
    rows = SparseRows.from_scipy(concepts, dev)
    out = np.empty((concepts.shape[0], weight.shape[1]), dtype=np.float32)
    for start in range(0, len(rows), chunk):
        stop = min(start + chunk, len(rows))
        out[start:stop] = model(*rows.batch(start, stop)).cpu().numpy()
    return out
