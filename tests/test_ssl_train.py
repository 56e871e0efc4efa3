"""The SSL trainer: augmentations against closed forms, losses against brute force, determinism and resume,
the backbone read back by ``extract``, and bad input as one-line errors."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from qrp_core.cli import main
from qrp_core.demos.augment import colour_jitter, random_greyscale, random_resized_crop
from qrp_core.demos.ssl_config import METHODS, TrainConfig
from qrp_core.demos.ssl_methods import nt_xent, sinkhorn
from qrp_core.demos.ssl_train import TrainingImages, feature_scale, load_training_images, make_backbone, train
from qrp_core.errors import InputError
from qrp_core.networks import get_source


def images(n=8, side=16, seed=0) -> torch.Tensor:
    return torch.rand(n, 3, side, side, generator=torch.Generator().manual_seed(seed))


def tiny_images(n=64, side=16, labelled=True) -> TrainingImages:
    g = torch.Generator().manual_seed(0)
    pixels = torch.randint(0, 256, (n, 3, side, side), generator=g, dtype=torch.uint8)
    labels = torch.randint(0, 3, (n,), generator=g) if labelled else None
    return TrainingImages(None, pixels, labels, ("a", "b", "c") if labelled else (), f"tiny-{n}-{side}-{labelled}")


def test_full_crop_without_flip_is_the_image():
    x = images()
    out = random_resized_crop(x, torch.Generator().manual_seed(1), scale=(1.0, 1.0), ratio=(1.0, 1.0), flip=False)
    torch.testing.assert_close(out, x, atol=1e-5, rtol=0)


def test_full_crop_flips_half_the_images_exactly():
    x = images(n=200)
    out = random_resized_crop(x, torch.Generator().manual_seed(1), scale=(1.0, 1.0), ratio=(1.0, 1.0))
    mirrored = torch.tensor([torch.allclose(o, i.flip(-1), atol=1e-5) for o, i in zip(out, x)])
    kept = torch.tensor([torch.allclose(o, i, atol=1e-5) for o, i in zip(out, x)])
    assert (mirrored ^ kept).all() and 70 < mirrored.sum() < 130


def test_colour_jitter_of_strength_zero_changes_nothing_and_hue_keeps_grey():
    x = images()
    torch.testing.assert_close(colour_jitter(x, torch.Generator().manual_seed(0), strength=0.0), x, atol=1e-5, rtol=0)
    grey = x[:, :1].expand(-1, 3, -1, -1) * 0.8  # greys stay grey under a hue rotation, brightness scales them
    out = colour_jitter(grey, torch.Generator().manual_seed(0), p=1.0)
    assert torch.allclose(out[:, 0], out[:, 1], atol=1e-5) and torch.allclose(out[:, 1], out[:, 2], atol=1e-5)


def test_colour_jitter_moves_hue_of_saturated_colours():
    red = torch.zeros(64, 3, 4, 4)
    red[:, 0] = 0.8
    out = colour_jitter(red, torch.Generator().manual_seed(0), p=1.0)
    assert (out[:, 1:].amax(dim=(1, 2, 3)) > 0.05).float().mean() > 0.5  # red is no longer pure red


def test_greyscale_is_luma_in_every_channel():
    x = images()
    out = random_greyscale(x, torch.Generator().manual_seed(0), p=1.0)
    luma = 0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]
    for c in range(3):
        torch.testing.assert_close(out[:, c], luma)


def test_nt_xent_matches_its_definition():
    g = torch.Generator().manual_seed(0)
    z1, z2 = torch.randn(5, 4, generator=g), torch.randn(5, 4, generator=g)
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    losses = []
    for i in range(10):
        partner = (i + 5) % 10
        others = [math.exp(float(z[i] @ z[j]) / 0.5) for j in range(10) if j != i]
        losses.append(-math.log(math.exp(float(z[i] @ z[partner]) / 0.5) / sum(others)))
    assert nt_xent(z1, z2, 0.5).item() == pytest.approx(np.mean(losses), rel=1e-5)


def test_sinkhorn_codes_share_the_batch_equally_among_prototypes():
    scores = 0.05 * torch.randn(60, 6, generator=torch.Generator().manual_seed(0))  # cosines / epsilon of order 1
    codes = sinkhorn(scores, iterations=50)
    torch.testing.assert_close(codes.sum(dim=1), torch.ones(60), atol=1e-4, rtol=0)
    torch.testing.assert_close(codes.sum(dim=0), torch.full((6,), 10.0), atol=1e-3, rtol=0)


def test_random_init_features_do_not_vanish():
    scale = feature_scale(make_backbone("resnet8", 0), tiny_images(side=32))
    assert 0.05 < scale < 20


@pytest.mark.parametrize("method", ["byol", "swav", "supervised"])
def test_an_interrupted_run_resumes_to_the_same_weights(tmp_path, method):
    data, config = tiny_images(), TrainConfig(method, epochs=3, batch_size=16, image_size=16)
    whole = train(config, data, tmp_path / "whole", device="cpu", show_progress=False)
    train(config, data, tmp_path / "parts", device="cpu", show_progress=False, stop_after_epochs=1)
    assert not list((tmp_path / "parts").glob("*/backbone.pt"))
    resumed = train(config, data, tmp_path / "parts", device="cpu", show_progress=False)
    a, b = (torch.load(m.backbone_path, weights_only=True)["state_dict"] for m in (whole, resumed))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert resumed.metadata["losses"] == whole.metadata["losses"] and len(whole.metadata["losses"]) == 3
    assert whole.metadata["steps"] == 3 * (64 // 16)


def test_every_method_takes_a_step_and_another_seed_gives_other_weights(tmp_path):
    data = tiny_images()
    for method in METHODS:
        trained = train(
            TrainConfig(method, epochs=1, batch_size=32, image_size=16), data, tmp_path, show_progress=False
        )
        assert np.isfinite(trained.metadata.get("final_loss", 0.0)), method
        assert trained.metadata["steps"] == (0 if method == "random" else 2)
    first = train(TrainConfig("simclr", epochs=1, batch_size=32, image_size=16), data, tmp_path, show_progress=False)
    other = train(TrainConfig("simclr", epochs=1, batch_size=32, image_size=16, seed=1), data, tmp_path)
    assert first.folder != other.folder
    a, b = (torch.load(m.backbone_path, weights_only=True)["state_dict"]["conv1.weight"] for m in (first, other))
    assert not torch.equal(a, b)


def test_a_budget_too_small_for_one_step_is_refused(tmp_path):
    with pytest.raises(InputError, match="64 images make no full batch of 100. Fix: lower --batch-size to at most 64"):
        train(TrainConfig("simclr", batch_size=100, image_size=16), tiny_images(), tmp_path)
    with pytest.raises(InputError, match="supervised method needs labels"):
        train(TrainConfig("supervised", batch_size=16, image_size=16), tiny_images(labelled=False), tmp_path)
    with pytest.raises(InputError, match="unknown method 'moco'. Fix: use one of simclr, simclr-no-colour"):
        TrainConfig("moco")
    assert not list(tmp_path.iterdir())


def write_folder(root, n_per_class=20, side=24):
    rng = np.random.default_rng(0)
    for label in ("cat", "dog"):
        (root / label).mkdir(parents=True)
        for i in range(n_per_class):
            Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)).save(root / label / f"{i}.png")
    return root


def test_train_ssl_then_extract_from_the_command_line(tmp_path, capsys):
    folder = write_folder(tmp_path / "photos")
    args = ["--images", str(folder), "--out", str(tmp_path / "runs"), "--epochs", "1", "--batch-size", "32"]
    assert main(["train-ssl", "--method", "byol", *args]) == 0
    out = capsys.readouterr().out
    assert "byol (non-contrastive): 1 epochs, 1 steps" in out
    weights = next((tmp_path / "runs").glob("byol-*/backbone.pt"))
    assert f"extract --source cifar-resnet20 --weights {weights}" in out
    assert main(["train-ssl", "--method", "byol", *args]) == 0  # reused, not trained again
    assert json.loads((weights.parent / "metadata.json").read_text())["seconds_this_run"] >= 0
    source = get_source("cifar-resnet20", weights=weights)
    assert source.metadata["family"] == "non-contrastive" and source.metadata["trained_method"] == "byol"
    assert main(["extract", "--source", "cifar-resnet20", "--weights", str(weights), "--images", str(folder),
                 "--out", str(tmp_path / "features")]) == 0  # fmt: skip
    assert np.load(tmp_path / "features" / "final.npy").shape == (40, 64)


def test_train_ssl_bad_input_is_one_line(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    folder = write_folder(tmp_path / "photos", n_per_class=4)
    cases = {
        ("--method", "moco", "--images", str(folder)): "unknown method 'moco'",
        ("--method", "simclr", "--images", str(tmp_path / "empty")): "no images found",
        ("--method", "simclr", "--images", str(folder)): "8 images make no full batch of 256",
    }
    for argv, message in cases.items():
        assert main(["train-ssl", *argv, "--out", str(tmp_path / "runs")]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and message in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "runs").exists() or not list((tmp_path / "runs").rglob("*.pt"))


def test_training_images_are_read_as_extract_reads_them(tmp_path):
    folder = write_folder(tmp_path / "photos", n_per_class=3)
    data = load_training_images(folder, 8)
    assert data.pixels.shape == (6, 3, 8, 8) and data.classes == ("cat", "dog")
    assert data.labels.tolist() == [0, 0, 0, 1, 1, 1]
    assert load_training_images(folder, 8).sha256 == data.sha256 != load_training_images(folder, 16).sha256
