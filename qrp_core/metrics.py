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
    for name, labels in (("labels_true", labels_true), ("labels_pred", labels_pred)):
        # NaN compares unequal to itself, so NaN labels would merge or split arbitrarily
        if np.issubdtype(labels.dtype, np.inexact) and not np.isfinite(labels).all():
            raise ValueError(f"{name} holds NaN or infinite labels; give every sample a finite label or drop it")
    return labels_true, labels_pred


def _contingency(labels_true, labels_pred, contingency) -> sp.csr_matrix:
    """The given contingency table (sparse or dense) as CSR, or the labelings' own."""
    if contingency is None:
        return contingency_matrix(labels_true, labels_pred)
    return sp.csr_matrix(np.asarray(contingency) if not sp.issparse(contingency) else contingency)


def contingency_matrix(labels_true, labels_pred) -> sp.csr_matrix:
    """Sparse table of co-occurrence counts of two labelings.

    Parameters
    ----------
    labels_true, labels_pred : array-like of shape (n_samples,)
        Any hashable labels; only the labels present get a row or column (in sorted order).

    Returns
    -------
    contingency : sparse matrix of shape (n_classes_present, n_clusters_present), int64

    Examples
    --------
    >>> from qrp_core.metrics import contingency_matrix
    >>> contingency_matrix([0, 0, 1, 1], [0, 0, 1, 2]).toarray()
    array([[2, 0, 0],
           [0, 1, 1]])
    """
    labels_true, labels_pred = _check_labelings(labels_true, labels_pred)
    _, rows = np.unique(labels_true, return_inverse=True)
    _, cols = np.unique(labels_pred, return_inverse=True)
    m = sp.coo_matrix(
        (np.ones(len(rows), np.int64), (rows, cols)), shape=(rows.max(initial=-1) + 1, cols.max(initial=-1) + 1)
    ).tocsr()
    m.sum_duplicates()
    return m


def entropy_from_counts(counts) -> float:
    """Shannon entropy (nats) of the distribution given by non-negative counts.

    Parameters
    ----------
    counts : array-like of shape (n_values,)
        Non-negative counts (zeros are left out); all zero gives 0.

    Returns
    -------
    entropy : float

    Examples
    --------
    >>> from qrp_core.metrics import entropy_from_counts
    >>> round(entropy_from_counts([2, 2, 0]), 4)  # log 2
    0.6931
    """
    counts = np.asarray(counts, dtype=np.float64)
    counts = counts[counts > 0]
    total = counts.sum()
    if total == 0:
        return 0.0
    p = counts / total
    return float(-(p * np.log(p)).sum())


