"""Probe epochs whose steps all have one shape, so that a GPU replays a whole epoch as one CUDA graph.

The plain autograd epoch (``tests/reference.py: train_one_epoch``) is, on a GPU, bound by launching ~25 small
kernels a step, and EmbeddingBag's backward reads a count back to the host every step, which a CUDA
graph cannot capture. Here a step needs neither autograd nor the host:

- forward: EmbeddingBag sums the weight rows of each image's active concepts, as ``ReverseProbe`` does;
- the mean cross-entropy's gradient with respect to the logits, (softmax - onehot) / batch, is written out;
- the weight gradient, concepts^T @ that, is a second EmbeddingBag over the batch's entries sorted by
  concept: one bag per concept, summed in row order, so it is deterministic;
- SGD with momentum and weight decay is ``torch.optim.SGD(fused=True)``'s kernel, the learning rate
  in a device tensor.

Each step's entries sit in a slot of fixed width (``capacity``). The slack after a step's real entries
is spread over a few extra bags whose outputs are dropped, so no real bag grows; rows missing from
the last, shorter batch weigh zero. The batches are ``train_one_epoch``'s, drawn from the same
generator, so the weights equal autograd's up to float rounding (tests/test_probe.py). On a CPU the
same steps, without a graph, take half the time of autograd (bench/gpu_probe_step.py --rows 100000).
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch
import torch.nn.functional as F

from .probe_model import ReverseProbe, SparseRows

EXTRA_BAGS = 64  # bags that hold a step's slack
HEADROOM = 1.05  # capacity over the largest step seen, so a later epoch rarely needs a new graph
CAPACITY_GRID = 256  # capacities are multiples of this (aligned rows for compiled kernels)


class FixedShapeEpochs:
    """SGD epochs over ``rows`` that update ``model``'s parameters in place; a CUDA graph per epoch on a GPU.

    ``grad_mask`` (n_concepts, n_probes, 1) as in ``tests/reference.py: train_one_epoch``. ``use_graph=False`` runs
    the same steps one by one (on a CPU, or where capture fails). ``compile_steps`` (default: on a GPU)
    compiles each step's gradient computation with ``torch.compile`` into a few fused kernels; where
    compiling fails the plain operations run, and ``compile_failure`` says why.
    """

    def __init__(
        self,
        model: ReverseProbe,
        rows: SparseRows,
        targets: torch.Tensor,
        *,
        batch_size: int,
        momentum: float,
        weight_decay: float,
        grad_mask: torch.Tensor | None = None,
        use_graph: bool = True,
        compile_steps: bool | None = None,
    ):
        self.model, self.rows, self.targets = model, rows, targets
        self.batch_size, self.momentum, self.weight_decay = batch_size, momentum, weight_decay
        self.grad_mask = grad_mask
        self.use_graph = use_graph and targets.is_cuda
        self.n_steps = math.ceil(len(rows) / batch_size)
        self.n_concepts = model.weight.num_embeddings
        device = targets.device
        self.weight, self.bias = model.weight.weight, model.bias
        self.weight_momentum = torch.zeros_like(self.weight)
        self.bias_momentum = torch.zeros_like(self.bias)
        self.lr = torch.zeros((), device=device)
        self.loss_sum = torch.zeros(model.n_probes, device=device)
        self.minus_one = torch.full((batch_size, model.n_probes, 1), -1.0, device=device)
        self.step_targets = torch.zeros((self.n_steps, batch_size), dtype=torch.int64, device=device)
        self.row_weight = torch.zeros((self.n_steps, batch_size), device=device)
        self.forward_offsets = torch.zeros((self.n_steps, batch_size + EXTRA_BAGS), dtype=torch.int64, device=device)
        self.backward_offsets = torch.zeros(
            (self.n_steps, self.n_concepts + EXTRA_BAGS), dtype=torch.int64, device=device
        )
        self.capacity, self.graph, self.graph_failure, self.compile_failure = 0, None, None, None
        compile_steps = targets.is_cuda if compile_steps is None else compile_steps
        # shapes that change between calls (slot capacity, number of probes) become dynamic after one recompile
        self.gradients = torch.compile(step_gradients, fullgraph=True) if compile_steps else step_gradients
        self.compiled_for_capacity = None

    @property
    def mode(self) -> str:
        steps = "compiled fixed-shape steps" if self.gradients is not step_gradients else "fixed-shape steps"
        return f"cuda-graph of {steps}" if self.graph is not None else steps

    @torch.no_grad()
    def run(self, generator: torch.Generator, lr: float) -> np.ndarray:
        """One epoch in ``tests/reference.py: train_one_epoch``'s order; returns each probe's mean training loss."""
        if self.n_steps == 0:
            return np.zeros(self.model.n_probes, dtype=np.float32)
        order = torch.randperm(len(self.rows), generator=generator).to(self.targets.device)
        self._lay_out(self.rows.take(order), self.targets[order])
        self.lr.fill_(lr)
        if self.compiled_for_capacity != self.capacity and self.gradients is not step_gradients:
            self._compile()
        if self.use_graph and self.graph is None:
            self._capture()
        if self.graph is not None:
            self.graph.replay()
        else:
            self._epoch()
        return (self.loss_sum / self.n_steps).cpu().numpy()

    def _lay_out(self, shuffled: SparseRows, targets: torch.Tensor) -> None:
        """Write the epoch's batches into the fixed-shape buffers the steps read."""
        n, b, m = len(shuffled), self.batch_size, self.n_concepts
        device = targets.device
        host_indptr = shuffled.host_indptr
        starts = np.arange(self.n_steps) * b
        nnz = host_indptr[np.minimum(starts + b, n)] - host_indptr[starts]
        if nnz.max() > self.capacity:
            # a coarse grid keeps one capacity, hence one compiled shape, across similar epochs and calls
            self.capacity = CAPACITY_GRID * math.ceil(max(1, nnz.max() * HEADROOM) / CAPACITY_GRID)
            self.forward_indices = torch.zeros((self.n_steps, self.capacity), dtype=torch.int64, device=device)
            self.backward_rows = torch.zeros_like(self.forward_indices)
            self.graph = None  # its buffers are gone
        indptr = shuffled.indptr
        step_start = indptr[torch.as_tensor(starts, device=device)]
        row = torch.repeat_interleave(
            torch.arange(n, device=device), indptr[1:] - indptr[:-1], output_size=len(shuffled.indices)
        )
        step = row // b
        slot = torch.arange(len(row), device=device) - step_start[step]
        self.forward_indices.zero_()
        self.forward_indices[step, slot] = shuffled.indices
        ends = torch.clamp(torch.as_tensor(starts, device=device)[:, None] + torch.arange(b, device=device), max=n)
        self.forward_offsets[:, :b] = indptr[ends] - step_start[:, None]
        slack = self._slack_offsets(torch.as_tensor(nnz, device=device))
        self.forward_offsets[:, b:] = slack
        # entries sorted by (step, concept) stay inside their step's slot range; stable: rows in order
        keys, by_concept = torch.sort(step * m + shuffled.indices, stable=True)
        self.backward_rows.zero_()
        self.backward_rows[step, slot] = (row - step * b)[by_concept]
        firsts = (torch.arange(self.n_steps, device=device)[:, None] * m + torch.arange(m, device=device)).flatten()
        self.backward_offsets[:, :m] = torch.searchsorted(keys, firsts).view(self.n_steps, m) - step_start[:, None]
        self.backward_offsets[:, m:] = slack
        self.step_targets.zero_()
        self.step_targets.view(-1)[:n] = targets
        rows_in_step = torch.as_tensor(np.minimum(starts + b, n) - starts, device=device, dtype=torch.float32)
        self.row_weight.zero_()
        self.row_weight.view(-1)[:n] = (1.0 / rows_in_step)[torch.arange(n, device=device) // b]

    def _slack_offsets(self, nnz: torch.Tensor) -> torch.Tensor:
        """(n_steps, EXTRA_BAGS) starts of the bags that split each step's unused slot evenly."""
        parts = torch.arange(EXTRA_BAGS, device=nnz.device)
        return nnz[:, None] + (self.capacity - nnz)[:, None] * parts // EXTRA_BAGS

    def _epoch(self) -> None:
        self.loss_sum.zero_()
        for s in range(self.n_steps):
            self._step(s)

    def _step(self, s: int) -> None:
        grad_weight, grad_bias = self.gradients(
            self.weight,
            self.bias,
            self.loss_sum,
            self.forward_indices[s],
            self.forward_offsets[s],
            self.backward_rows[s],
            self.backward_offsets[s],
            self.step_targets[s],
            self.row_weight[s],
            self.minus_one,
            self.grad_mask,
            self.model.n_probes,
            self.model.n_clusters,
        )
        # torch.optim.SGD(fused=True)'s kernel, one pass over each table: d = grad + wd * param;
        # buf = momentum * buf + d (zero-initialised buffers make the first step's buf = d exact); param -= lr * buf
        torch._fused_sgd_(
            [self.weight, self.bias],
            [grad_weight, grad_bias],
            [self.weight_momentum, self.bias_momentum],
            weight_decay=self.weight_decay,
            momentum=self.momentum,
            lr=self.lr,
            dampening=0.0,
            nesterov=False,
            maximize=False,
            is_first_step=False,
        )

    def _compile(self) -> None:
        """Compile the gradients for the current buffers, outside any graph capture, on step 0's
        (no update); on failure, use the plain operations."""
        loss_sum = self.loss_sum.clone()
        try:
            self.gradients(
                self.weight,
                self.bias,
                loss_sum,
                self.forward_indices[0],
                self.forward_offsets[0],
                self.backward_rows[0],
                self.backward_offsets[0],
                self.step_targets[0],
                self.row_weight[0],
                self.minus_one,
                self.grad_mask,
                self.model.n_probes,
                self.model.n_clusters,
            )
            self.compiled_for_capacity = self.capacity
        except Exception as exc:  # noqa: BLE001 - no compiler, no Triton, an unsupported op: all fall back
            self.compile_failure = f"{type(exc).__name__}: {exc}"[:300]
            self.gradients = step_gradients
            warnings.warn(f"probe steps run uncompiled ({self.compile_failure})", RuntimeWarning, stacklevel=2)

    def _capture(self) -> None:
        state = (self.weight, self.bias, self.weight_momentum, self.bias_momentum)
        saved = [t.detach().clone() for t in state]
        try:
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):  # warm-up before capture, as CUDA graphs require
                self._step(0)
            torch.cuda.current_stream().wait_stream(side)
            for t, value in zip(state, saved):
                t.data.copy_(value)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                self._epoch()
            self.graph = graph
        except RuntimeError as exc:  # an op that cannot be captured: run the same steps one by one
            self.use_graph, self.graph_failure = False, f"{type(exc).__name__}: {exc}"[:300]
            warnings.warn(f"probe epochs run without a CUDA graph ({self.graph_failure})", RuntimeWarning, stacklevel=2)
            torch.cuda.synchronize()
            for t, value in zip(state, saved):
                t.data.copy_(value)


