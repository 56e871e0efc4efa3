"""Plain references the engine's fast paths are checked against (tests, and bench/gpu_probe_step.py):
an autograd epoch of the probe with ``torch.optim``, and mAP over whole score columns."""

from __future__ import annotations

import numpy as np
import torch

from qrp_core.metrics import class_average_precision
from qrp_core.probe_model import ReverseProbe, SparseRows


def train_one_epoch(
    model: ReverseProbe,
    optimizer: torch.optim.Optimizer,
    rows: SparseRows,
    targets: torch.Tensor,
    *,
    batch_size: int,
    generator: torch.Generator,
    grad_mask: torch.Tensor | None = None,
) -> np.ndarray:
    """One pass over ``rows`` in a random order, by autograd and ``torch.optim``; returns each probe's
    mean training loss. The engine trains with ``probe_steps.FixedShapeEpochs``, which these plain
    steps check (tests/test_probe.py, bench/gpu_probe_step.py).

    ``grad_mask`` (n_concepts, n_probes, 1) keeps each probe's weights of the concepts it does not
    see at exactly zero (they start at zero and never get a gradient)."""
    order = torch.randperm(len(rows), generator=generator).to(targets.device)
    shuffled, shuffled_targets = rows.take(order), targets[order]
    total, n_batches = torch.zeros(model.n_probes, device=targets.device), 0
    for start in range(0, len(rows), batch_size):
        stop = min(start + batch_size, len(rows))
        logits = model(*shuffled.batch(start, stop))
        losses = model.losses(logits, shuffled_targets[start:stop])
        optimizer.zero_grad(set_to_none=True)
        losses.sum().backward()  # the probes share no parameter: each gets its own gradient
        if grad_mask is not None:
            grad = model.weight.weight.grad
            grad.view(grad.shape[0], model.n_probes, -1).mul_(grad_mask)
        optimizer.step()
        total += losses.detach()
        n_batches += 1
    return (total / max(n_batches, 1)).cpu().numpy()


def mean_average_precision(labels_true, scores: np.ndarray, *, sample_weight=None, chunk_classes: int = 64) -> float:
    """Mean over the classes present in ``labels_true`` of the average precision of their score column.

    Tied scores are one threshold, as in ``sklearn.metrics.average_precision_score``.

    Parameters
    ----------
    labels_true : ndarray of shape (n_samples,), int in [0, n_classes)
    scores : ndarray of shape (n_samples, n_classes)
        Higher means more likely (probabilities or logits of the probe).
    sample_weight : ndarray of shape (n_samples,), optional
        Non-negative weights (bootstrap counts); classes whose positives all weigh 0 are left out.
    """
    weight = None if sample_weight is None else torch.as_tensor(np.asarray(sample_weight))
    ap = class_average_precision(
        torch.as_tensor(np.asarray(labels_true)),
        torch.as_tensor(np.asarray(scores)),
        weight,
        chunk_classes=chunk_classes,
    )
    return float(torch.nanmean(ap)) if torch.isfinite(ap).any() else float("nan")