def mutual_info(contingency: sp.spmatrix) -> float:
    """Mutual information (nats) of the joint distribution given by a contingency table.

    Parameters
    ----------
    contingency : sparse matrix of shape (n_classes, n_clusters)
        Co-occurrence counts, as ``contingency_matrix`` returns.

    Returns
    -------
    mi : float
        Equals ``sklearn.metrics.mutual_info_score``; never negative.

    Examples
    --------
    >>> from qrp_core.metrics import contingency_matrix, mutual_info
    >>> round(mutual_info(contingency_matrix([0, 0, 1, 1], [0, 0, 1, 2])), 4)  # all of H(true) = log 2
    0.6931
    """
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

    Parameters
    ----------
    row_sums, col_sums : array-like of int, shape (n_classes,) and (n_clusters,)
        The two labelings' class sizes; both sum to the number of samples.
    device : str or torch.device, default "cpu"

    Returns
    -------
    emi : float

    Examples
    --------
    >>> from qrp_core.metrics import expected_mutual_info
    >>> round(expected_mutual_info([2, 2], [2, 1, 1]), 4)
    0.4621
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
    """NMI with arithmetic-mean normalisation; equals ``sklearn.metrics.normalized_mutual_info_score``.

    Parameters
    ----------
    labels_true, labels_pred : array-like of shape (n_samples,)
        The true cluster ids and the probe's predicted ids.
    contingency : sparse matrix or ndarray, optional
        Their ``contingency_matrix``, where the caller has it already (a dense table is accepted).

    Returns
    -------
    nmi : float
        In [0, 1]; 1 where neither labeling splits the samples.

    Examples
    --------
    >>> from qrp_core.metrics import normalized_mutual_info
    >>> round(normalized_mutual_info([0, 0, 1, 1], [0, 0, 1, 2]), 4)
    0.8
    """
    labels_true, labels_pred = _check_labelings(labels_true, labels_pred)
    c = _contingency(labels_true, labels_pred, contingency)
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

    Parameters
    ----------
    labels_true, labels_pred : array-like of shape (n_samples,)
    contingency : sparse matrix or ndarray, optional
        Their ``contingency_matrix``, where the caller has it already (a dense table is accepted).
    device : str or torch.device, default "cpu"
        Where the expected MI is computed (a GPU where the logits are).

    Returns
    -------
    ami : float
        1 for identical partitions, about 0 for chance agreement, negative below chance.

    Examples
    --------
    >>> from qrp_core.metrics import adjusted_mutual_info
    >>> round(adjusted_mutual_info([0, 0, 1, 1], [0, 0, 1, 2]), 4)
    0.5714
    """
    labels_true, labels_pred = _check_labelings(labels_true, labels_pred)
    c = _contingency(labels_true, labels_pred, contingency)
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
    """Share of samples whose predicted cluster is the true one (NaN for no samples).

    Examples
    --------
    >>> from qrp_core.metrics import top1_accuracy
    >>> top1_accuracy([0, 0, 1, 1], [0, 0, 1, 2])
    0.75
    """
    labels_true, labels_pred = _check_labelings(labels_true, labels_pred)
    return float(np.mean(labels_true == labels_pred)) if len(labels_true) else float("nan")


def class_average_precision(
    labels_true: torch.Tensor,
    scores: torch.Tensor,
    sample_weight: torch.Tensor | None = None,
    *,
    chunk_classes: int = AP_CLASSES_PER_BLOCK,
) -> torch.Tensor:
    """Average precision of each class present in ``labels_true``, as ``sklearn.metrics.average_precision_score``
    of its score column (tied scores are one threshold).

    Parameters
    ----------
    labels_true : tensor of shape (n_samples,), int
    scores : tensor of shape (n_samples, n_classes)
        Higher means more likely; ranked on its device, ``chunk_classes`` columns at a time.
    sample_weight : tensor of shape (n_samples,), optional
        Non-negative weights (bootstrap counts); a class whose positives all weigh 0 gets NaN.

    Returns
    -------
    ap : tensor of shape (n_classes_present,), float64, on the CPU, classes in sorted order

    Examples
    --------
    >>> import torch
    >>> from qrp_core.metrics import class_average_precision
    >>> scores = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])
    >>> class_average_precision(torch.tensor([0, 1, 0]), scores).tolist()
    [1.0, 1.0]
    """
    present = torch.unique(labels_true)
    ap = [
        RankedScores(labels_true, scores, present[i : i + chunk_classes]).average_precision(sample_weight).cpu()
        for i in range(0, len(present), chunk_classes)
    ]
    return torch.cat(ap) if ap else torch.empty(0, dtype=torch.float64)


class RankedScores:
    """Each class's positives placed among all samples' scores for that class, once, so that average
    precision can be re-weighted cheaply (a bootstrap draws new weights, never a new ranking).

    A class's AP needs, for each positive, how many samples score at least as high (its rank, the end of
    its tie group: tied scores are one threshold, as in scikit-learn) and how many of those are positives.
    So only the class's few positives are sorted; every sample's score is placed among them by binary
    search, not sorted itself. Memory: 12 bytes per (class, sample).
    """

    @torch.no_grad()
    def __init__(self, labels_true: torch.Tensor, scores: torch.Tensor, classes: torch.Tensor):
        labels_true = labels_true.to(scores.device)
        classes = classes.to(scores.device)
        by_label = torch.argsort(labels_true, stable=True)
        starts = torch.searchsorted(labels_true[by_label], classes)
        self.n_positives = torch.searchsorted(labels_true[by_label], classes, right=True) - starts
        width = max(int(self.n_positives.max()), 1) if len(classes) else 1
        slot = torch.arange(width, device=scores.device)
        valid = slot[None, :] < self.n_positives[:, None]  # (C, P): which slots hold a positive
        positives = by_label[(starts[:, None] + slot[None, :]).clamp(max=len(by_label) - 1)]
        block = scores[:, classes].T.contiguous()  # (C, n): one row per class
        positive_scores = torch.where(valid, block.gather(1, positives), torch.inf)
        self.positive_scores, order = torch.sort(positive_scores, dim=1)  # ascending; padding (+inf) last
        self.positives = positives.gather(1, order)
        self.valid = valid.gather(1, order)
        # how many positives score at most each sample's score: the sample is ranked at or above exactly
        # the positives below that count, so the counts' histogram gives every positive's rank
        self.placed = torch.searchsorted(self.positive_scores, block, right=True, out_int32=True)
        # a positive's tie group starts at the first positive of its score
        self.group_start = torch.searchsorted(self.positive_scores, self.positive_scores)

    @torch.no_grad()
    def average_precision(self, sample_weight: torch.Tensor | None = None) -> torch.Tensor:
        """Average precision per class, float64 (NaN for a class without weighted positives)."""
        n_classes, width = self.positive_scores.shape
        device = self.positive_scores.device
        if sample_weight is None:
            weight = torch.ones(self.placed.shape[1], dtype=torch.float64, device=device)
        else:
            weight = sample_weight.to(device, torch.float64)
        # at_least[c, k]: the weight of the samples scoring at least the k-th positive's score
        placed_weight = torch.zeros((n_classes, width + 1), dtype=torch.float64, device=device)
        placed_weight.scatter_add_(1, self.placed.long(), weight.expand(n_classes, -1))
        at_least = placed_weight[:, 1:].flip(1).cumsum(1).flip(1)
        positive_weight = torch.where(self.valid, weight[self.positives], 0.0)
        from_here = positive_weight.flip(1).cumsum(1).flip(1)  # weight of the positives from slot k on
        true_positives = from_here.gather(1, self.group_start)
        precision = torch.where(at_least > 0, true_positives / at_least, 0.0)
        total = positive_weight.sum(1)
        return torch.where(total > 0, (precision * positive_weight).sum(1) / total, float("nan"))


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise log-softmax of (n, K) logits, stable for large values.

    Examples
    --------
    >>> import numpy as np
    >>> from qrp_core.metrics import log_softmax
    >>> np.exp(log_softmax(np.array([[0.0, 0.0], [1000.0, 1000.0]]))).tolist()
    [[0.5, 0.5], [0.5, 0.5]]
    """
    shifted = logits - logits.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def mutual_info_bits(cluster_sizes, test_cross_entropy: float) -> tuple[float, float]:
    """Eq. (1): I ~ H(f_K) - CE_test, in bits, and its normalised form I / H(f_K).

    Parameters
    ----------
    cluster_sizes : ndarray of shape (K,)
        Images per cluster (the frequencies of f_K) over the clusters the cross-entropy scores.
    test_cross_entropy : float
        The probe's mean test cross-entropy in nats (an upper bound on H(f_K | y)).

    Returns
    -------
    mi_bits, mi_norm : float

    Examples
    --------
    >>> from qrp_core.metrics import mutual_info_bits
    >>> mutual_info_bits([50, 50], test_cross_entropy=0.0)  # concepts that tell two halves apart: 1 bit
    (1.0, 1.0)
    """
    h = entropy_from_counts(cluster_sizes)
    mi = (h - test_cross_entropy) / math.log(2)
    return mi, (mi * math.log(2) / h if h > 0 else float("nan"))


