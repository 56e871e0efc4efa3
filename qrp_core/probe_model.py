"""The reverse probe's model and its inputs: a sparse concept matrix on a torch device (``SparseRows``)
and the linear map from concepts to cluster logits (``ReverseProbe``), shared by the training loop
(``probe``) and its fixed-shape steps (``probe_steps``)."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn


class SparseRows:
    """A CSR matrix on a torch device, sliced into EmbeddingBag (indices, offsets) batches.

    The row pointers are also kept on the host, so cutting a batch never waits for the device.
    """

    def __init__(self, indptr: torch.Tensor, indices: torch.Tensor, host_indptr: np.ndarray | None = None):
        self.indptr, self.indices = indptr, indices
        self.host_indptr = indptr.cpu().numpy() if host_indptr is None else host_indptr

    @classmethod
    def from_scipy(cls, matrix: sp.csr_matrix, device: torch.device) -> SparseRows:
        indptr = matrix.indptr.astype(np.int64)
        return cls(
            torch.as_tensor(indptr, device=device),
            torch.as_tensor(matrix.indices.astype(np.int64), device=device),
            indptr,
        )

    def __len__(self) -> int:
        return len(self.indptr) - 1

    def take(self, rows: torch.Tensor) -> SparseRows:
        """The given rows, in that order (one gather, no Python loop)."""
        starts, ends = self.indptr[rows], self.indptr[rows + 1]
        lengths = ends - starts
        indptr = torch.zeros(len(rows) + 1, dtype=torch.int64, device=rows.device)
        torch.cumsum(lengths, 0, out=indptr[1:])
        host_indptr = indptr.cpu().numpy()
        n_values = int(host_indptr[-1])
        flat = torch.repeat_interleave(starts - indptr[:-1], lengths, output_size=n_values) + torch.arange(
            n_values, device=rows.device
        )
        return SparseRows(indptr, self.indices[flat], host_indptr)

    def batch(self, start: int, stop: int) -> tuple[torch.Tensor, torch.Tensor]:
        lo, hi = int(self.host_indptr[start]), int(self.host_indptr[stop])
        return self.indices[lo:hi], self.indptr[start:stop] - lo


class ReverseProbe(nn.Module):
    """logits = concepts @ weight + bias, with concepts given as EmbeddingBag (indices, offsets).

    ``n_probes`` probes that share their inputs sit side by side in one (n_concepts, n_probes * K)
    table: forward returns (batch, n_probes * K), probe p's logits in columns p*K .. (p+1)*K.
    """

    def __init__(self, n_concepts: int, n_clusters: int, n_probes: int = 1):
        super().__init__()
        self.n_probes, self.n_clusters = n_probes, n_clusters
        self.weight = nn.EmbeddingBag(n_concepts, n_probes * n_clusters, mode="sum")
        self.bias = nn.Parameter(torch.zeros(n_probes * n_clusters))
        nn.init.zeros_(self.weight.weight)  # convex problem: a fixed start makes runs reproducible

    def forward(self, indices: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
        return self.weight(indices, offsets) + self.bias

    def losses(self, logits: torch.Tensor, targets: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
        """Cross-entropy of every probe: (n_probes,)."""
        flat = logits.reshape(len(logits) * self.n_probes, self.n_clusters)  # row b*P + p: probe p, image b
        loss = nn.functional.cross_entropy(flat, targets.repeat_interleave(self.n_probes), reduction="none")
        loss = loss.view(len(logits), self.n_probes)
        return loss.mean(0) if reduction == "mean" else loss.sum(0)
