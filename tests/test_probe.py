import shutil

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from qrp_core.config import ProbeConfig
from qrp_core.metrics import probe_scores
from qrp_core.probe import probe_logits, probe_outputs, train_probe, train_probes
from qrp_core.probe_model import ReverseProbe, SparseRows
from qrp_core.probe_steps import FixedShapeEpochs
from qrp_core.split import TEST, TRAIN, VAL, stratified_split
from reference import train_one_epoch


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
    predictions, test_logits = probe_outputs(
        probe.weight.weight.detach().numpy(), probe.bias.detach().numpy(), concepts, test, chunk=17
    )  # chunks cut through test runs
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
    config = ProbeConfig(max_epochs=12, lr_milestone_fractions=(0.5, 0.75))
    first = train_probe(concepts, clusters, split, 16, config, seed=5)
    second = train_probe(concepts, clusters, split, 16, config, seed=5)
    np.testing.assert_array_equal(first.weight, second.weight)
    np.testing.assert_array_equal(first.bias, second.bias)
    val_losses = [h["val_loss"] for h in first.history]
    assert [h["epoch"] for h in first.history] == list(range(13))  # epoch 0: the start, before any step
    assert first.best_epoch == int(np.argmin(val_losses))
    assert [h["lr"] for h in first.history][:1] + [h["lr"] for h in first.history][6:8] == [
        0.0,
        3.5,
        pytest.approx(0.35),
    ]
    assert first.weight.shape == (12, 16)


