"""The parameters of every step, with the paper's defaults (appendix C), and a run's grid.

Plain dataclasses without torch or faiss, so that the CLI's parser and its light verbs start fast.
"""

from __future__ import annotations

from dataclasses import dataclass, field

DEMO_K = 30  # the built demo worlds plant 30 shape x colour combinations; their views show this K

# How the engine cuts work into blocks: memory bounds, never part of a result.
FEATURE_ROWS_PER_BLOCK = 65_536  # feature rows standardised, assigned or scored at once
PROBE_ROWS_PER_BLOCK = 8_192  # concept rows per forward pass for validation losses and returned logits
AP_CLASSES_PER_BLOCK = 128  # score columns ranked at once for mAP
EMI_TERMS_PER_BLOCK = 8_000_000  # expected-MI terms at once (a few hundred MB)
# A CPU trains several probes as one stacked table while it holds at most this many weights: 6 probes at
# 1,700 concepts are 2.6x faster stacked at K=100, even at K=250-300 and 3.3x slower at K=1,000 (bench/pipeline.py)
CPU_STACKED_PROBE_MAX_WEIGHTS = 3_000_000
GPU_RESIDENT_FEATURES_FRACTION = (
    0.6  # features stay on a GPU for all their clusterings up to this share of its free memory
)


@dataclass(frozen=True)
class KMeansConfig:
    n_clusters: int = 1000  # K, paper section 4.2
    n_iter: int = 100  # Lloyd iterations, appendix C ("100 steps")
    n_restarts: int = 5  # keep the best of 5 runs by objective, appendix C
    max_points_per_centroid: int = 256  # training sample = K * this (faiss's default)
    early_stop_threshold: float = -1.0  # -1 runs every iteration; faiss 1.15's default 0.0 stops early
    device: str = "auto"  # "auto": a GPU when faiss or torch sees one, else the CPU


@dataclass(frozen=True)
class SplitConfig:
    test_fraction: float = 0.2  # of all images, appendix C
    val_fraction: float = 0.2  # of the training images, appendix C


@dataclass(frozen=True)
class ProbeConfig:
    lr: float = 3.5  # appendix C
    momentum: float = 0.9
    weight_decay: float = 3e-6  # L2 on weight and bias
    batch_size: int = 512
    max_epochs: int = 100
    lr_milestone_fractions: tuple[float, ...] = (0.6, 0.8)  # lr / 10 after 60% and 80% of the epochs (60, 80 of 100)
    lr_gamma: float = 0.1
    device: str = "auto"  # "auto" uses CUDA when torch sees it

    @property
    def lr_milestones(self) -> tuple[int, ...]:
        """The (0-based) epochs from which the learning rate is multiplied by ``lr_gamma`` once more: each
        fraction of ``max_epochs``, rounded half up, so a shorter run keeps the paper's schedule's shape."""
        return tuple(int(fraction * self.max_epochs + 0.5) for fraction in self.lr_milestone_fractions)

    def learning_rate(self, epoch: int) -> float:
        """The learning rate of (0-based) training epoch ``epoch``."""
        return self.lr * self.lr_gamma ** sum(epoch >= m for m in self.lr_milestones)


@dataclass(frozen=True)
class RunConfig:
    models: tuple[str, ...] = ()  # empty: every model of the study
    ks: tuple[int, ...] = (1000,)  # paper section 4.2
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)  # 5 clusterings, Table 2
    group_sets: tuple[tuple[str, ...], ...] = ()  # empty: one probe on all groups
    kmeans: KMeansConfig = field(default_factory=KMeansConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    probe: ProbeConfig = field(default_factory=ProbeConfig)
