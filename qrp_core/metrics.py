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

from .config import AP_CLASSES_PER_BLOCK, EMI_TERMS_PER_BLOCK


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
    m = sp.coo_matrix(
        (np.ones(len(rows), np.int64), (rows, cols)), shape=(rows.max(initial=-1) + 1, cols.max(initial=-1) + 1)
    ).tocsr()
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


def expected_mutual_info(row_sums, col_sums, *, device: str | torch.device = "cpu") -> float:
    """Expected MI (nats) of two random labelings with these marginals (hypergeometric model).

    Vinh et al. (2010), as in scikit-learn, with three savings that leave the value unchanged to
    float64 rounding:

    - the sum runs over the *distinct* marginal values weighted by their multiplicity (K clusters
      have far fewer distinct sizes than K);
    - log-factorials come from one table of log(i!) for i <= n, gathered on ``device``;
    - each pair (a, b) sums the hypergeometric terms only within ``_EMI_WINDOW`` of the mean. The
      pmf is unimodal, so where both window ends lie beyond the mode at log-probability below
      ``_EMI_LOG_TAIL``, every term left out is smaller still: at most n * exp(-120) of mass. Pairs
      whose ends fail that test are summed over their whole range.
    """
    a_vals, a_mult = np.unique(np.asarray(row_sums, np.int64), return_counts=True)
    b_vals, b_mult = np.unique(np.asarray(col_sums, np.int64), return_counts=True)
    n = int(a_vals @ a_mult)
    if n == 0:
        return 0.0
    device = torch.device(device)
    log_factorial = torch.lgamma(torch.arange(1, n + 2, dtype=torch.float64, device=device))
    a = torch.as_tensor(a_vals, device=device).repeat_interleave(len(b_vals))
    b = torch.as_tensor(b_vals, device=device).repeat(len(a_vals))
    weight = torch.outer(torch.as_tensor(a_mult, dtype=torch.float64), torch.as_tensor(b_mult, dtype=torch.float64))
    weight = weight.ravel().to(device)
    lo = torch.clamp(a + b - n, min=1)
    hi = torch.minimum(a, b)
    mean = a.double() * b / n
    spread = (mean * (1 - a / n) * (n - b) / max(n - 1, 1)).sqrt()
    half_width = (_EMI_WINDOW[0] * spread + _EMI_WINDOW[1]).ceil().long()
    first = torch.maximum(lo, mean.floor().long() - half_width)
    last = torch.minimum(hi, mean.ceil().long() + half_width)
    total, log_p_first, log_p_last = _emi_terms(a, b, weight, first, last, n, log_factorial)
    mode = ((a + 1) * (b + 1)) // (n + 2)
    tail_ok = ((first == lo) | ((first <= mode) & (log_p_first < _EMI_LOG_TAIL))) & (
        (last == hi) | ((last >= mode) & (log_p_last < _EMI_LOG_TAIL))
    )
    redo = torch.nonzero(~tail_ok & (hi >= lo)).ravel()
    if len(redo):  # a window too narrow for these pairs: replace their sums by the whole range's
        window_sum = _emi_terms(a[redo], b[redo], weight[redo], first[redo], last[redo], n, log_factorial)[0]
        full_sum = _emi_terms(a[redo], b[redo], weight[redo], lo[redo], hi[redo], n, log_factorial)[0]
        total = total - window_sum + full_sum
    return float(total)


_EMI_WINDOW = (16.0, 40)  # half-width of the summed range: 16 standard deviations + 40 terms
_EMI_LOG_TAIL = -120.0  # a window end must have log P(n_ij) below this for the tail beyond it to be dropped