def test_probes_trained_together_equal_probes_trained_alone():
    concepts, clusters = _combination_world(n=2000, seed=4)
    split, _ = stratified_split(clusters, seed=1)
    masks = np.zeros((3, 12), dtype=bool)
    masks[0] = True  # every group
    masks[1, :4] = True  # the first attribute only
    masks[2, :8] = True  # the first two
    config = ProbeConfig(max_epochs=8, lr_milestone_fractions=(0.5, 0.75))
    together = train_probes(concepts, masks, clusters, split, 16, config, seed=2)
    for p, mask in enumerate(masks):
        alone = train_probe(concepts[:, np.flatnonzero(mask)], clusters, split, 16, config, seed=2)
        assert together[p].weight.shape == alone.weight.shape == (mask.sum(), 16)
        np.testing.assert_allclose(together[p].weight, alone.weight, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(together[p].bias, alone.bias, rtol=1e-4, atol=1e-5)
        assert together[p].best_epoch == alone.best_epoch
        assert together[p].history[-1]["val_loss"] == pytest.approx(alone.history[-1]["val_loss"], rel=1e-5)


def _eager_and_graphed(concepts, targets, n_clusters, masks, lrs, batch_size, compile_steps=False):
    """The same epochs through train_one_epoch (autograd, torch.optim.SGD) and the engine's fixed-shape steps."""
    rows = SparseRows.from_scipy(concepts, torch.device("cpu"))
    targets = torch.as_tensor(targets)
    grad_mask = torch.as_tensor(masks.T[:, :, None], dtype=torch.float32)
    eager = ReverseProbe(concepts.shape[1], n_clusters, len(masks))
    graphed = ReverseProbe(concepts.shape[1], n_clusters, len(masks))
    optimizer = torch.optim.SGD(eager.parameters(), lr=lrs[0], momentum=0.9, weight_decay=1e-3)
    epochs = FixedShapeEpochs(
        graphed,
        rows,
        targets,
        batch_size=batch_size,
        momentum=0.9,
        weight_decay=1e-3,
        grad_mask=grad_mask,
        compile_steps=compile_steps,
    )
    eager_gen, graphed_gen = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    losses, capacities = [], []
    for lr in lrs:
        optimizer.param_groups[0]["lr"] = lr
        losses.append(
            (
                train_one_epoch(
                    eager, optimizer, rows, targets, batch_size=batch_size, generator=eager_gen, grad_mask=grad_mask
                ),
                epochs.run(graphed_gen, lr),
            )
        )
        capacities.append(epochs.capacity)
    return eager, graphed, losses, capacities, epochs


@pytest.mark.parametrize(
    "compile_steps",
    [
        False,
        pytest.param(
            True,
            marks=pytest.mark.skipif(not shutil.which("g++"), reason="torch.compile on a CPU needs a C++ compiler"),
        ),
    ],
)  # plain ops; compiled kernels
def test_fixed_shape_steps_equal_autograd_steps(compile_steps):
    rng = np.random.default_rng(0)
    keep = np.arange(1000) % 37 != 0  # images without any concept: empty bags
    concepts = sp.diags(keep.astype(float)) @ _random_concepts(rng, 1000, 40, 0.08).astype(float)
    concepts = sp.csr_matrix(concepts, dtype=bool)
    concepts.eliminate_zeros()
    targets = rng.integers(0, 7, 1000)
    masks = np.ones((3, 40), dtype=bool)
    masks[1, 20:] = False
    masks[2, ::3] = False
    eager, graphed, losses, _, epochs = _eager_and_graphed(
        concepts, targets, 7, masks, [0.5, 0.5, 0.05], batch_size=64, compile_steps=compile_steps
    )
    assert epochs.mode == ("compiled fixed-shape steps" if compile_steps else "fixed-shape steps")
    assert epochs.compile_failure is None
    assert len(losses[0][1]) == 3 and concepts[::37].nnz == 0  # 15 full batches and one of 40 rows
    for eager_losses, graphed_losses in losses:
        np.testing.assert_allclose(graphed_losses, eager_losses, rtol=1e-6)
    torch.testing.assert_close(graphed.weight.weight, eager.weight.weight, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(graphed.bias, eager.bias, rtol=1e-5, atol=1e-6)
    weight = graphed.weight.weight.detach().view(40, 3, 7)
    assert weight[20:, 1].abs().max() == 0 and weight[::3, 2].abs().max() == 0  # masked concepts stay at zero
    assert weight[:20, 1].abs().min() > 0


def test_fixed_shape_steps_grow_their_slots_when_a_batch_has_more_concepts():
    rng = np.random.default_rng(1)
    dense = rng.random((300, 25)) < 0.1
    dense[:40] = True  # one batch of rows with every concept, in some epoch's order
    concepts = sp.csr_matrix(dense)
    targets = rng.integers(0, 5, 300)
    masks = np.ones((1, 25), dtype=bool)
    eager, graphed, _, capacities, _ = _eager_and_graphed(concepts, targets, 5, masks, [0.5] * 6, batch_size=32)
    assert capacities[-1] > capacities[0]  # some later epoch put more dense rows into one batch
    assert eager.weight.weight.abs().max() > 0.1
    torch.testing.assert_close(graphed.weight.weight, eager.weight.weight, rtol=1e-4, atol=1e-5)


def test_steps_that_fail_to_compile_run_uncompiled(monkeypatch):
    import qrp_core.probe_steps as probe_steps

    def no_compiler(fn, **kwargs):
        def fail(*args):
            raise RuntimeError("no working C compiler")

        return fail

    monkeypatch.setattr(probe_steps.torch, "compile", no_compiler)
    rng = np.random.default_rng(2)
    concepts = _random_concepts(rng, 300, 20, 0.2)
    targets = rng.integers(0, 4, 300)
    masks = np.ones((1, 20), dtype=bool)
    with pytest.warns(RuntimeWarning, match="uncompiled"):
        eager, graphed, _, _, epochs = _eager_and_graphed(
            concepts, targets, 4, masks, [0.5] * 2, batch_size=32, compile_steps=True
        )
    assert epochs.compile_failure == "RuntimeError: no working C compiler"
    assert epochs.mode == "fixed-shape steps"
    torch.testing.assert_close(graphed.weight.weight, eager.weight.weight, rtol=1e-5, atol=1e-6)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_probes_replay_cuda_graphs_and_equal_the_cpu():
    concepts, clusters = _combination_world(n=3000, seed=2)
    split, _ = stratified_split(clusters, seed=0)
    masks = np.ones((2, 12), dtype=bool)
    masks[1, 8:] = False
    results = {
        device: train_probes(
            concepts,
            masks,
            clusters,
            split,
            16,
            ProbeConfig(max_epochs=6, lr_milestone_fractions=(4 / 6,), device=device),
            seed=1,
        )
        for device in ("cpu", "cuda", "cuda:0")
    }
    for first, again in zip(results["cuda"], results["cuda:0"]):  # deterministic: the same bits twice
        np.testing.assert_array_equal(first.weight, again.weight)
    for cpu, gpu in zip(results["cpu"], results["cuda"]):
        assert gpu.stats["steps"] == "cuda-graph of compiled fixed-shape steps", gpu.stats
        assert cpu.stats["steps"] == "fixed-shape steps"
        np.testing.assert_allclose(gpu.weight, cpu.weight, rtol=1e-4, atol=1e-5)
        assert gpu.best_epoch == cpu.best_epoch


def test_train_probe_equals_a_dense_sgd_loop_with_the_papers_schedule():
    """An independent trainer: dense ``nn.Linear`` from zero, ``torch.optim.SGD`` with momentum and weight
    decay, ``MultiStepLR``, the same seeded batch order, and the epoch of lowest validation loss kept."""
    concepts, clusters = _combination_world(n=1200, seed=6)
    split, _ = stratified_split(clusters, seed=2)
    config = ProbeConfig(
        lr=0.8,
        momentum=0.9,
        weight_decay=1e-2,
        batch_size=100,
        max_epochs=7,
        lr_milestone_fractions=(3 / 7, 5 / 7),
        lr_gamma=0.2,
    )
    assert config.lr_milestones == (3, 5)
    result = train_probe(concepts, clusters, split, 16, config, seed=11)

    dense = torch.as_tensor(concepts.toarray(), dtype=torch.float32)
    targets = torch.as_tensor(clusters, dtype=torch.int64)
    train, val = (torch.as_tensor(np.flatnonzero(split == part)) for part in (TRAIN, VAL))
    linear = torch.nn.Linear(concepts.shape[1], 16)
    torch.nn.init.zeros_(linear.weight)
    torch.nn.init.zeros_(linear.bias)
    optimizer = torch.optim.SGD(
        linear.parameters(), lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
    )
    schedule = torch.optim.lr_scheduler.MultiStepLR(optimizer, list(config.lr_milestones), config.lr_gamma)
    generator = torch.Generator().manual_seed(11)
    # epoch 0, the marginal (no concept; the training split's log frequencies, half a count smoothed), competes
    counts = np.bincount(clusters[split == TRAIN], minlength=16) + 0.5
    marginal = torch.as_tensor(np.log(counts / counts.sum()), dtype=torch.float32)
    start_loss = torch.nn.functional.cross_entropy(marginal.expand(len(val), 16), targets[val]).item()
    best = (start_loss, torch.zeros(concepts.shape[1], 16), marginal, 0)
    for epoch in range(1, config.max_epochs + 1):
        order = train[torch.randperm(len(train), generator=generator)]
        for start in range(0, len(order), config.batch_size):
            batch = order[start : start + config.batch_size]
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(linear(dense[batch]), targets[batch]).backward()
            optimizer.step()
        schedule.step()
        with torch.no_grad():
            val_loss = torch.nn.functional.cross_entropy(linear(dense[val]), targets[val]).item()
        if val_loss < best[0]:
            best = (val_loss, linear.weight.detach().T.clone(), linear.bias.detach().clone(), epoch)
    assert result.best_epoch == best[3]
    np.testing.assert_allclose(result.weight, best[1].numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(result.bias, best[2].numpy(), rtol=1e-4, atol=1e-5)
    assert result.history[best[3]]["val_loss"] == pytest.approx(best[0], rel=1e-5)


def _labels_split_in_parts(n=6000, n_labels=6, parts=4, seed=0):
    """Clusters = label x an arbitrary part: concepts (the label, one-hot) tell the label and nothing of the
    part, so the true MI is H(label) = log2(6) bits."""
    rng = np.random.default_rng(seed)
    label, part = rng.integers(0, n_labels, n), rng.integers(0, parts, n)
    concepts = sp.csr_matrix((np.ones(n, bool), (np.arange(n), label)), shape=(n, n_labels))
    return concepts, label * parts + part


@pytest.mark.parametrize("epochs", [30, 100])
def test_the_schedule_scales_with_the_epochs_and_mi_reaches_the_truth(epochs):
    """With --epochs 30 the milestones stayed at 60 and 80: the lr was never divided, and the kept probe came
    from the noisy lr-3.5 phase (MI 2.07 bits against the true 2.58)."""
    concepts, clusters = _labels_split_in_parts()
    config = ProbeConfig(max_epochs=epochs)
    assert config.lr_milestones == (round(0.6 * epochs), round(0.8 * epochs))
    split, _ = stratified_split(clusters, seed=0)
    result = train_probe(concepts, clusters, split, 24, config, seed=0)
    lrs = [h["lr"] for h in result.history[1:]]
    assert lrs.count(3.5) == config.lr_milestones[0] and lrs[-1] == pytest.approx(0.035)
    test = split == TEST
    logits = probe_logits(result.weight, result.bias, concepts[np.flatnonzero(test)])
    scores = probe_scores(clusters[test], logits, np.bincount(clusters, minlength=24))
    assert scores["mi_bits"] == pytest.approx(np.log2(6), abs=0.01)  # 30 epochs on the old schedule: 2.561-2.570


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_uninformative_concepts_score_the_marginal_not_below_it(seed):
    """Concepts unrelated to the clusters: no trained epoch beats the marginal (epoch 0: zero weights, the
    training split's log frequencies as bias) on validation, so it is kept and MI is 0, not below (the
    epoch-1 probe that was kept before fitted noise: -0.037 to -0.050 bits on these draws)."""
    rng = np.random.default_rng(seed)
    n, k = 3000, 20
    clusters = rng.integers(0, k, n)
    noise = sp.csr_matrix(rng.random((n, 60)) < 0.2)  # three groups' worth of random concepts
    split, _ = stratified_split(clusters, seed=0)
    result = train_probe(noise, clusters, split, k, ProbeConfig(), seed=0)
    test = split == TEST
    logits = probe_logits(result.weight, result.bias, noise[np.flatnonzero(test)])
    scores = probe_scores(clusters[test], logits, np.bincount(clusters, minlength=k))
    assert result.best_epoch == 0 and not result.weight.any()
    assert abs(scores["mi_bits"]) <= 0.01
