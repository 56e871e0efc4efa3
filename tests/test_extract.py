"""Feature extraction with real weights on real images from ../shared/data (skipped where it is absent)."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from qrp_core.errors import InputError
from qrp_core.extract import ImageList, extract, list_images, load_batch
from qrp_core.networks import get_source, list_sources

SHARED = Path(__file__).resolve().parents[2] / "shared"
IMAGENETTE = SHARED / "data" / "imagenette-val"
CIFAR = SHARED / "data" / "cifar10-test"
RESNET20 = SHARED / "models" / "cifar10-resnet" / "resnet20-12fca82f.th"
IMAGENET_INDEX = {
    "n01440764": 0,
    "n02102040": 217,
    "n02979186": 482,
    "n03000684": 491,
    "n03028079": 497,
    "n03394916": 566,
    "n03417042": 569,
    "n03425413": 571,
    "n03445777": 574,
    "n03888257": 701,
}
needs_shared = pytest.mark.skipif(not IMAGENETTE.is_dir(), reason=f"needs the shared data folder {SHARED}/data")


def _subset(images: ImageList, indices) -> ImageList:
    labels = None if images.labels is None else tuple(images.labels[i] for i in indices)
    return ImageList(
        images.root, tuple(images.paths[i] for i in indices), tuple(images.ids[i] for i in indices), labels
    )


def _first_per_class(images: ImageList, n: int) -> list[int]:
    return [
        i for c in sorted(set(images.labels)) for i in [j for j, label in enumerate(images.labels) if label == c][:n]
    ]


@needs_shared
def test_efficientnet_lite0_recognises_imagenette():
    images = list_images(IMAGENETTE)
    chosen = _first_per_class(images, 10)  # the first ten files of each class
    source = get_source("efficientnet-lite0")
    x = load_batch([images.paths[i] for i in chosen], source.image_size, source.mean, source.std)
    with torch.inference_mode():
        logits = source.model(x)
    truth = torch.tensor([IMAGENET_INDEX[images.labels[i]] for i in chosen])
    # measured on these 100 images: top-1 of 1000 classes 0.67 (cassette player and church are hard),
    # top-5 0.91, and 0.98 among the ten Imagenette classes
    assert (logits.argmax(1) == truth).float().mean() >= 0.6
    assert (logits.topk(5).indices == truth[:, None]).any(1).float().mean() >= 0.85
    ten = torch.tensor(sorted(IMAGENET_INDEX.values()))
    assert (ten[logits[:, ten].argmax(1)] == truth).float().mean() >= 0.9


@needs_shared
def test_cifar_resnet20_from_its_state_dict():
    images = list_images(CIFAR)
    chosen = np.random.default_rng(0).choice(len(images.paths), 200, replace=False)
    source = get_source("cifar-resnet20", weights=RESNET20)
    x = load_batch([images.paths[i] for i in chosen], 32, source.mean, source.std)
    with torch.inference_mode():
        predicted = source.model(x).argmax(1).numpy()
    classes = np.array(sorted(set(images.labels)))
    assert np.mean(classes[predicted] == np.array(images.labels)[chosen]) >= 0.75


@needs_shared
def test_extraction_resumes_without_recomputing_and_gives_identical_features(tmp_path, monkeypatch):
    images = _subset(list_images(CIFAR), range(0, 10000, 100))  # 100 images
    source = get_source("cifar-resnet20", weights=RESNET20)
    whole = extract(source, images, tmp_path / "whole", batch_size=16, show_progress=False)
    partial_dir = tmp_path / "resumed"
    extract(source, images, partial_dir, batch_size=16, show_progress=False, stop_after=3)  # interrupted
    calls = []
    original = source.model.forward
    monkeypatch.setattr(source.model, "forward", lambda x: calls.append(len(x)) or original(x))
    resumed = extract(source, images, partial_dir, batch_size=16, show_progress=False)
    assert len(calls) == 7 - 3  # 7 batches in all, 3 were done
    for layer in ("final", "layer1", "layer2"):
        np.testing.assert_array_equal(np.load(whole[layer]), np.load(resumed[layer]))
    final = np.load(whole["final"])
    assert final.shape == (100, 64) and np.isfinite(final).all()


@needs_shared
def test_other_weights_in_the_same_folder_start_afresh(tmp_path):
    images = _subset(list_images(CIFAR), range(0, 10000, 250))  # 40 images
    state = torch.load(RESNET20, map_location="cpu", weights_only=True)
    state["state_dict"] = {k: v * 1.5 if k.endswith("conv1.weight") else v for k, v in state["state_dict"].items()}
    torch.save(state, tmp_path / "other.th")
    first = get_source("cifar-resnet20", weights=RESNET20)
    extract(first, images, tmp_path / "out", batch_size=16, show_progress=False, stop_after=2)  # interrupted
    other = get_source("cifar-resnet20", weights=tmp_path / "other.th")
    assert other.metadata["checkpoint_sha256"] != first.metadata["checkpoint_sha256"]
    mixed = np.load(extract(other, images, tmp_path / "out", batch_size=16, show_progress=False)["final"])
    alone = np.load(extract(other, images, tmp_path / "alone", batch_size=16, show_progress=False)["final"])
    np.testing.assert_array_equal(mixed, alone)


def test_baselines_and_registry(tmp_path):
    from PIL import Image

    for i, colour in enumerate([(255, 0, 0), (0, 0, 255)]):
        (tmp_path / "imgs" / f"c{i}").mkdir(parents=True)
        Image.new("RGB", (40, 30), colour).save(tmp_path / "imgs" / f"c{i}" / "a.png")
    images = list_images(tmp_path / "imgs")
    assert images.ids == ("c0/a.png", "c1/a.png") and images.labels == ("c0", "c1")
    hist = np.load(extract(get_source("colour-histogram"), images, tmp_path / "h", show_progress=False)["final"])
    assert hist.shape == (2, 512)
    np.testing.assert_allclose(hist.sum(1), 1.0)
    assert hist[0].argmax() == 7 * 64 and hist[1].argmax() == 7  # pure red / pure blue bins
    pixels = np.load(extract(get_source("pixels", side=4), images, tmp_path / "p", show_progress=False)["final"])
    np.testing.assert_allclose(pixels[0].reshape(3, 16)[0], 1.0, atol=1e-6)  # red channel full
    assert {"efficientnet-lite0", "cifar-resnet56", "pixels"} <= set(list_sources())
    with pytest.raises(InputError, match="unknown model source 'resnet-9000'"):
        get_source("resnet-9000")
    with pytest.raises(InputError, match="checkpoint not found"):
        get_source("cifar-resnet20", weights=tmp_path / "nope.th")


def test_random_init_is_seeded():
    a = get_source("cifar-resnet20", seed=3).model.conv1.weight
    b = get_source("cifar-resnet20", seed=3).model.conv1.weight
    assert torch.equal(a, b)


def test_a_random_efficientnet_gives_features_of_order_one():
    """EfficientNet's own init (normal, variance 2 / fan-out, a depthwise kernel's fan-out its area): the
    package's default left a random Lite0's pooled features near 1e-9, so every dimension looked constant."""
    x = torch.rand(8, 3, 224, 224, generator=torch.Generator().manual_seed(0)) * 2 - 1
    pooled = []
    for seed in (0, 0, 1):
        source = get_source("efficientnet-lite0", pretrained=False, seed=seed)
        captured = {}
        source.model.get_submodule(source.layers["final"]).register_forward_hook(
            lambda _m, _i, out, captured=captured: captured.__setitem__("x", out.flatten(1))
        )
        with torch.no_grad():
            source.model(x)
        pooled.append(captured["x"])
    assert torch.equal(pooled[0], pooled[1]) and not torch.equal(pooled[0], pooled[2])  # seeded
    assert 0.1 < float(pooled[0].abs().mean()) < 10  # order 1, not 1e-9
    assert float((pooled[0].std(0) > 1e-3).float().mean()) > 0.9  # and varying between images


@needs_shared
def test_cifar10_demo_study_is_built_from_real_images(tmp_path):
    from qrp_core.cache import Cache
    from qrp_core.config import KMeansConfig, ProbeConfig, RunConfig
    from qrp_core.demos.photos import build_photo_study
    from qrp_core.pipeline import Runner

    images = tmp_path / "images"
    for label in sorted(p.name for p in CIFAR.iterdir()):
        (images / label).mkdir(parents=True)
        for name in sorted(p.name for p in (CIFAR / label).iterdir())[:6]:
            (images / label / name).symlink_to(CIFAR / label / name)  # read in place, never copied
    study = build_photo_study(
        "cifar10",
        images,
        tmp_path / "study",
        weights_dir=RESNET20.parent,
        dtd_root=SHARED / "data" / "dtd10",
        show_progress=False,
    )
    assert set(study.models) == {"resnet20", "resnet32", "resnet44", "resnet56", "resnet20-random", "pixels"}
    assert study.features("resnet56").shape == (60, 64) and study.features("pixels").shape == (60, 768)
    # ground truth; ImageNet objects; style; colour + DTD
    assert study.concepts.group_names == ("labels", "objects", "other", "texture")
    assert all(n.startswith("[ImageNet] ") for n in study.concepts.select(("objects",)).names)
    texture = study.concepts.select(("texture",))
    assert any(n.startswith("[DTD] ") for n in texture.names) and any(n.startswith("[Color] ") for n in texture.names)
    assert len(study.concepts.select(("labels",)).names) == 10
    assert all((tmp_path / "study" / p).stat().st_size < 5000 for p in study.image_paths)  # small thumbnails
    config = RunConfig(
        ks=(10,),
        seeds=(0,),
        group_sets=(("labels",),),
        kmeans=KMeansConfig(n_iter=10, n_restarts=2),
        probe=ProbeConfig(max_epochs=10),
    )
    results = Runner(study, config, Cache(tmp_path / "cache"), show_progress=False).run().set_index("model")
    # trained features cluster by class, random ones do not
    assert results.loc["resnet56", "nmi"] > results.loc["resnet20-random", "nmi"]


def test_any_named_module_becomes_a_representation(tmp_path, capsys):
    from PIL import Image

    from qrp_core.cli import main

    rng = np.random.default_rng(0)
    (tmp_path / "imgs").mkdir()
    for i in range(6):
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(tmp_path / "imgs" / f"{i}.png")
    assert (
        main(
            [
                "extract",
                "--source",
                "cifar-resnet20",
                "--images",
                str(tmp_path / "imgs"),
                "--out",
                str(tmp_path / "out"),
                "--layers",
                "layer3",
                "layer2.1",
            ]
        )
        == 0
    )
    images = pd.read_csv(tmp_path / "out" / "images.csv")  # a study's image table, paths and all
    assert images["image_id"].tolist() == [f"{i}.png" for i in range(6)]
    assert images["path"].tolist() == [str((tmp_path / "imgs" / f"{i}.png").resolve()) for i in range(6)]
    features = {layer: np.load(tmp_path / "out" / f"{layer}.npy") for layer in ("final", "layer3", "layer2.1")}
    assert features["layer3"].shape == (6, 64) and features["layer2.1"].shape == (6, 32)
    np.testing.assert_allclose(features["layer3"], features["final"], rtol=1e-5, atol=1e-6)  # pooled layer3 is final
    with pytest.raises(InputError, match="cifar-resnet20 has no submodule 'layer9'.*top level: conv1, bn1"):
        from qrp_core.networks import with_layers

        with_layers(get_source("cifar-resnet20"), ["layer9"])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_extraction_in_mixed_precision_matches_the_cpu(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    (tmp_path / "imgs").mkdir()
    for i in range(40):
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(tmp_path / "imgs" / f"{i:02d}.png")
    images = list_images(tmp_path / "imgs")
    source = get_source("cifar-resnet20")  # random init: no weights needed
    cpu = np.load(extract(source, images, tmp_path / "cpu", device="cpu", show_progress=False)["final"])
    cuda = np.load(extract(source, images, tmp_path / "cuda", device="cuda", show_progress=False)["final"])
    assert json.loads((tmp_path / "cuda" / "progress.json").read_text())["device"].startswith("cuda")
    np.testing.assert_allclose(cuda, cpu, rtol=0.05, atol=0.02 * np.abs(cpu).max())  # bfloat16 autocast


def test_a_second_source_into_the_same_folder_is_refused_and_the_first_kept(tmp_path, capsys):
    import hashlib

    from PIL import Image

    from qrp_core.cli import main

    rng = np.random.default_rng(0)
    (tmp_path / "imgs").mkdir()
    for i in range(6):
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(tmp_path / "imgs" / f"{i}.png")
    torch.manual_seed(0)
    from qrp_core.networks import CifarResNet

    state = CifarResNet(20).state_dict()
    torch.save(state, tmp_path / "resnet20.th")
    common = ["--images", str(tmp_path / "imgs"), "--out", str(tmp_path / "out")]
    weights = ["--source", "cifar-resnet20", "--weights", str(tmp_path / "resnet20.th")]
    assert main(["extract", *weights, *common]) == 0
    out = capsys.readouterr().out
    assert f"checkpoint {tmp_path / 'resnet20.th'}, checkpoint_sha256 " in out and f"keys_matched {len(state)}," in out
    digest = hashlib.sha256((tmp_path / "out" / "final.npy").read_bytes()).hexdigest()
    assert main(["extract", *weights, *common]) == 0  # the same run again: nothing to do
    capsys.readouterr()
    assert main(["extract", "--source", "pixels", *common]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "already holds features of cifar-resnet20" in err
    assert "resnet20.th; 1 of 1 batches) from these images" in err and "Fix: pass another --out" in err
    assert hashlib.sha256((tmp_path / "out" / "final.npy").read_bytes()).hexdigest() == digest
