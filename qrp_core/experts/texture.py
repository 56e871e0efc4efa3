"""Describable textures (texture group): a linear head on frozen EfficientNet-Lite0 ImageNet features,
trained with supervision on a DTD folder (class folders), one label per image as in the paper (appendix A)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..errors import InputError
from ..extract import normalise_images
from .base import Expert, register_expert


def _lite0_features(images: np.ndarray) -> np.ndarray:
    """Pooled 1280-d EfficientNet-Lite0 features of uint8 RGB images (n, 224, 224, 3)."""
    from ..networks import get_source

    source = _lite0_features.source = getattr(_lite0_features, "source", None) or get_source("efficientnet-lite0")
    captured = {}
    handle = source.model.get_submodule(source.layers["final"]).register_forward_hook(
        lambda _m, _i, out: captured.__setitem__("x", out.flatten(1))
    )
    try:
        with torch.inference_mode():
            source.model(normalise_images(images, source.mean, source.std))
    finally:
        handle.remove()
    return captured["x"].numpy()


class DTDTexture(Expert):
    name, group, source = "texture", "texture", "DTD"
    image_size = 224

    def __init__(
        self, *, dtd_root: str | Path | None = None, test_fraction: float = 0.25, C: float = 0.1, seed: int = 0
    ):
        from sklearn.linear_model import LogisticRegression
        from sklearn.model_selection import train_test_split
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        from ..extract import list_images, read_images

        if dtd_root is None:
            raise InputError(
                "the texture expert needs its training images",
                fix="pass dtd_root (here: ../shared/data/dtd10; the full DTD works too)",
            )
        images = list_images(dtd_root)
        if images.labels is None:
            raise InputError("expected one folder per texture class", where=dtd_root, fix="use DTD's images/ folder")
        x = np.concatenate(
            [
                _lite0_features(read_images(images.paths[s : s + 50], self.image_size))
                for s in range(0, len(images.paths), 50)
            ]
        )
        y = np.array(images.labels)
        x_train, x_test, y_train, y_test = train_test_split(
            x, y, test_size=test_fraction, random_state=seed, stratify=y
        )
        self.head = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=3000)).fit(x_train, y_train)
        accuracy = float(self.head.score(x_test, y_test))
        super().__init__(
            list(self.head.classes_),
            {
                "dtd_root": str(dtd_root),
                "n_train": len(y_train),
                "held_out_accuracy": round(accuracy, 4),
                "C": C,
                "seed": seed,
                "features": "efficientnet-lite0 final (ImageNet)",
            },
        )

    def predict(self, images: np.ndarray) -> list[list[int]]:
        return [[int(c)] for c in self.head.predict_proba(_lite0_features(images)).argmax(axis=1)]


register_expert("texture")(DTDTexture)