def scored_cluster_sizes(cluster_sizes, labels_true) -> np.ndarray:
    """``cluster_sizes`` with the clusters that have no test image (in ``labels_true``) set to 0.

    Examples
    --------
    >>> from qrp_core.metrics import scored_cluster_sizes
    >>> scored_cluster_sizes([40, 2, 58], labels_true=[0, 2, 2]).tolist()
    [40, 0, 58]
    """
    sizes = np.asarray(cluster_sizes).copy()
    sizes[np.bincount(np.asarray(labels_true, dtype=np.int64), minlength=len(sizes))[: len(sizes)] == 0] = 0
    return sizes


def probe_scores(labels_true, logits, cluster_sizes, *, chunk_classes: int = AP_CLASSES_PER_BLOCK) -> dict:
    """Every metric of one probe on the test split, as a JSON-safe dict.

    Parameters
    ----------
    labels_true : array-like of shape (n_test,), int
        The test images' clusters.
    logits : ndarray or tensor of shape (n_test, K)
        The probe's logits; a tensor's device (a GPU) computes the softmax, cross-entropy and the
        per-class rankings of mAP.
    cluster_sizes : array-like of shape (K,)
        Images per cluster over the whole collection. H(f_K) is taken over the clusters that have test
        images (their sizes renormalised): those the cross-entropy scores. A cluster too small to get a
        test image (1 or 2 images) would add to H and to nothing else, biasing the MI upwards.

    Returns
    -------
    scores : dict
        nmi, ami, top1 and map (fractions), mi_bits and mi_norm (``mutual_info_bits``), ce_test_nats,
        h_clusters_bits (over the clusters scored), n_clusters_scored, n_empty_clusters (of the clustering:
        a K-means that left clusters empty measures fewer clusters than K) and n_test.

    Examples
    --------
    >>> import numpy as np
    >>> from qrp_core.metrics import probe_scores
    >>> logits = np.log([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])
    >>> scores = probe_scores([0, 1, 1], logits, cluster_sizes=[5, 10])
    >>> scores["top1"], scores["map"], round(scores["ce_test_nats"], 4), round(scores["h_clusters_bits"], 4)
    (0.6666666666666666, 1.0, 0.4149, 0.9183)
    """
    logits = torch.as_tensor(logits)
    truth = torch.as_tensor(np.asarray(labels_true), device=logits.device).long()
    predicted = logits.argmax(1).cpu().numpy()
    labels_true = truth.cpu().numpy()
    c = contingency_matrix(labels_true, predicted)
    log_probs = torch.log_softmax(logits.double(), dim=1)
    ce = float(-log_probs.gather(1, truth[:, None]).mean()) if len(truth) else float("nan")
    scored = scored_cluster_sizes(cluster_sizes, labels_true)
    mi_bits, mi_norm = mutual_info_bits(scored, ce)
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
        "h_clusters_bits": entropy_from_counts(scored) / math.log(2),
        "n_clusters_scored": int(np.count_nonzero(scored)),
        "n_empty_clusters": int(np.count_nonzero(np.asarray(cluster_sizes) == 0)),
        "n_test": int(len(labels_true)),
    }