def _emi_terms(a, b, weight, first, last, n, log_factorial) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Sum over pairs of weight * sum over n_ij in [first, last] of P(n_ij) (n_ij / n) log(n n_ij / (a b)),
    and each pair's log P at ``first`` and at ``last`` (-inf for an empty range)."""
    lengths = torch.clamp(last - first + 1, min=0)
    pair_log_p = log_factorial[a] + log_factorial[b] + log_factorial[n - a] + log_factorial[n - b] - log_factorial[n]
    log_ratio = math.log(n) - a.double().log() - b.double().log()
    ends = torch.full((2, len(a)), -math.inf, dtype=torch.float64, device=a.device)
    total = torch.zeros((), dtype=torch.float64, device=a.device)
    cum = torch.cumsum(lengths, 0)
    n_terms = int(cum[-1]) if len(cum) else 0
    cuts = torch.arange(EMI_TERMS_PER_BLOCK, max(n_terms, EMI_TERMS_PER_BLOCK), EMI_TERMS_PER_BLOCK, device=a.device)
    bounds = torch.searchsorted(cum, cuts, right=True).tolist()
    for start, stop in zip([0, *bounds], [*bounds, len(a)]):
        counts = lengths[start:stop]
        pair = torch.repeat_interleave(torch.arange(start, stop, device=a.device), counts)
        if not len(pair):
            continue
        offset = torch.arange(len(pair), device=a.device) - torch.repeat_interleave(
            torch.cumsum(counts, 0) - counts, counts
        )
        nij = first[pair] + offset
        pa, pb = a[pair], b[pair]
        log_p = (
            pair_log_p[pair]
            - log_factorial[nij]
            - log_factorial[pa - nij]
            - log_factorial[pb - nij]
            - log_factorial[n - pa - pb + nij]
        )
        is_first, is_last = offset == 0, nij == last[pair]
        nij = nij.double()
        total += ((nij / n) * (nij.log() + log_ratio[pair]) * log_p.exp() * weight[pair]).sum()
        ends[0, pair[is_first]] = log_p[is_first]
        ends[1, pair[is_last]] = log_p[is_last]
    return total, ends[0], ends[1]


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


def adjusted_mutual_info(
    labels_true, labels_pred, *, contingency: sp.spmatrix | None = None, device: str | torch.device = "cpu"
) -> float:
    """AMI with arithmetic-mean normalisation; equals ``sklearn.metrics.adjusted_mutual_info_score``.
    ``device`` computes the expected MI (a GPU where the logits are)."""
    labels_true, labels_pred = _check_labelings(labels_true, labels_pred)
    c = contingency_matrix(labels_true, labels_pred) if contingency is None else contingency
    n_classes, n_clusters = c.shape
    if n_classes == n_clusters == 1 or n_classes == n_clusters == 0:
        return 1.0
    if n_classes == 1 or n_clusters == 1:
        return 0.0  # one side is constant: no information beyond chance
    if c.nnz == n_classes == n_clusters:
        return 1.0  # the same partition: exact, where all-singleton labelings would give 0/0 in rounding noise
    row_sums, col_sums = np.asarray(c.sum(axis=1)).ravel(), np.asarray(c.sum(axis=0)).ravel()
    mi = mutual_info(c)
    emi = expected_mutual_info(row_sums, col_sums, device=device)
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


def class_average_precision(
    labels_true: torch.Tensor,
    scores: torch.Tensor,
    sample_weight: torch.Tensor | None = None,
    *,
    chunk_classes: int = AP_CLASSES_PER_BLOCK,
) -> torch.Tensor:
    """Average precision of each class present in ``labels_true`` (sorted), on the scores' device,
    ``chunk_classes`` rankings at a time: (n_present,) float64, on the CPU."""
    present = torch.unique(labels_true)
    ap = [
        RankedScores(labels_true, scores, present[i : i + chunk_classes]).average_precision(sample_weight).cpu()
        for i in range(0, len(present), chunk_classes)
    ]
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


def probe_scores(labels_true, logits, cluster_sizes, *, chunk_classes: int = AP_CLASSES_PER_BLOCK) -> dict:
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
        "ami": adjusted_mutual_info(labels_true, predicted, contingency=c, device=logits.device),
        "top1": top1_accuracy(labels_true, predicted),
        "map": float(ap.mean()) if len(ap) else float("nan"),
        "mi_bits": mi_bits,
        "mi_norm": mi_norm,
        "ce_test_nats": ce,
        "h_clusters_bits": entropy_from_counts(cluster_sizes) / math.log(2),
        "n_test": int(len(labels_true)),
    }
