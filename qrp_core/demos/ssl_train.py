"""Train a small backbone with a self-supervised method (``ssl_methods``) on a folder of images.

One loop and one optimiser recipe for every method: AdamW, a linear warm-up over the first tenth of the
steps then cosine decay to zero, two views per image per step, ``epochs`` passes over the images in
batches of ``batch_size`` (the last partial batch dropped). A run is deterministic given its seed: each
epoch draws its image order and views from a generator seeded by (seed, epoch), and the whole state is
saved after every epoch into ``<root>/<method>-<key>/training.pt``, where the key hashes the method, the
configuration and the images, so an interrupted run resumes to the same weights.

The result is ``backbone.pt`` (a state dict under ``state_dict`` that ``extract --source cifar-resnetN
--weights`` reads) and ``metadata.json`` (method, family, epochs, steps, final loss, ...).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from ..cache import atomic_write_json
from ..errors import InputError
from ..extract import list_images, read_images
from ..networks import CifarResNet
from ..probe import resolve_torch_device
from .ssl_config import BACKBONES, FAMILIES, TrainConfig
from .ssl_methods import build_method

TRAINER_VERSION = 2  # raise when a method's objective or the loop changes: cached runs then retrain
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # the cifar-resnet sources' input normalisation


@dataclass(frozen=True)
class TrainingImages:
    """Images as (n, 3, side, side) uint8, their class indices (or None) and a hash of both."""

    root: Path
    pixels: torch.Tensor
    labels: torch.Tensor | None
    classes: tuple[str, ...]
    sha256: str


@dataclass(frozen=True)
class TrainedModel:
    folder: Path
    backbone_path: Path
    metadata: dict


def load_training_images(folder: str | Path, image_size: int) -> TrainingImages:
    """Every image below ``folder`` resized to ``image_size`` (as ``extract`` resizes); class folders give labels."""
    images = list_images(folder)
    pixels = torch.from_numpy(read_images(images.paths, image_size)).permute(0, 3, 1, 2).contiguous()
    classes = tuple(sorted(set(images.labels))) if images.labels is not None else ()
    labels = torch.tensor([classes.index(label) for label in images.labels]) if classes else None
    digest = hashlib.sha256(pixels.numpy().tobytes())
    digest.update(json.dumps([classes, labels.tolist() if labels is not None else None]).encode())
    return TrainingImages(images.root, pixels, labels, classes, digest.hexdigest())


def make_backbone(name: str, seed: int) -> nn.Module:
    """The CIFAR ResNet ``name`` with He-normal convolutions (fan-out, as torchvision's ResNets), batch norm
    at identity and no classifier: its output is the pooled 64-d feature."""
    torch.manual_seed(seed)
    model = CifarResNet(BACKBONES[name])
    model.linear = nn.Identity()
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
    return model


def run_key(config: TrainConfig, images: TrainingImages) -> str:
    """sha256 of the configuration, the images and the trainer's version (a changed objective retrains)."""
    identity = [dataclasses.asdict(config), images.sha256, TRAINER_VERSION]
    return hashlib.sha256(json.dumps(identity).encode()).hexdigest()


def _save(obj, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(obj, tmp)
    tmp.replace(path)


def _learning_rate(config: TrainConfig, step: int, total: int) -> float:
    warmup = max(total // 10, 1)
    if step < warmup:
        return config.learning_rate * (step + 1) / warmup
    return config.learning_rate * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(total - warmup, 1)))


def train(
    config: TrainConfig,
    images: TrainingImages,
    root: str | Path,
    *,
    device: str = "auto",
    show_progress: bool = True,
    stop_after_epochs: int | None = None,
) -> TrainedModel:
    """Train (or resume, or reuse) ``config.method`` on ``images``; ``stop_after_epochs`` interrupts the run
    after that many new epochs (tests use it). Returns where the backbone and its metadata are."""
    key = run_key(config, images)
    folder = Path(root) / f"{config.method}-{key[:12]}"
    backbone_path, metadata_path, state_path = folder / "backbone.pt", folder / "metadata.json", folder / "training.pt"
    if backbone_path.is_file() and metadata_path.is_file():
        metadata = json.loads(metadata_path.read_text())
        if metadata.get("key") == key:
            return TrainedModel(folder, backbone_path, metadata)
    epochs = 0 if config.method == "random" else config.epochs
    steps_per_epoch = len(images.pixels) // config.batch_size
    if epochs and steps_per_epoch == 0:
        raise InputError(
            f"{len(images.pixels)} images make no full batch of {config.batch_size}",
            where=images.root,
            fix=f"lower --batch-size to at most {len(images.pixels)}, or add images",
        )
    if FAMILIES[config.method] == "supervised" and images.labels is None:
        raise InputError(
            "the supervised method needs labels: the images are not in class folders",
            where=images.root,
            fix="put each class's images in a folder named after it, or choose a self-supervised method",
        )
    dev = resolve_torch_device(device)
    backbone = make_backbone(config.backbone, config.seed)
    mean, std = (torch.tensor(v, device=dev).view(1, 3, 1, 1) for v in (MEAN, STD))
    method = build_method(
        config.method,
        backbone,
        64,
        lambda x: (x - mean) / std,
        image_size=config.image_size,
        n_classes=max(len(images.classes), 1),
    ).to(dev)
    optimiser = torch.optim.AdamW(
        [p for p in method.parameters() if p.requires_grad], lr=config.learning_rate, weight_decay=config.weight_decay
    )
    done, losses = 0, []
    if state_path.is_file():
        state = torch.load(state_path, map_location=dev, weights_only=True)
        if state.get("key") == key:
            method.load_state_dict(state["method"])
            optimiser.load_state_dict(state["optimiser"])
            done, losses = state["epoch"], list(state["losses"])
    folder.mkdir(parents=True, exist_ok=True)
    total = epochs * steps_per_epoch
    started = time.perf_counter()
    method.train()
    with tqdm(
        total=total, initial=done * steps_per_epoch, desc=f"train {config.method}", disable=not show_progress
    ) as bar:
        for epoch in range(done, epochs):
            if stop_after_epochs is not None and epoch - done >= stop_after_epochs:
                return TrainedModel(folder, backbone_path, {"interrupted_after_epoch": epoch})
            generator = torch.Generator().manual_seed(config.seed * 1_000_003 + epoch)
            order = torch.randperm(len(images.pixels), generator=generator)
            epoch_loss = 0.0
            for step in range(steps_per_epoch):
                index = order[step * config.batch_size : (step + 1) * config.batch_size]
                batch = images.pixels[index].to(dev).float() / 255
                labels = images.labels[index].to(dev) if images.labels is not None else None
                global_step = epoch * steps_per_epoch + step
                for group in optimiser.param_groups:
                    group["lr"] = _learning_rate(config, global_step, total)
                loss = method.loss(batch, labels, generator)
                optimiser.zero_grad(set_to_none=True)
                loss.backward()
                optimiser.step()
                method.after_step((global_step + 1) / total)
                epoch_loss += loss.item()
                bar.update(1)
                bar.set_postfix(loss=f"{loss.item():.4f}")
            losses.append(epoch_loss / steps_per_epoch)
            state = {"key": key, "epoch": epoch + 1, "losses": losses}
            _save({**state, "method": method.state_dict(), "optimiser": optimiser.state_dict()}, state_path)
    metadata = {
        "method": config.method,
        "family": FAMILIES[config.method],
        "architecture": f"ResNet-{BACKBONES[config.backbone]} (CIFAR), {config.image_size}px",
        "epochs": epochs,
        "steps": total,
        "losses": [round(v, 5) for v in losses],
        "config": dataclasses.asdict(config),
        "images": str(images.root),
        "images_sha256": images.sha256,
        "key": key,
        "device": dev.type,
        "torch": torch.__version__,
        "seconds_this_run": round(time.perf_counter() - started, 1),
    }
    if losses:
        metadata["final_loss"] = round(losses[-1], 5)
    backbone.eval()
    weights = {k: v.detach().cpu() for k, v in backbone.state_dict().items()}
    trained = {"method": config.method, "family": FAMILIES[config.method], "image_size": config.image_size, "key": key}
    _save({"state_dict": weights, "qrp_training": trained}, backbone_path)
    atomic_write_json(metadata_path, metadata)
    return TrainedModel(folder, backbone_path, metadata)


def feature_scale(model: nn.Module, images: TrainingImages, n: int = 256) -> float:
    """Standard deviation of the backbone's pooled features over the first ``n`` images (eval mode)."""
    x = images.pixels[:n].float() / 255
    x = (x - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)
    with torch.inference_mode():
        return float(np.std(model.eval()(x).numpy()))
