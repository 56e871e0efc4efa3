import math

import numpy as np
import pytest
import torch
from sklearn import metrics as skm
from sklearn.metrics.cluster import contingency_matrix as sk_contingency

from qrp_core import metrics
from reference import mean_average_precision


def _labelings(rng, n, k_true, k_pred, agreement):
    true = rng.integers(0, k_true, n)
    pred = np.where(rng.random(n) < agreement, true % k_pred, rng.integers(0, k_pred, n))
    return true, pred


@pytest.mark.parametrize(
    "n,k_true,k_pred,agreement",
    [
        (40, 3, 4, 0.5),
        (1000, 20, 30, 0.3),
        (5000, 200, 150, 0.6),
        (20000, 1000, 1000, 0.4),
        (300, 2, 2, 0.0),
    ],
)
def test_nmi_ami_equal_sklearn(n, k_true, k_pred, agreement):
    rng = np.random.default_rng(n)
    true, pred = _labelings(rng, n, k_true, k_pred, agreement)
    assert metrics.normalized_mutual_info(true, pred) == pytest.approx(
        skm.normalized_mutual_info_score(true, pred), abs=1e-9
    )
    assert metrics.adjusted_mutual_info(true, pred) == pytest.approx(
        skm.adjusted_mutual_info_score(true, pred), abs=1e-9
    )


@pytest.mark.parametrize(
    "true,pred",
    [
        ([0, 0, 0], [1, 1, 1]),  # neither splits: perfect match
        ([0, 0, 1, 1], [0, 0, 0, 0]),  # one side constant
        ([0, 1, 2, 3], [0, 1, 2, 3]),  # identical, all singletons
        (list(range(10)), list(range(9, -1, -1))),  # the same singletons, renamed: MI and its expectation both log n
        ([0, 0, 1, 1], [1, 1, 0, 0]),  # permuted
        ([0, 1, 0, 1], [0, 0, 1, 1]),  # independent
    ],
)
def test_edge_cases_equal_sklearn(true, pred):
    assert metrics.normalized_mutual_info(true, pred) == pytest.approx(skm.normalized_mutual_info_score(true, pred))
    assert metrics.adjusted_mutual_info(true, pred) == pytest.approx(skm.adjusted_mutual_info_score(true, pred))


def test_contingency_and_mi_equal_sklearn():
    rng = np.random.default_rng(1)
    true, pred = _labelings(rng, 500, 7, 9, 0.5)
    c = metrics.contingency_matrix(true, pred)
    np.testing.assert_array_equal(c.toarray(), sk_contingency(true, pred))
    assert metrics.mutual_info(c) == pytest.approx(skm.mutual_info_score(true, pred), abs=1e-12)


@pytest.mark.parametrize(
    "n,k,concentration,window",
    [
        (3000, 50, 1.0, None),
        (60_000, 1000, 0.3, None),  # unequal clusters: the windows cut most pairs' ranges short
        (60_000, 1000, 0.3, (0.0, 1)),  # windows far too narrow: every cut pair is summed over its whole range
        (50_000, 3, 1.0, None),  # huge clusters, spreads of ~100 terms
    ],
)
def test_expected_mutual_info_equals_sklearn(monkeypatch, n, k, concentration, window):
    from sklearn.metrics.cluster._expected_mutual_info_fast import expected_mutual_information

    if window is not None:
        monkeypatch.setattr(metrics, "_EMI_WINDOW", window)
    rng = np.random.default_rng(2)
    sizes = rng.dirichlet(np.full(k, concentration))
    true = rng.choice(k, size=n, p=sizes)
    pred = np.where(rng.random(n) < 0.3, true, rng.choice(k, size=n, p=sizes))
    c = metrics.contingency_matrix(true, pred)
    ours = metrics.expected_mutual_info(np.asarray(c.sum(1)).ravel(), np.asarray(c.sum(0)).ravel())
    assert ours == pytest.approx(expected_mutual_information(c, len(true)), abs=1e-10, rel=1e-9)


def test_map_equals_sklearn_with_ties():
    rng = np.random.default_rng(3)
    n, k = 2000, 25
    labels = rng.integers(0, k - 2, n)  # the last two classes never occur: left out of the mean
    scores = np.round(rng.random((n, k)) + 0.7 * np.eye(k)[labels], 1)  # rounding makes many ties
    expected = np.mean([skm.average_precision_score(labels == c, scores[:, c]) for c in np.unique(labels)])
    assert mean_average_precision(labels, scores, chunk_classes=7) == pytest.approx(expected, abs=1e-12)


