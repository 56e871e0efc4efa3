"""The SSL zoo: one small backbone trained by eight methods on concept world, measured on unseen images.

The methods train on their own draw of concept world (``images/train``: image seed 2, class folders by
shape, never evaluated) and are measured on the 1,500 images of the concept-world study (image seed 0),
whose concepts are known exactly: shape is the label, colour, texture, background and size/count the
expert groups. Each model's metadata records its method, family, epochs, steps, final loss and
``linear_acc`` (a forward linear probe for shape on the evaluated images' features).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..extract import ImageList, extract
from ..networks import get_source
from .concept_world import draw_world, linear_accuracies
from .ssl_config import BACKBONES, METHODS, TrainConfig
from .ssl_train import load_training_images, train
from .study_files import write_study


@dataclass(frozen=True)
class ZooBudget:
    """What every method gets: the training images, epochs over them, batch size, image side and backbone."""

    n_train: int = 4000
    epochs: int = 10
    batch_size: int = 256
    image_size: int = 32
    backbone: str = "resnet8"


def make_ssl_world(
    out: str | Path,
    *,
    n_images: int = 1500,
    budget: ZooBudget = ZooBudget(),
    methods: tuple[str, ...] = METHODS,
    seed: int = 0,
    device: str = "auto",
    show_progress: bool = True,
    on_method: Callable[[str, int, int], None] | None = None,
) -> Path:
    """Draw both image sets, train every method (checkpoints in ``out/checkpoints``, reused when the method,
    budget and images are unchanged), extract the features and write ``out/study.toml``.
    ``on_method(method, i, n)`` is called before the i-th of n methods."""
    out = Path(out)
    world = draw_world(out, n_images, seed=seed, image_seed=0)
    draw_world(out / "train", budget.n_train, seed=seed, image_seed=2, by_shape=True)
    training_images = load_training_images(out / "train" / "images", budget.image_size)
    evaluated = ImageList(out, tuple(out / p for p in world.paths), tuple(world.ids), None)
    features, metadata = {}, {}
    for i, method in enumerate(methods):
        if on_method is not None:
            on_method(method, i, len(methods))
        config = TrainConfig(
            method,
            backbone=budget.backbone,
            image_size=budget.image_size,
            epochs=budget.epochs,
            batch_size=budget.batch_size,
            seed=seed,
        )
        trained = train(config, training_images, out / "checkpoints", device=device, show_progress=show_progress)
        source = get_source(f"cifar-resnet{BACKBONES[budget.backbone]}", weights=trained.backbone_path)
        source = dataclasses.replace(source, layers={"final": source.layers["final"]})  # the pooled output only
        features[method] = extract(
            source, evaluated, out / "features", prefix=f"{method}--", batch_size=250, show_progress=show_progress
        )["final"]
        metadata[method] = {
            key: trained.metadata[key]
            for key in ("family", "architecture", "epochs", "method", "steps", "final_loss", "key")
            if key in trained.metadata
        }
        metadata[method]["checkpoint_sha256"] = source.metadata["checkpoint_sha256"]
    shapes = world.factors["shape"]
    for name, accuracy in linear_accuracies(features, shapes, out / "features" / "linear_acc.json").items():
        metadata[name]["linear_acc"] = accuracy
    return write_study(
        out, "ssl", world.ids, world.concepts, features, metadata, labels=world.labels, paths=world.paths
    )
