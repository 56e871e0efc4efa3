"""``train-ssl``: train a small backbone with a self-supervised method on a folder of images."""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path


def add_parser(verbs, positive_int, positive_float) -> None:
    from ..demos.ssl_config import BACKBONES, METHODS, TrainConfig

    default = TrainConfig("simclr")
    p = verbs.add_parser(
        "train-ssl",
        help="train a CIFAR ResNet with a self-supervised method on a folder of images (resumable)",
        description="Train, then measure with: extract --source cifar-resnetN --weights <printed backbone.pt>.",
    )
    p.add_argument("--method", required=True, help=f"one of {', '.join(METHODS)}")
    p.add_argument("--images", type=Path, required=True, help="folder of images (class folders: supervised)")
    p.add_argument("--out", type=Path, required=True, help="folder for <method>-<key>/ (checkpoint, backbone.pt)")
    p.add_argument("--backbone", default="resnet20", help=f"one of {', '.join(BACKBONES)} (default: resnet20)")
    p.add_argument("--image-size", type=positive_int, default=default.image_size, help="image side in pixels")
    p.add_argument("--epochs", type=positive_int, default=default.epochs, help="passes over the images")
    p.add_argument("--batch-size", type=positive_int, default=default.batch_size, help="images per step")
    p.add_argument("--lr", type=positive_float, default=default.learning_rate, help="AdamW's peak learning rate")
    p.add_argument("--seed", type=int, default=0, help="initialisation, image order and views")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="where to compute")


def train_ssl(args: argparse.Namespace) -> int:
    from ..demos.ssl_config import BACKBONES, TrainConfig
    from ..demos.ssl_train import load_training_images, train

    config = TrainConfig(
        args.method,
        backbone=args.backbone,
        image_size=args.image_size,
        epochs=args.epochs,
        batch_size=args.batch_size,
        learning_rate=args.lr,
        seed=args.seed,
    )
    images = load_training_images(args.images, config.image_size)
    trained = train(config, images, args.out, device=args.device)
    meta = trained.metadata
    loss = f", final loss {meta['final_loss']:.4f}" if "final_loss" in meta else ""
    print(f"{meta['method']} ({meta['family']}): {meta['epochs']} epochs, {meta['steps']} steps{loss}")
    print(trained.backbone_path)
    command = [
        "python", "-m", "qrp_core", "extract", "--source", f"cifar-resnet{BACKBONES[config.backbone]}",
        "--weights", str(trained.backbone_path), "--images", "FOLDER", "--out", "FEATURES",
    ]  # fmt: skip
    print("measure it: " + shlex.join(command))
    return 0