def test_top1_and_cross_entropy_closed_forms():
    labels = np.array([0, 1, 2, 1])
    logits = np.log(np.array([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.5, 0.25, 0.25], [0.3, 0.3, 0.4]]))
    assert metrics.top1_accuracy(labels, logits.argmax(1)) == 0.5
    expected = -np.mean(np.log([0.7, 0.8, 0.25, 0.3]))
    ce = metrics.probe_scores(labels, logits, np.bincount(labels, minlength=3))["ce_test_nats"]
    assert ce == pytest.approx(expected)
    torch_ce = torch.nn.functional.cross_entropy(torch.tensor(logits), torch.tensor(labels)).item()
    assert ce == pytest.approx(torch_ce)


def test_mutual_info_bits_closed_form():
    sizes = np.array([25, 25, 25, 25])  # H = 2 bits
    mi, norm = metrics.mutual_info_bits(sizes, test_cross_entropy=math.log(2))  # CE = 1 bit
    assert mi == pytest.approx(1.0)
    assert norm == pytest.approx(0.5)
    assert metrics.entropy_from_counts([0, 4, 4]) == pytest.approx(math.log(2))


def test_probe_scores_consistent():
    rng = np.random.default_rng(4)
    labels = rng.integers(0, 5, 300)
    logits = rng.normal(size=(300, 5)) + 2 * np.eye(5)[labels]
    s = metrics.probe_scores(labels, logits, np.bincount(labels, minlength=5))
    assert s["top1"] == pytest.approx(np.mean(logits.argmax(1) == labels))
    assert s["nmi"] == pytest.approx(skm.normalized_mutual_info_score(labels, logits.argmax(1)))
    assert s["mi_bits"] == pytest.approx(s["h_clusters_bits"] - s["ce_test_nats"] / math.log(2))
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    assert s["ce_test_nats"] == pytest.approx(skm.log_loss(labels, probs), rel=1e-12)
    expected_map = np.mean([skm.average_precision_score(labels == c, probs[:, c]) for c in range(5)])
    assert s["map"] == pytest.approx(expected_map, abs=1e-12)
    assert s["ami"] == pytest.approx(skm.adjusted_mutual_info_score(labels, logits.argmax(1)), abs=1e-12)
    # the same scores from float32 torch logits, with classes in chunks smaller than K
    t = metrics.probe_scores(
        labels, torch.as_tensor(logits, dtype=torch.float32), np.bincount(labels, minlength=5), chunk_classes=2
    )
    for name in ("nmi", "ami", "top1", "map", "ce_test_nats"):
        assert t[name] == pytest.approx(s[name], rel=1e-6), name


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_probe_scores_on_cuda_equal_cpu():
    rng = np.random.default_rng(5)
    labels = rng.integers(0, 300, 20_000)
    logits = rng.normal(size=(20_000, 300)).astype(np.float32) + 3 * np.eye(300, dtype=np.float32)[labels]
    sizes = np.bincount(labels, minlength=300)
    on_cpu = metrics.probe_scores(labels, torch.as_tensor(logits), sizes)
    on_gpu = metrics.probe_scores(labels, torch.as_tensor(logits, device="cuda"), sizes)
    for name in ("nmi", "ami", "top1", "map", "mi_bits"):
        assert on_gpu[name] == pytest.approx(on_cpu[name], rel=1e-6, abs=1e-9), name
    assert on_gpu["ami"] == pytest.approx(skm.adjusted_mutual_info_score(labels, logits.argmax(1)), abs=1e-9)


def test_ranked_scores_average_precision_equals_sklearn_with_ties_and_absent_classes():
    rng = np.random.default_rng(6)
    n, k = 500, 9
    labels = rng.integers(0, k - 1, n)  # class k-1 never occurs
    scores = np.round(rng.random((n, k)) + 0.5 * np.eye(k)[labels], 1)  # many ties
    present = np.unique(labels)
    ap = (
        metrics.RankedScores(torch.as_tensor(labels), torch.as_tensor(scores), torch.as_tensor(present))
        .average_precision()
        .numpy()
    )
    expected = [skm.average_precision_score(labels == c, scores[:, c]) for c in present]
    np.testing.assert_allclose(ap, expected, atol=1e-12)
    assert mean_average_precision(labels, scores) == pytest.approx(np.mean(expected), abs=1e-12)


