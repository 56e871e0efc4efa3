"""Scores of a reverse probe on the test split: NMI, AMI, top-1, mAP and the mutual-information estimate.

NMI and AMI use the arithmetic mean of the two entropies as normaliser (scikit-learn's
default), between the true cluster ids and the probe's predicted ids. All logarithms are
natural except where a name says ``bits``.
"""

from __future__ import annotations

import math

import numpy as np
import scipy.sparse as sp
import torch
from scipy.special import gammaln


def _check_labelings(labels_true, labels_pred) -> tuple[np.ndarray, np.ndarray]:
    labels_true, labels_pred = np.asarray(labels_true), np.asarray(labels_pred)
    if labels_true.ndim != 1 or labels_true.shape != labels_pred.shape:
        raise ValueError(f"labelings must be 1-D of equal length, got {labels_true.shape} and {labels_pred.shape}")
    return labels_true, labels_pred


def contingency_matrix(labels_true, labels_pred) -> sp.csr_matrix:
    """Sparse (n_classes_present, n_clusters_present) table of co-occurrence counts."""
    labels_true, labels_pred = _check_labelings(labels_true, labels_pred)
    _, rows = np.unique(labels_true, return_inverse=True)
    _, cols = np.unique(labels_pred, return_inverse=True)
    m = sp.coo_matrix((np.ones(len(rows), np.int64), (rows, cols)),
                      shape=(rows.max(initial=-1) + 1, cols.max(initial=-1) + 1)).tocsr()
    m.sum_duplicates()
    return m


def entropy_from_counts(counts) -> float:
    """Shannon entropy (nats) of the distribution given by non-negative counts."""
    counts = np.asarray(counts, dtype=np.float64)
    counts = counts[counts > 0]
    total = counts.sum()
    if total == 0:
        return 0.0
    p = counts / total
    return float(-(p * np.log(p)).sum())


def mutual_info(contingency: sp.spmatrix) -> float:
    """Mutual information (nats) of the joint distribution given by a contingency table."""
    c = sp.coo_matrix(contingency)
    n = float(c.sum())
    nij = c.data.astype(np.float64)
    a = np.asarray(contingency.sum(axis=1)).ravel().astype(np.float64)[c.row]
    b = np.asarray(contingency.sum(axis=0)).ravel().astype(np.float64)[c.col]
    keep = nij > 0
    nij, a, b = nij[keep], a[keep], b[keep]
    mi = (nij / n) * (np.log(nij) + math.log(n) - np.log(a) - np.log(b))
    return float(max(mi.sum(), 0.0))


def expected_mutual_info(row_sums, col_sums) -> float:
    """Expected MI (nats) of two random labelings with these marginals (hypergeometric model).

    Vinh et al. (2010), as in scikit-learn, but summed over the *distinct* marginal values
    weighted by their multiplicity: K clusters have far fewer distinct sizes than K, so this
    costs sum over distinct pairs of min(a, b) terms instead of K x K x min(a, b).
    """
    a_vals, a_mult = np.unique(np.asarray(row_sums, np.int64), return_counts=True)
    b_vals, b_mult = np.unique(np.asarray(col_sums, np.int64), return_counts=True)
    n = int(a_vals @ a_mult)
    aa, bb = np.meshgrid(a_vals, b_vals, indexing="ij")
    mult = np.outer(a_mult, b_mult).astype(np.float64).ravel()
    aa, bb = aa.ravel(), bb.ravel()
    lo = np.maximum(1, aa + bb - n)
    hi = np.minimum(aa, bb)
    lengths = np.maximum(hi - lo + 1, 0)
    per_pair = np.zeros(len(lengths))
    cum = np.cumsum(lengths)
    cuts = np.searchsorted(cum, np.arange(_EMI_CHUNK, cum[-1] if len(cum) else 0, _EMI_CHUNK), side="right")
    for start, stop in zip([0, *cuts], [*cuts, len(lengths)]):
        per_pair[start:stop] = _emi_pair_sums(aa[start:stop], bb[start:stop], lo[start:stop],
                                              lengths[start:stop], n)
    return float(per_pair @ mult)


_EMI_CHUNK = 8_000_000  # terms per block, bounds memory at a few hundred MB