def step_gradients(
    weight: torch.Tensor,
    bias: torch.Tensor,
    loss_sum: torch.Tensor,
    forward_indices: torch.Tensor,
    forward_offsets: torch.Tensor,
    backward_rows: torch.Tensor,
    backward_offsets: torch.Tensor,
    targets: torch.Tensor,
    row_weight: torch.Tensor,
    minus_one: torch.Tensor,
    grad_mask: torch.Tensor | None,
    n_probes: int,
    n_clusters: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One step's gradients of the mean cross-entropy with respect to the weight table and the bias;
    subtracts the step's weighted losses from ``loss_sum``. Tensors only (no host values), so that a
    CUDA graph can capture it and ``torch.compile`` can fuse it."""
    b, p, k = len(targets), n_probes, n_clusters
    m = len(backward_offsets) - EXTRA_BAGS
    logits = F.embedding_bag(forward_indices, weight, forward_offsets, mode="sum")[:b]
    log_probs = torch.log_softmax((logits + bias).view(b, p, k), dim=2)
    target = targets.view(b, 1, 1).expand(b, p, 1)
    weight_of_row = row_weight.view(b, 1, 1)
    loss_sum.sub_((log_probs.gather(2, target) * weight_of_row).sum(0).view(p))
    grad_logits = log_probs.exp_().scatter_add_(2, target, minus_one).mul_(weight_of_row).view(b, p * k)
    grad_weight = F.embedding_bag(backward_rows, grad_logits, backward_offsets, mode="sum")[:m]
    if grad_mask is not None:
        grad_weight.view(m, p, k).mul_(grad_mask)
    return grad_weight, grad_logits.sum(0)