def test_weighted_map_equals_sklearn_and_repeated_samples():
    rng = np.random.default_rng(5)
    n, k = 600, 12
    labels = rng.integers(0, k, n)
    scores = np.round(rng.random((n, k)) + 0.5 * np.eye(k)[labels], 1)
    weights = rng.integers(0, 3, n)  # bootstrap-like counts, zeros included
    present = np.unique(labels[weights > 0])
    expected = np.mean([skm.average_precision_score(labels == c, scores[:, c], sample_weight=weights) for c in present])
    assert mean_average_precision(labels, scores, sample_weight=weights) == pytest.approx(expected, abs=1e-12)
    repeated = np.repeat(np.arange(n), weights)  # integer weights = repeated rows
    assert mean_average_precision(labels[repeated], scores[repeated]) == pytest.approx(expected, abs=1e-12)


def test_weighted_map_leaves_out_classes_whose_positives_all_weigh_zero():
    """A bootstrap draw can miss every positive of a class: its AP is undefined and the mean runs over
    the other classes (not counting it as 0)."""
    rng = np.random.default_rng(7)
    n, k = 400, 6
    labels = rng.integers(0, k, n)
    scores = np.round(rng.random((n, k)) + 0.5 * np.eye(k)[labels], 1)
    weights = rng.integers(1, 3, n).astype(float)
    weights[labels == 2] = 0  # class 2 is in labels_true but has no weighted positive
    weights[labels == 4] = 0
    expected = np.mean(
        [skm.average_precision_score(labels == c, scores[:, c], sample_weight=weights) for c in (0, 1, 3, 5)]
    )
    ours = mean_average_precision(labels, scores, sample_weight=weights, chunk_classes=4)
    assert ours == pytest.approx(expected, abs=1e-12)
    missed = np.isin(labels, [2, 4])  # no class with a weighted positive at all: no mean
    assert math.isnan(mean_average_precision(labels[missed], scores[missed], sample_weight=np.zeros(int(missed.sum()))))


def test_probe_mi_takes_h_over_the_clusters_the_cross_entropy_scores():
    """Eq. (1): H(f_K) from the whole collection's cluster sizes, over the clusters that have test images
    (renormalised), CE from the test rows. Clusters without a test image (tiny ones) would add to H only:
    with 30 such clusters the estimate rose above the H of every cluster it can score."""
    from scipy import stats

    rng = np.random.default_rng(6)
    labels = rng.integers(0, 4, 200)  # the test images fall in clusters 0..3
    logits = rng.normal(size=(200, 34)) + 1.5 * np.eye(34)[labels]
    sizes = np.array([400, 100, 250, 50] + [2] * 30)  # 30 clusters of 2 images, none in the test split
    s = metrics.probe_scores(labels, logits, sizes)
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    ce = skm.log_loss(labels, probs, labels=np.arange(34))
    h = stats.entropy(sizes[:4] / sizes[:4].sum())  # nats, the four clusters scored
    assert s["n_clusters_scored"] == 4
    assert s["h_clusters_bits"] == pytest.approx(stats.entropy(sizes[:4], base=2))
    assert s["mi_bits"] == pytest.approx((h - ce) / math.log(2))
    assert s["mi_norm"] == pytest.approx((h - ce) / h)
    perfect = metrics.probe_scores(labels, 50.0 * np.eye(34)[labels], sizes)  # concepts that name each cluster
    assert perfect["mi_bits"] <= perfect["h_clusters_bits"] + 1e-9  # the old estimate exceeded it by 0.59 bits
    assert metrics.scored_cluster_sizes(sizes, labels).tolist() == [400, 100, 250, 50] + [0] * 30


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize(
    "metric", [metrics.normalized_mutual_info, metrics.adjusted_mutual_info, metrics.top1_accuracy]
)
def test_non_finite_labels_are_refused(metric, bad):
    finite = np.array([0.0, 0.0, 1.0, 1.0])
    with_bad = np.array([0.0, bad, 1.0, bad])  # two NaNs would silently count as one label, or as two
    with pytest.raises(ValueError, match="labels_pred holds NaN or infinite labels"):
        metric(finite, with_bad)
    with pytest.raises(ValueError, match="labels_true holds NaN or infinite labels"):
        metric(with_bad, finite)


def test_a_dense_contingency_table_is_accepted():
    rng = np.random.default_rng(3)
    true, pred = rng.integers(0, 5, 300), rng.integers(0, 7, 300)
    dense = sk_contingency(true, pred)  # scikit-learn's dense table
    assert metrics.normalized_mutual_info(true, pred, contingency=dense) == pytest.approx(
        skm.normalized_mutual_info_score(true, pred), abs=1e-12
    )
    assert metrics.adjusted_mutual_info(true, pred, contingency=dense) == pytest.approx(
        skm.adjusted_mutual_info_score(true, pred), abs=1e-12
    )
