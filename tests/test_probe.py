
import numpy as np
import pytest
import scipy.sparse as sp
import torch

from qrp_core.metrics import probe_scores
from qrp_core.probe import ProbeConfig, ReverseProbe, SparseRows, probe_logits, probe_outputs, train_probe, train_probes
from qrp_core.split import TEST, stratified_split


def _random_concepts(rng, n, m, density):
    return sp.random(n, m, density=density, format="csr", random_state=rng, data_rvs=lambda s: np.ones(s)).astype(bool)


def test_sparse_forward_equals_dense_linear():
    rng = np.random.default_rng(0)
    concepts = _random_concepts(rng, 300, 50, 0.1)
    keep = np.ones((300, 1), bool)
    keep[5] = False  # an image without concepts: its logits are the bias alone
    concepts = sp.csr_matrix(concepts.multiply(keep))
    concepts.eliminate_zeros()
    assert concepts[5].nnz == 0
    probe = ReverseProbe(50, 7)
    with torch.no_grad():
        probe.weight.weight.normal_()
        probe.bias.normal_()
    dense = torch.nn.Linear(50, 7)
    with torch.no_grad():
        dense.weight.copy_(probe.weight.weight.T)
        dense.bias.copy_(probe.bias)
    rows = SparseRows.from_scipy(concepts, torch.device("cpu"))
    with torch.no_grad():
        sparse_out = probe(*rows.batch(0, len(rows)))
        dense_out = dense(torch.tensor(concepts.toarray(), dtype=torch.float32))
    torch.testing.assert_close(sparse_out, dense_out, rtol=1e-5, atol=1e-5)
    logits = probe_logits(probe.weight.weight.detach().numpy(), probe.bias.detach().numpy(), concepts, chunk=64)
    np.testing.assert_allclose(logits, dense_out.numpy(), rtol=1e-5, atol=1e-5)
    test = rng.random(concepts.shape[0]) < 0.3
    predictions, test_logits = probe_outputs(probe.weight.weight.detach().numpy(), probe.bias.detach().numpy(),
                                             concepts, test, chunk=17)  # chunks cut through test runs
    np.testing.assert_array_equal(predictions, logits.argmax(1))
    np.testing.assert_allclose(test_logits.cpu().numpy(), logits[test], rtol=1e-6, atol=1e-6)


def test_sparse_rows_take_equals_scipy_row_indexing():
    rng = np.random.default_rng(1)
    concepts = _random_concepts(rng, 100, 30, 0.15)
    concepts.sort_indices()
    order = rng.permutation(100)[:40]
    taken = SparseRows.from_scipy(concepts, torch.device("cpu")).take(torch.as_tensor(order))
    expected = concepts[order]
    np.testing.assert_array_equal(taken.indptr.numpy(), expected.indptr)
    np.testing.assert_array_equal(taken.indices.numpy(), expected.indices)


def _combination_world(n=4000, seed=0):
    """Three one-hot attributes of 4 values; the cluster is the (a, b) combination: 16 clusters."""
    rng = np.random.default_rng(seed)
    a, b, c = rng.integers(0, 4, (3, n))
    rows = np.repeat(np.arange(n), 3)
    cols = np.stack([a, 4 + b, 8 + c], axis=1).ravel()
    concepts = sp.csr_matrix((np.ones(3 * n, bool), (rows, cols)), shape=(n, 12))
    return concepts, a * 4 + b


def _mi(concepts, clusters, seed=0, epochs=40):
    split, _ = stratified_split(clusters, seed=seed)
    result = train_probe(concepts, clusters, split, 16, ProbeConfig(max_epochs=epochs), seed=seed)
    logits = probe_logits(result.weight, result.bias, concepts)
    test = split == TEST
    return probe_scores(clusters[test], logits[test], np.bincount(clusters, minlength=16)), result


def test_mi_estimate_approaches_entropy_when_clusters_follow_concepts():
    concepts, clusters = _combination_world()
    scores, _ = _mi(concepts, clusters)
    assert scores["h_clusters_bits"] == pytest.approx(4.0, abs=0.01)  # 16 balanced clusters
    assert scores["mi_bits"] > 0.97 * scores["h_clusters_bits"]
    assert scores["top1"] == 1.0


def test_mi_estimate_drops_to_zero_when_concepts_are_shuffled():
    concepts, clusters = _combination_world()
    rng = np.random.default_rng(7)
    mis = []
    for _ in range(3):
        scores, _ = _mi(concepts[rng.permutation(concepts.shape[0])], clusters)
        mis.append(scores["mi_bits"])
    print(f"shuffled-concepts MI: mean {np.mean(mis):.4f} bits, std {np.std(mis, ddof=1):.4f} over {len(mis)}")
    assert abs(np.mean(mis)) < 0.05
    assert all(abs(m) < 0.1 for m in mis)


def test_training_is_deterministic_and_keeps_best_validation_epoch():
    concepts, clusters = _combination_world(n=1500, seed=3)
    split, _ = stratified_split(clusters, seed=0)
    config = ProbeConfig(max_epochs=12, lr_milestones=(6, 9))
    first = train_probe(concepts, clusters, split, 16, config, seed=5)
    second = train_probe(concepts, clusters, split, 16, config, seed=5)
    np.testing.assert_array_equal(first.weight, second.weight)
    np.testing.assert_array_equal(first.bias, second.bias)
    val_losses = [h["val_loss"] for h in first.history]
    assert first.best_epoch == int(np.argmin(val_losses))
    assert [h["lr"] for h in first.history][5:7] == [3.5, pytest.approx(0.35)]
    assert first.weight.shape == (12, 16)


def test_probes_trained_together_equal_probes_trained_alone():
    concepts, clusters = _combination_world(n=2000, seed=4)
    split, _ = stratified_split(clusters, seed=1)
    masks = np.zeros((3, 12), dtype=bool)
    masks[0] = True  # every group
    masks[1, :4] = True  # the first attribute only
    masks[2, :8] = True  # the first two
    config = ProbeConfig(max_epochs=8, lr_milestones=(4, 6))
    together = train_probes(concepts, masks, clusters, split, 16, config, seed=2)
    for p, mask in enumerate(masks):
        alone = train_probe(concepts[:, np.flatnonzero(mask)], clusters, split, 16, config, seed=2)
        assert together[p].weight.shape == alone.weight.shape == (mask.sum(), 16)
        np.testing.assert_allclose(together[p].weight, alone.weight, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(together[p].bias, alone.bias, rtol=1e-4, atol=1e-5)
        assert together[p].best_epoch == alone.best_epoch
        assert together[p].history[-1]["val_loss"] == pytest.approx(alone.history[-1]["val_loss"], rel=1e-5)

