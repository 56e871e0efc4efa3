"""Images into network inputs and features, checked against hand computations (PIL, numpy, torch)."""

import numpy as np
import pytest
import torch
from PIL import Image
from test_checkpoints import TinyResNet, _reference, _trunk

from qrp_core.checkpoints import load_backbone
from qrp_core.errors import InputError
from qrp_core.extract import extract, list_images, load_batch, pool, read_images
from qrp_core.networks import get_source


def _save(folder, arrays, mode=None):
    folder.mkdir(parents=True, exist_ok=True)
    for i, a in enumerate(arrays):
        Image.fromarray(a, mode).save(folder / f"{i:02d}.png")
    return list_images(folder)


def test_load_batch_is_x_minus_mean_over_std_per_channel(tmp_path):
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)  # not square: a swapped H/W shows
    images = _save(tmp_path / "imgs", [a])
    mean, std = (0.1, 0.4, 0.7), (0.5, 0.25, 0.125)
    x = load_batch(images.paths, 9, mean, std)
    resized = np.asarray(Image.fromarray(a).resize((9, 9), Image.BILINEAR), dtype=np.float64) / 255.0
    expected = (resized - np.array(mean)) / np.array(std)  # (9, 9, 3)
    assert x.shape == (1, 3, 9, 9) and x.dtype == torch.float32
    np.testing.assert_allclose(x[0].permute(1, 2, 0).numpy(), expected, rtol=1e-5, atol=1e-5)


def test_read_images_resizes_bilinearly_and_makes_greyscale_rgb(tmp_path):
    rng = np.random.default_rng(1)
    colour = rng.integers(0, 256, (12, 20, 3), dtype=np.uint8)
    grey = rng.integers(0, 256, (10, 10), dtype=np.uint8)
    _save(tmp_path / "imgs", [colour])
    _save(tmp_path / "imgs", [grey], "L")  # overwrites 00.png
    Image.fromarray(colour).save(tmp_path / "imgs" / "01.png")
    got = read_images(list_images(tmp_path / "imgs").paths, 6)
    assert got.shape == (2, 6, 6, 3) and got.dtype == np.uint8
    small = np.asarray(Image.fromarray(grey).resize((6, 6), Image.BILINEAR))
    for c in range(3):
        np.testing.assert_array_equal(got[0, ..., c], small)
    np.testing.assert_array_equal(got[1], np.asarray(Image.fromarray(colour).resize((6, 6), Image.BILINEAR)))


def test_pool_averages_conv_maps_and_keeps_the_cls_token():
    maps = torch.arange(2 * 3 * 4 * 5, dtype=torch.float32).reshape(2, 3, 4, 5) ** 1.5
    np.testing.assert_allclose(pool(maps).numpy(), maps.numpy().mean(axis=(2, 3)), rtol=1e-6)
    tokens = torch.randn(2, 7, 4)
    assert torch.equal(pool(tokens), tokens[:, 0])
    assert pool(torch.ones(2, 3, 1, 1)).shape == (2, 3)


def test_cifar_resnet_layers_are_pooled_outputs_of_their_blocks(tmp_path):
    rng = np.random.default_rng(2)
    images = _save(tmp_path / "imgs", [rng.integers(0, 256, (32, 32, 3), dtype=np.uint8) for _ in range(3)])
    source = get_source("cifar-resnet20", seed=0)
    files = extract(source, images, tmp_path / "out", batch_size=2, show_progress=False)
    model = source.model
    with torch.no_grad():
        x = load_batch(images.paths, 32, source.mean, source.std)
        h = torch.relu(model.bn1(model.conv1(x)))
        l1 = model.layer1(h)
        l2 = model.layer2(l1)
        l3 = model.layer3(l2)
    expected = {"layer1": l1.mean((2, 3)), "layer2": l2.mean((2, 3)), "final": l3.mean((2, 3))}
    for layer, value in expected.items():
        np.testing.assert_allclose(np.load(files[layer]), value.numpy(), rtol=1e-4, atol=1e-5, err_msg=layer)
    assert np.load(files["layer1"]).shape == (3, 16) and np.load(files["layer2"]).shape == (3, 32)


def test_efficientnet_lite_blocks_are_the_named_blocks(tmp_path):
    rng = np.random.default_rng(3)
    source = get_source("efficientnet-lite0", pretrained=False, blocks=(2,))
    images = _save(tmp_path / "imgs", [rng.integers(0, 256, (source.image_size,) * 2 + (3,), dtype=np.uint8)])
    files = extract(source, images, tmp_path / "out", show_progress=False)
    out = []
    handle = source.model._blocks[2].register_forward_hook(lambda _m, _i, o: out.append(o))
    with torch.no_grad():
        source.model(load_batch(images.paths, source.image_size, (0.5,) * 3, (0.5,) * 3))
    handle.remove()
    np.testing.assert_allclose(np.load(files["block2"]), out[0].mean((2, 3)).numpy(), rtol=1e-4, atol=1e-5)