def _emi_pair_sums(a_vals, b_vals, lo, lengths, n) -> np.ndarray:
    """For each (a, b) pair: sum over n_ij of P(n_ij) * (n_ij / n) * log(n * n_ij / (a * b))."""
    pair = np.repeat(np.arange(len(lengths)), lengths)
    first = np.repeat(np.cumsum(lengths) - lengths, lengths)
    nij = (np.arange(int(lengths.sum())) - first + lo[pair]).astype(np.float64)
    a, b = a_vals[pair].astype(np.float64), b_vals[pair].astype(np.float64)
    log_p = (gammaln(a + 1) + gammaln(b + 1) + gammaln(n - a + 1) + gammaln(n - b + 1) - gammaln(n + 1)
             - gammaln(nij + 1) - gammaln(a - nij + 1) - gammaln(b - nij + 1) - gammaln(n - a - b + nij + 1))
    term = (nij / n) * (np.log(nij) + math.log(n) - np.log(a) - np.log(b)) * np.exp(log_p)
    return np.bincount(pair, weights=term, minlength=len(lengths))


def normalized_mutual_info(labels_true, labels_pred, *, contingency: sp.spmatrix | None = None) -> float:
    """NMI with arithmetic-mean normalisation; equals ``sklearn.metrics.normalized_mutual_info_score``."""
    labels_true, labels_pred = _check_labelings(labels_true, labels_pred)
    c = contingency_matrix(labels_true, labels_pred) if contingency is None else contingency
    n_classes, n_clusters = c.shape
    if n_classes == n_clusters == 1 or n_classes == n_clusters == 0:
        return 1.0  # neither labeling splits the data: a perfect match
    mi = mutual_info(c)
    if mi == 0:
        return 0.0
    h_true = entropy_from_counts(np.asarray(c.sum(axis=1)).ravel())
    h_pred = entropy_from_counts(np.asarray(c.sum(axis=0)).ravel())
    return float(mi / ((h_true + h_pred) / 2))


def adjusted_mutual_info(labels_true, labels_pred, *, contingency: sp.spmatrix | None = None) -> float:
    """AMI with arithmetic-mean normalisation; equals ``sklearn.metrics.adjusted_mutual_info_score``."""
    labels_true, labels_pred = _check_labelings(labels_true, labels_pred)
    c = contingency_matrix(labels_true, labels_pred) if contingency is None else contingency
    n_classes, n_clusters = c.shape
    if n_classes == n_clusters == 1 or n_classes == n_clusters == 0:
        return 1.0
    if n_classes == 1 or n_clusters == 1:
        return 0.0  # one side is constant: no information beyond chance
    row_sums, col_sums = np.asarray(c.sum(axis=1)).ravel(), np.asarray(c.sum(axis=0)).ravel()
    mi = mutual_info(c)
    emi = expected_mutual_info(row_sums, col_sums)
    normaliser = (entropy_from_counts(row_sums) + entropy_from_counts(col_sums)) / 2
    eps = np.finfo(np.float64).eps
    denominator = normaliser - emi
    denominator = min(denominator, -eps) if denominator < 0 else max(denominator, eps)
    numerator = mi - emi
    numerator = min(numerator, -eps) if numerator < 0 else max(numerator, eps)
    return float(numerator / denominator)


def top1_accuracy(labels_true, labels_pred) -> float:
    labels_true, labels_pred = _check_labelings(labels_true, labels_pred)
    return float(np.mean(labels_true == labels_pred)) if len(labels_true) else float("nan")


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
    ap = class_average_precision(torch.as_tensor(np.asarray(labels_true)), torch.as_tensor(np.asarray(scores)),
                                 weight, chunk_classes=chunk_classes)
    return float(torch.nanmean(ap)) if torch.isfinite(ap).any() else float("nan")


def class_average_precision(labels_true: torch.Tensor, scores: torch.Tensor, sample_weight: torch.Tensor | None = None,
                            *, chunk_classes: int = 64) -> torch.Tensor:
    """Average precision of each class present in ``labels_true`` (sorted), on the scores' device,
    ``chunk_classes`` rankings at a time: (n_present,) float64, on the CPU."""
    present = torch.unique(labels_true)
    ap = [RankedScores(labels_true, scores, present[i:i + chunk_classes]).average_precision(sample_weight).cpu()
          for i in range(0, len(present), chunk_classes)]
    return torch.cat(ap) if ap else torch.empty(0, dtype=torch.float64)


