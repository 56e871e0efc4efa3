"""What a self-supervised training run is: the method, its family, the backbone and the budget (no torch here,
so the command line can describe them without loading it)."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import InputError

FAMILIES = {
    "simclr": "contrastive",
    "simclr-no-colour": "contrastive",
    "byol": "non-contrastive",
    "swav": "clustering",
    "rotnet": "pretext",
    "autoencoder": "reconstruction",
    "supervised": "supervised",
    "random": "random init",
}
METHODS = tuple(FAMILIES)
BACKBONES = {"resnet8": 8, "resnet20": 20}  # CIFAR ResNets (16-32-64 channels): 3 and 9 residual blocks


@dataclass(frozen=True)
class TrainConfig:
    method: str
    backbone: str = "resnet8"
    image_size: int = 32
    epochs: int = 10
    batch_size: int = 256
    learning_rate: float = 2e-3
    weight_decay: float = 1e-4
    seed: int = 0

    def __post_init__(self):
        if self.method not in METHODS:
            raise InputError(f"unknown method {self.method!r}", fix=f"use one of {', '.join(METHODS)}")
        if self.backbone not in BACKBONES:
            raise InputError(f"unknown backbone {self.backbone!r}", fix=f"use one of {', '.join(BACKBONES)}")
        if self.method == "autoencoder" and self.image_size % 8:
            raise InputError(
                f"the autoencoder's decoder needs an image side divisible by 8, not {self.image_size}",
                fix="pass --image-size 32 (or another multiple of 8)",
            )
