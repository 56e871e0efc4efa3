"""ImageNet objects (objects group): an ImageNet-1k classifier's top-1 class, plus every other class it
gives at least ``threshold`` probability.

The classifier is EfficientNet-Lite0/1/2 with the ImageNet weights of its registry package.
Class names are WordNet's first lemma of each ImageNet-1k synset, in the classifier's output
order (synsets sorted by id), from ``imagenet_classes.tsv`` (WordNet lemmas as listed in timm's
``imagenet_synset_to_lemma.txt``); the two names that repeat (crane the bird and the machine,
maillot) carry their synset id or second lemma.
"""

from __future__ import annotations

import numpy as np
import torch

from ..extract import normalise_images
from ..labels import imagenet_classes
from .base import Expert, register_expert


def imagenet_class_names() -> list[str]:
    """The 1,000 readable ImageNet-1k class names, in output order, each distinct."""
    return list(imagenet_classes().values())


class ImageNetObjects(Expert):
    name, group, source = "imagenet", "objects", "ImageNet"

    def __init__(self, *, network: str = "efficientnet-lite0", threshold: float = 0.25, batch_size: int = 32):
        from ..networks import get_source

        self.network = get_source(network)
        self.image_size = self.network.image_size
        self.batch_size = batch_size
        super().__init__(
            imagenet_class_names(),
            {
                "network": network,
                "weights": "ImageNet-1k (registry package)",
                "rule": "top-1, plus classes with probability >= threshold",
                "threshold": threshold,
            },
        )

    @torch.inference_mode()
    def probabilities(self, images: np.ndarray) -> np.ndarray:
        """Softmax over the 1,000 classes of uint8 RGB images (n, side, side, 3)."""
        out = []
        for start in range(0, len(images), self.batch_size):
            x = normalise_images(images[start : start + self.batch_size], self.network.mean, self.network.std)
            out.append(torch.softmax(self.network.model(x), dim=1).numpy())
        return np.concatenate(out) if out else np.zeros((0, len(self.labels)), np.float32)

    def predict(self, images: np.ndarray) -> list[list[int]]:
        probs = self.probabilities(images)
        top1 = probs.argmax(axis=1)
        return [sorted({int(t), *np.flatnonzero(p >= self.params["threshold"]).tolist()}) for t, p in zip(top1, probs)]


register_expert("imagenet")(ImageNetObjects)