class RankedScores:
    """Each class's score column sorted once, on the scores' device, so that average precision can be
    re-weighted cheaply (a bootstrap draws new weights, never a new sort). Tied scores are one
    threshold, as in scikit-learn. Memory: 17 bytes per (class, sample)."""

    @torch.no_grad()
    def __init__(self, labels_true: torch.Tensor, scores: torch.Tensor, classes: torch.Tensor):
        block = scores[:, classes].T.contiguous()  # one contiguous row per class: fast sorts
        sorted_scores, self.order = torch.sort(block, dim=1, descending=True, stable=True)
        self.hits = labels_true[self.order] == classes[:, None]
        n = block.shape[1]
        positions = torch.arange(n, device=block.device).expand_as(self.order)
        group_end = torch.ones_like(self.hits)
        group_end[:, :-1] = sorted_scores[:, :-1] != sorted_scores[:, 1:]
        # index of the last element of each element's tie group
        self.end = torch.where(group_end, positions, n).flip(1).cummin(1).values.flip(1)

    @torch.no_grad()
    def average_precision(self, sample_weight: torch.Tensor | None = None) -> torch.Tensor:
        """Average precision per class, float64 (NaN for a class without weighted positives)."""
        if sample_weight is None:  # every weight 1: the count of samples ranked so far is the position
            positive_weight = self.hits.to(torch.float64)
            cum_tp = positive_weight.cumsum(1)
            precision_at_end = cum_tp.gather(1, self.end) / (self.end + 1)
        else:
            weight = sample_weight.to(self.order.device, torch.float64)[self.order]
            positive_weight = self.hits * weight
            cum_tp = positive_weight.cumsum(1)
            tp_end, all_end = cum_tp.gather(1, self.end), weight.cumsum(1).gather(1, self.end)
            precision_at_end = torch.where(all_end > 0, tp_end / all_end, 0.0)
        total = cum_tp[:, -1]
        return torch.where(total > 0, (precision_at_end * positive_weight).sum(1) / total, float("nan"))


def log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def mutual_info_bits(cluster_sizes, test_cross_entropy: float) -> tuple[float, float]:
    """Eq. (1): I ~ H(f_K) - CE_test, in bits, and its normalised form I / H(f_K).

    Parameters
    ----------
    cluster_sizes : ndarray of shape (K,)
        Images per cluster over the whole collection (the frequencies of f_K).
    test_cross_entropy : float
        The probe's mean test cross-entropy in nats (an upper bound on H(f_K | y)).
    """
    h = entropy_from_counts(cluster_sizes)
    mi = (h - test_cross_entropy) / math.log(2)
    return mi, (mi * math.log(2) / h if h > 0 else float("nan"))


def probe_scores(labels_true, logits, cluster_sizes, *, chunk_classes: int = 128) -> dict:
    """Every metric of one probe on the test split, as a JSON-safe dict.

    ``logits`` (n_test, K) may be a NumPy array or a torch tensor; a tensor's device (a GPU)
    computes the softmax, cross-entropy and the per-class rankings of mAP.
    """
    logits = torch.as_tensor(logits)
    truth = torch.as_tensor(np.asarray(labels_true), device=logits.device).long()
    predicted = logits.argmax(1).cpu().numpy()
    labels_true = truth.cpu().numpy()
    c = contingency_matrix(labels_true, predicted)
    log_probs = torch.log_softmax(logits.double(), dim=1)
    ce = float(-log_probs.gather(1, truth[:, None]).mean()) if len(truth) else float("nan")
    mi_bits, mi_norm = mutual_info_bits(cluster_sizes, ce)
    # log-probabilities rank like probabilities, without exp's underflow to tied zeros
    ap = class_average_precision(truth, log_probs, chunk_classes=chunk_classes)
    return {
        "nmi": normalized_mutual_info(labels_true, predicted, contingency=c),
        "ami": adjusted_mutual_info(labels_true, predicted, contingency=c),
        "top1": top1_accuracy(labels_true, predicted),
        "map": float(ap.mean()) if len(ap) else float("nan"),
        "mi_bits": mi_bits, "mi_norm": mi_norm, "ce_test_nats": ce,
        "h_clusters_bits": entropy_from_counts(cluster_sizes) / math.log(2),
        "n_test": int(len(labels_true)),
    }
