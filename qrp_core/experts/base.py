"""The expert interface and registry."""

from __future__ import annotations

import numpy as np

from ..registry import Registry

EXPERTS = Registry("expert")


class Expert:
    """Turns RGB images into the indices of the concepts present, one list per image.

    Subclasses set ``name``, ``group`` (the expert group the concepts join), ``source`` (the prefix
    of concept names, as in the paper's figures: ``[Color] red``), ``version``, ``params`` (its
    thresholds) and ``labels`` (unprefixed concept names), and implement ``predict``.
    """

    name: str
    group: str
    source: str
    version: str = "1"
    image_size: int = 128  # images are resized to this side before ``predict``

    def __init__(self, labels: list[str], params: dict):
        self.labels = tuple(labels)
        self.params = params

    @property
    def concept_names(self) -> tuple[str, ...]:
        return tuple(f"[{self.source}] {label}" for label in self.labels)

    def predict(self, images: np.ndarray) -> list[list[int]]:
        """images : (batch, side, side, 3) uint8 -> the active concept indices of each image."""
        raise NotImplementedError

    def describe(self) -> dict:
        return {
            "expert": self.name,
            "group": self.group,
            "source": self.source,
            "version": self.version,
            "params": self.params,
            "concepts": list(self.concept_names),
        }


register_expert, list_experts, get_expert = EXPERTS.register, EXPERTS.list, EXPERTS.get


def hsv(images: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Hue in degrees [0, 360), saturation and value in [0, 1] of uint8 RGB images (..., 3)."""
    x = images.astype(np.float32) / 255.0
    r, g, b = x[..., 0], x[..., 1], x[..., 2]
    value = x.max(-1)
    chroma = value - x.min(-1)
    safe = np.maximum(chroma, 1e-6)
    hue = np.where(value == r, ((g - b) / safe) % 6, np.where(value == g, (b - r) / safe + 2, (r - g) / safe + 4))
    hue = np.where(chroma > 1e-6, hue * 60.0, 0.0)
    saturation = np.where(value > 0, chroma / np.maximum(value, 1e-6), 0.0)
    return hue, saturation, value