def test_random_inits_differ_between_seeds():
    a = get_source("cifar-resnet20", seed=1).model.conv1.weight
    b = get_source("cifar-resnet20", seed=2).model.conv1.weight
    assert not torch.equal(a, b)
    c = get_source("efficientnet-lite0", pretrained=False, seed=1).model._conv_stem.weight
    d = get_source("efficientnet-lite0", pretrained=False, seed=2).model._conv_stem.weight
    e = get_source("efficientnet-lite0", pretrained=False, seed=1).model._conv_stem.weight
    assert not torch.equal(c, d) and torch.equal(c, e)


def test_pixels_baseline_is_the_mean_of_each_cell(tmp_path):
    a = np.zeros((64, 64, 3), np.uint8)
    a[:, :16, 0] = 255  # the left quarter red: cells of side 2 over 4x4 px cells
    a[:, :, 2] = np.arange(64, dtype=np.uint8)[None, :] * 4  # a blue ramp
    images = _save(tmp_path / "imgs", [a])
    got = np.load(extract(get_source("pixels", side=2), images, tmp_path / "out", show_progress=False)["final"])
    expected = (a.astype(np.float64) / 255).reshape(2, 32, 2, 32, 3).mean(axis=(1, 3))  # (2, 2, 3)
    np.testing.assert_allclose(got[0], expected.transpose(2, 0, 1).ravel(), rtol=1e-5, atol=1e-6)


def test_a_changed_image_size_starts_extraction_afresh(tmp_path):
    rng = np.random.default_rng(4)
    images = _save(tmp_path / "imgs", [rng.integers(0, 256, (40, 40, 3), dtype=np.uint8) for _ in range(4)])
    extract(
        get_source("pixels", side=8, image_size=16),
        images,
        tmp_path / "out",
        batch_size=2,
        show_progress=False,
        stop_after=1,
    )  # interrupted
    big = get_source("pixels", side=8, image_size=40)
    mixed = np.load(extract(big, images, tmp_path / "out", batch_size=2, show_progress=False)["final"])
    alone = np.load(extract(big, images, tmp_path / "alone", batch_size=2, show_progress=False)["final"])
    np.testing.assert_array_equal(mixed, alone)


def test_labels_only_when_every_image_is_in_a_class_folder(tmp_path):
    a = np.zeros((4, 4, 3), np.uint8)
    (tmp_path / "imgs" / "cat").mkdir(parents=True)
    Image.fromarray(a).save(tmp_path / "imgs" / "cat" / "x.png")
    Image.fromarray(a).save(tmp_path / "imgs" / "loose.JPG")
    (tmp_path / "imgs" / "notes.txt").write_text("not an image")
    images = list_images(tmp_path / "imgs")
    assert images.ids == ("cat/x.png", "loose.JPG") and images.labels is None
    assert list(images.table().columns) == ["image_id", "path"]  # no label column


def test_a_checkpoint_missing_a_backbone_tensor_is_refused(tmp_path):
    trunk = _trunk(_reference())
    trunk.pop("bn1.running_var")
    torch.save({"state_dict": {f"module.encoder_q.{k}": v for k, v in trunk.items()}}, tmp_path / "short.pth")
    with pytest.raises(InputError, match=r"does not fit the architecture: missing \['bn1.running_var'\]"):
        load_backbone(TinyResNet(with_fc=False), tmp_path / "short.pth")
    # only num_batches_tracked (absent from old checkpoints) may be missing
    trunk = {k: v for k, v in _trunk(_reference()).items() if not k.endswith("num_batches_tracked")}
    torch.save(trunk, tmp_path / "old.pth")
    model = TinyResNet(with_fc=False)
    assert load_backbone(model, tmp_path / "old.pth")["found"] == "plain state dict"
    assert torch.equal(model.bn1.running_var, trunk["bn1.running_var"])


def test_a_head_that_the_model_has_is_loaded_not_dropped(tmp_path):
    ref = _reference()
    torch.save(ref.state_dict(), tmp_path / "full.pth")
    model = TinyResNet(with_fc=True)
    report = load_backbone(model, tmp_path / "full.pth")
    assert report["left_out"] == [] and torch.equal(model.fc.weight, ref.fc.weight)


def test_other_images_under_the_same_names_start_extraction_afresh(tmp_path):
    rng = np.random.default_rng(5)
    first = _save(tmp_path / "first", [rng.integers(0, 256, (40, 40, 3), dtype=np.uint8) for _ in range(4)])
    second = _save(tmp_path / "second", [rng.integers(0, 256, (40, 40, 3), dtype=np.uint8) for _ in range(4)])
    assert first.ids == second.ids
    source = get_source("pixels", side=8, image_size=16)
    extract(source, first, tmp_path / "out", batch_size=2, show_progress=False, stop_after=1)  # interrupted
    mixed = np.load(extract(source, second, tmp_path / "out", batch_size=2, show_progress=False)["final"])
    alone = np.load(extract(source, second, tmp_path / "alone", batch_size=2, show_progress=False)["final"])
    np.testing.assert_array_equal(mixed, alone)
