"""The reverse probe (paper section 3, appendix C): a linear map from sparse binary concepts to cluster ids.

The concept matrix is never densified: a batch is a flat list of active concept indices
plus offsets, and ``nn.EmbeddingBag(mode="sum")`` sums the rows of the (n_concepts, K)
weight matrix for them, which equals ``concepts @ weight`` exactly.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp
import torch

from .config import CPU_STACKED_PROBE_MAX_WEIGHTS, FEATURE_ROWS_PER_BLOCK, PROBE_ROWS_PER_BLOCK, ProbeConfig
from .errors import InputError
from .probe_model import ReverseProbe, SparseRows
from .probe_steps import FixedShapeEpochs
from .split import TRAIN, VAL


@dataclass
class ProbeResult:
    """weight : (n_concepts, K) float32; bias : (K,) float32, from the epoch of lowest validation loss
    (epoch 0: the marginal, zero weights and the training split's log cluster frequencies as bias)."""

    weight: np.ndarray
    bias: np.ndarray
    best_epoch: int
    history: list[dict] = field(default_factory=list)
    stats: dict = field(default_factory=dict)


def marginal_logits(targets: torch.Tensor, n_clusters: int) -> torch.Tensor:
    """log of each cluster's frequency among ``targets`` (half a count added to every cluster, so one
    without training images gets a finite logit): the probe that predicts from no concept."""
    counts = torch.bincount(targets, minlength=n_clusters).double() + 0.5
    return (counts / counts.sum()).log().float()


def resolve_torch_device(device: str) -> torch.device:
    """``auto``: CUDA when torch sees a GPU, else the CPU; ``cuda`` without a GPU is an ``InputError``."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise InputError("device 'cuda' requested but torch sees no GPU", fix="use --device auto or cpu")
    return torch.device(device)


@torch.no_grad()
def _mean_losses(
    model: ReverseProbe, rows: SparseRows, targets: torch.Tensor, chunk: int = PROBE_ROWS_PER_BLOCK
) -> np.ndarray:
    total = torch.zeros(model.n_probes, dtype=torch.float64, device=targets.device)
    for start in range(0, len(rows), chunk):
        stop = min(start + chunk, len(rows))
        total += model.losses(model(*rows.batch(start, stop)), targets[start:stop], reduction="sum").double()
    return (total / max(len(rows), 1)).cpu().numpy()


def train_probe(
    concepts: sp.csr_matrix,
    targets: np.ndarray,
    split: np.ndarray,
    n_clusters: int,
    config: ProbeConfig = ProbeConfig(),
    *,
    seed: int,
    progress=None,
) -> ProbeResult:
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
    masks = np.ones((1, concepts.shape[1]), dtype=bool)
    return train_probes(concepts, masks, targets, split, n_clusters, config, seed=seed, progress=progress)[0]


def train_probes(
    concepts: sp.csr_matrix,
    masks: np.ndarray,
    targets: np.ndarray,
    split: np.ndarray,
    n_clusters: int,
    config: ProbeConfig = ProbeConfig(),
    *,
    seed: int,
    progress=None,
) -> list[ProbeResult]:
    """Train one probe per row of ``masks`` in a single pass over the data (expert-group ablations).

    Probe p sees the concepts where ``masks[p]`` is True and gets exactly the updates it would get
    alone with the same seed (same batches, its own loss); its result holds the weights of those
    concepts only, in column order. Training starts from zero. Each probe keeps its own epoch of lowest
    validation loss, where epoch 0 is the marginal (zero weights, the training split's log cluster
    frequencies as bias: the best a probe can do from no concept), so uninformative concepts score no
    worse than the cluster frequencies. The learning rate falls at ``config.lr_milestones``, fractions of
    ``config.max_epochs``.

    Parameters
    ----------
    concepts : sparse matrix of shape (n_images, n_concepts), binary
    masks : ndarray of shape (n_probes, n_concepts), bool
        The concepts each probe sees.
    targets : ndarray of shape (n_images,), int
        Cluster ids 0..K-1.
    split : ndarray of shape (n_images,), int8
        ``split.TRAIN``, ``VAL`` or ``TEST`` per image (``split.stratified_split``).
    n_clusters : int
    config : ProbeConfig
    seed : int
        Seeds the batches' order.
    progress : callable(epoch, stats), optional

    Returns
    -------
    list of ProbeResult
        Per probe: ``weight`` (n_seen_concepts, K) and ``bias`` (K,) of the kept epoch (``best_epoch``,
        0 to max_epochs), the ``history`` of epochs 0 to max_epochs and ``stats``.

    Examples
    --------
    >>> import numpy as np, scipy.sparse as sp
    >>> from qrp_core.config import ProbeConfig
    >>> from qrp_core.probe import probe_logits, train_probes
    >>> from qrp_core.split import TEST, TRAIN, VAL
    >>> clusters = np.arange(200) % 2
    >>> concepts = sp.csr_matrix(np.eye(2, dtype=np.float32)[clusters])  # concept c on the images of cluster c
    >>> split = np.repeat(np.array([TRAIN, VAL, TEST], dtype=np.int8), [120, 40, 40])
    >>> masks = np.array([[True, True], [True, False]])  # the second probe sees concept 0 only
    >>> probes = train_probes(concepts, masks, clusters, split, 2, ProbeConfig(max_epochs=5), seed=0)
    >>> [probe.weight.shape for probe in probes]
    [(2, 2), (1, 2)]
    >>> bool((probe_logits(probes[1].weight, probes[1].bias, concepts[:, :1]).argmax(1) == clusters).all())
    True
    """
    device = resolve_torch_device(config.device)
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    concepts = sp.csr_matrix(concepts)
    concepts.sort_indices()
    masks = np.asarray(masks, dtype=bool)
    n_probes = len(masks)
    targets_t = torch.as_tensor(np.asarray(targets, dtype=np.int64), device=device)
    all_rows = SparseRows.from_scipy(concepts, device)
    train_idx = torch.as_tensor(np.flatnonzero(split == TRAIN), device=device)
    val_idx = torch.as_tensor(np.flatnonzero(split == VAL), device=device)
    train_rows, train_targets = all_rows.take(train_idx), targets_t[train_idx]
    val_rows, val_targets = all_rows.take(val_idx), targets_t[val_idx]
    grad_mask = None if masks.all() else torch.as_tensor(masks.T[:, :, None], dtype=torch.float32, device=device)

    model = ReverseProbe(concepts.shape[1], n_clusters, n_probes).to(device)
    epochs = FixedShapeEpochs(
        model,
        train_rows,
        train_targets,
        batch_size=config.batch_size,
        momentum=config.momentum,
        weight_decay=config.weight_decay,
        grad_mask=grad_mask,
    )
    # epoch 0 is the marginal: zero weights and the training split's log cluster frequencies as bias, the
    # best prediction from no concept. It competes with the trained epochs (which start from zero, as the
    # paper's), so concepts that say nothing score the cluster frequencies, not below them.
    marginal = ReverseProbe(concepts.shape[1], n_clusters, n_probes).to(device)
    with torch.no_grad():
        marginal.bias.copy_(marginal_logits(train_targets, n_clusters).repeat(n_probes))
    histories = [[] for _ in range(n_probes)]
    best_loss, best_epoch = np.full(n_probes, math.inf), np.full(n_probes, -1)
    # the best epochs' weights stay on the device until the end (a GPU copies them back once)
    best_weight = torch.zeros((concepts.shape[1], n_probes, n_clusters), device=device)
    best_bias = torch.zeros((n_probes, n_clusters), device=device)

    def keep_if_better(epoch: int, state: ReverseProbe, train_losses: np.ndarray, lr: float) -> None:
        # with no validation images (tiny studies) the training loss picks the epoch
        val_losses = _mean_losses(state, val_rows, val_targets) if len(val_rows) else train_losses
        improved = np.flatnonzero(val_losses < best_loss)
        if len(improved):
            best_weight[:, improved] = state.weight.weight.detach().view(-1, n_probes, n_clusters)[:, improved]
            best_bias[improved] = state.bias.detach().view(n_probes, n_clusters)[improved]
            best_loss[improved], best_epoch[improved] = val_losses[improved], epoch
        for p in range(n_probes):
            histories[p].append(
                {"train_loss": float(train_losses[p]), "val_loss": float(val_losses[p]), "epoch": epoch, "lr": lr}
            )

    t0 = time.perf_counter()
    keep_if_better(0, marginal, _mean_losses(marginal, train_rows, train_targets), 0.0)
    for epoch in range(1, config.max_epochs + 1):
        lr = config.learning_rate(epoch - 1)
        keep_if_better(epoch, model, epochs.run(generator, lr), lr)
        if progress is not None:
            progress(epoch - 1, histories[0][-1])
    best_weight, best_bias = best_weight.cpu().numpy(), best_bias.cpu().numpy()
    seconds = time.perf_counter() - t0
    return [
        ProbeResult(
            weight=np.ascontiguousarray(best_weight[masks[p], p]),
            bias=best_bias[p].copy(),
            best_epoch=int(best_epoch[p]),
            history=histories[p],
            stats={
                "device": str(device),
                "epochs_run": config.max_epochs,
                "lr_milestones": list(config.lr_milestones),
                "best_val_loss": float(best_loss[p]),
                "n_train": len(train_rows),
                "n_val": len(val_rows),
                "seconds": seconds,
                "trained_with": n_probes,
                "torch_threads": torch.get_num_threads(),
                "steps": epochs.mode,
                "graph_failure": epochs.graph_failure,
                "compile_failure": epochs.compile_failure,
            },
        )
        for p in range(n_probes)
    ]


def _loaded_probe(weight: np.ndarray, bias: np.ndarray, device: torch.device) -> ReverseProbe:
    model = ReverseProbe(*weight.shape).to(device)
    with torch.no_grad():
        model.weight.weight.copy_(torch.as_tensor(weight))
        model.bias.copy_(torch.as_tensor(bias))
    return model


@torch.no_grad()
def probe_logits(
    weight: np.ndarray,
    bias: np.ndarray,
    concepts: sp.csr_matrix,
    *,
    device: str = "auto",
    chunk: int = PROBE_ROWS_PER_BLOCK,
) -> np.ndarray:
    """Logits of the probe for each row of ``concepts``: (n_rows, K) float32."""
    dev = resolve_torch_device(device)
    model = _loaded_probe(weight, bias, dev)
    rows = SparseRows.from_scipy(sp.csr_matrix(concepts), dev)
    out = np.empty((len(rows), weight.shape[1]), dtype=np.float32)
    for start in range(0, len(rows), chunk):
        stop = min(start + chunk, len(rows))
        out[start:stop] = model(*rows.batch(start, stop)).cpu().numpy()
    return out


@torch.no_grad()
def probe_outputs(
    weight: np.ndarray,
    bias: np.ndarray,
    concepts: sp.csr_matrix | SparseRows,
    test: np.ndarray,
    *,
    device: str = "auto",
    chunk: int = FEATURE_ROWS_PER_BLOCK,
) -> tuple[np.ndarray, torch.Tensor]:
    """The predicted cluster of every row and the test rows' logits, left on the device for scoring.

    ``concepts`` may already be on the device (``SparseRows``), for several probes over one matrix.
    Only (n_test, K) logits are ever held: at ImageNet scale all rows' logits would be 5 GB.
    Returns (predictions (n_rows,) int32, logits (n_test, K) float32 tensor).
    """
    dev = resolve_torch_device(device)
    model = _loaded_probe(weight, bias, dev)
    rows = concepts if isinstance(concepts, SparseRows) else SparseRows.from_scipy(sp.csr_matrix(concepts), dev)
    test_rows = torch.as_tensor(np.flatnonzero(test), device=dev)
    predictions = np.empty(len(rows), dtype=np.int32)
    test_logits = torch.empty((len(test_rows), weight.shape[1]), dtype=torch.float32, device=dev)
    for start in range(0, len(rows), chunk):
        stop = min(start + chunk, len(rows))
        logits = model(*rows.batch(start, stop))
        predictions[start:stop] = logits.argmax(1).int().cpu().numpy()
        lo, hi = torch.searchsorted(test_rows, torch.tensor([start, stop], device=dev)).tolist()
        test_logits[lo:hi] = logits[test_rows[lo:hi] - start]
    return predictions, test_logits


def batch_probes(n_probes: int, n_concepts: int, n_clusters: int, device: str) -> bool:
    """Train several probes in one stacked table? On a GPU, yes. On a CPU every SGD step touches the
    whole (n_concepts, n_probes * K) table, so stacking only pays while that table is small (6 probes at
    M=1,700 on 2 cores: K=1,000 took 3.3x longer stacked (bench/pipeline.py), K=250-300 about as long,
    K=100 2.6x less)."""
    if n_probes < 2:
        return False
    if resolve_torch_device(device).type == "cuda":
        return True
    return n_concepts * n_probes * n_clusters <= CPU_STACKED_PROBE_MAX_WEIGHTS
