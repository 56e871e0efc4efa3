"""Adapters for the paper's experts, each run end to end on a tiny random model of its interface."""

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from torch import nn

from conftest import optional_library
from qrp_core.cache import sha256_file
from qrp_core.errors import InputError
from qrp_core.experts import get_expert
from qrp_core.experts.adapters import STYLE_PROMPTS, ClipStyle, read_label_file
from qrp_core.experts.runner import label_images
from qrp_core.extract import list_images

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")

LABELS = ["/a/airfield 0", "/b/bakery/shop 1", "background 2", "/c/canyon 3", "/d/dam 4"]


def _save(module: nn.Module, path) -> str:
    torch.manual_seed(0)
    torch.jit.save(torch.jit.script(module), str(path))
    return str(path)


def _labels(tmp_path, names=LABELS) -> str:
    (tmp_path / "labels.txt").write_text("\n".join(names) + "\n")
    return str(tmp_path / "labels.txt")


def _images(n=12, side=32, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, side, side, 3), dtype=np.uint8)


def _normalised(images: np.ndarray) -> torch.Tensor:
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0
    return (x - torch.tensor((0.485, 0.456, 0.406)).view(1, 3, 1, 1)) / torch.tensor((0.229, 0.224, 0.225)).view(
        1, 3, 1, 1
    )


def _tiny_classifier(n_classes=5) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, n_classes)).eval()


def test_label_files_drop_indices_and_places_folders(tmp_path):
    assert read_label_file(_labels(tmp_path)) == ["airfield", "bakery/shop", "background", "canyon", "dam"]


def test_classifier_gives_the_top_class_and_never_background(tmp_path):
    model = _tiny_classifier()
    with torch.no_grad():
        model[-1].bias.copy_(torch.tensor([0.0, 0.0, 0.3, 0.0, 0.0]))  # background wins sometimes
    expert = get_expert(
        "classifier",
        weights=_save(model, tmp_path / "m.pt"),
        labels=_labels(tmp_path),
        group="scene",
        source="Places",
        image_size=32,
    )
    images = _images()
    top = model(_normalised(images)).argmax(1).tolist()
    assert expert.predict(images) == [[] if t == 2 else [t] for t in top]
    assert 2 in top and expert.concept_names[0] == "[Places] airfield" and expert.name == "places"


def test_multilabel_thresholds_sigmoids_of_an_exported_program(tmp_path):
    model = _tiny_classifier()
    program = torch.export.export(model, (torch.randn(2, 3, 32, 32),), dynamic_shapes=({0: torch.export.Dim("batch")},))
    torch.export.save(program, str(tmp_path / "m.pt2"))
    expert = get_expert(
        "multilabel",
        weights=tmp_path / "m.pt2",
        labels=_labels(tmp_path),
        group="scene",
        source="SUN",
        image_size=32,
        threshold=0.5,
    )
    images = _images(n=40)  # two batches, the second smaller
    on = (torch.sigmoid(model(_normalised(images))) >= 0.5).numpy()
    on[:, 2] = False  # the background class
    assert expert.predict(images) == [np.flatnonzero(row).tolist() for row in on]


class TinyDetector(nn.Module):
    """Per image: class (brightness bucket) with score = brightness, and class 1 with score 0.4."""

    def forward(self, x: torch.Tensor) -> list[dict[str, torch.Tensor]]:
        out: list[dict[str, torch.Tensor]] = []
        for image in x:
            level = torch.sigmoid(image.mean())
            label = torch.clamp((level * 5).long(), 0, 4)
            out.append(
                {
                    "labels": torch.stack([label, torch.tensor(1)]),
                    "scores": torch.stack([level, torch.tensor(0.4)]),
                    "boxes": torch.zeros(2, 4),
                }
            )
        return out


def test_detector_keeps_classes_scored_at_least_half(tmp_path):
    expert = get_expert(
        "detector",
        weights=_save(TinyDetector(), tmp_path / "d.pt"),
        labels=_labels(tmp_path),
        group="objects",
        source="OpenImages",
        image_size=16,
    )
    images = np.stack([np.full((16, 16, 3), v, np.uint8) for v in (0, 90, 160, 255)])
    level = torch.sigmoid(_normalised(images).mean((1, 2, 3)))
    expected = [[int(min(int(v * 5), 4))] if v >= 0.5 and int(v * 5) != 2 else [] for v in level.tolist()]
    assert expert.predict(images) == expected
    assert any(expected) and not any(1 in e for e in expected)  # class 1's 0.4 never counts


def test_segmenter_returns_every_predicted_class(tmp_path):
    torch.manual_seed(0)
    model = nn.Conv2d(3, 5, 1).eval()
    expert = get_expert(
        "segmenter",
        weights=_save(model, tmp_path / "s.pt"),
        labels=_labels(tmp_path),
        group="material",
        source="COCO-stuff",
        image_size=8,
    )
    images = _images(side=8)
    per_pixel = model(_normalised(images)).argmax(1).numpy()
    expected = [sorted(set(np.unique(p).tolist()) - {2}) for p in per_pixel]
    assert expert.predict(images) == expected
    assert max(len(e) for e in expected) > 1


class TinyClip(nn.Module):
    def __init__(self):
        super().__init__()
        self.image = nn.Sequential(nn.Conv2d(3, 6, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.text = nn.EmbeddingBag(64, 6, mode="mean")

    def encode_image(self, x):
        return self.image(x)

    def encode_text(self, tokens):
        return self.text(tokens)


def _tokenize(texts):
    return torch.tensor([[ord(c) % 64 for c in (t + " " * 60)[:60]] for t in texts])


def test_clip_style_picks_a_prompt_or_background():
    torch.manual_seed(0)
    expert = ClipStyle(model=TinyClip(), tokenizer=_tokenize, preprocess_size=16, logit_scale=100.0)
    assert len(expert.concept_names) == 8 and expert.concept_names[3] == "[CLIP] macro photography"
    assert list(expert.labels) == list(STYLE_PROMPTS)
    images = _images(n=20, side=16)
    probs = expert.probabilities(images)
    np.testing.assert_allclose(probs.sum(1), 1.0, rtol=1e-5)
    assert expert.predict(images) == [[int(p.argmax())] if p.max() >= 0.5 else [] for p in probs]
    assert any(expert.predict(images)) and not all(expert.predict(images))  # some styles, some background


def test_adapter_errors_name_the_file_and_fix(tmp_path):
    weights = _save(_tiny_classifier(n_classes=4), tmp_path / "m.pt")
    expert = get_expert("classifier", weights=weights, labels=_labels(tmp_path), group="scene", source="Places")
    with pytest.raises(InputError, match="gives 4 classes but the label file names 5"):
        expert.predict(_images(n=2, side=224))
    (tmp_path / "broken.pt").write_bytes(b"not a model")
    with pytest.raises(InputError, match="cannot load the model"):
        get_expert("classifier", weights=tmp_path / "broken.pt", labels=_labels(tmp_path), group="scene", source="X")


def test_an_adapter_labels_a_folder_into_its_group(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    for i, image in enumerate(_images(n=7)):
        Image.fromarray(image).save(folder / f"im{i}.png")
    expert = get_expert(
        "classifier",
        weights=_save(_tiny_classifier(), tmp_path / "m.pt"),
        labels=_labels(tmp_path),
        group="scene",
        source="Places",
        image_size=32,
    )
    table = pd.read_parquet(label_images(expert, list_images(folder), tmp_path / "out", show_progress=False))
    assert set(table["group"]) == {"scene"} and table["concept"].str.startswith("[Places] ").all()
    assert (tmp_path / "out" / "places.json").is_file() and len(table) <= 7


def test_label_verb_runs_adapters(tmp_path, capsys):
    from qrp_core.cli import main

    folder = tmp_path / "images"
    folder.mkdir()
    for i, image in enumerate(_images(n=5)):
        Image.fromarray(image).save(folder / f"im{i}.png")
    model = _save(_tiny_classifier(), tmp_path / "m.pt")
    assert (
        main(
            [
                "label",
                "--images",
                str(folder),
                "--experts",
                "",
                "--out",
                str(tmp_path / "out"),
                "--adapter",
                "classifier",
                model,
                _labels(tmp_path),
                "scene",
                "Places",
                "--adapter",
                "segmenter",
                _save(nn.Conv2d(3, 5, 1), tmp_path / "s.pt"),
                _labels(tmp_path),
                "material",
                "COCO-stuff",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "places:" in out and "coco-stuff:" in out
    assert pd.read_parquet(tmp_path / "out" / "coco-stuff.parquet")["group"].eq("material").all()


def test_open_clip_weights_label_like_the_model_itself(tmp_path):
    open_clip = optional_library("open_clip", reason="open_clip is optional (it needs torchvision)")
    torch.manual_seed(0)
    reference = open_clip.create_model("ViT-S-32", pretrained=None).eval()  # 63M parameters, random
    torch.save(reference.state_dict(), tmp_path / "clip.bin")
    expert = get_expert("clip", architecture="ViT-S-32", weights=tmp_path / "clip.bin")
    assert expert.image_size == 224 and expert.params["weights_sha256"] == sha256_file(tmp_path / "clip.bin")
    images = _images(n=3, side=224)
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0
    x = (x - torch.tensor(open_clip.OPENAI_DATASET_MEAN).view(1, 3, 1, 1)) / torch.tensor(
        open_clip.OPENAI_DATASET_STD
    ).view(1, 3, 1, 1)
    with torch.no_grad():
        image = nn.functional.normalize(reference.encode_image(x), dim=-1)
        text = nn.functional.normalize(
            reference.encode_text(open_clip.get_tokenizer("ViT-S-32")(list(STYLE_PROMPTS))), dim=-1
        )
    expected = torch.softmax(100.0 * image @ text.T, dim=1).numpy()
    np.testing.assert_allclose(expert.probabilities(images), expected, rtol=1e-4, atol=1e-6)
    with pytest.raises(InputError, match="cannot load CLIP ViT-B-32"):
        get_expert("clip", architecture="ViT-B-32", weights=tmp_path / "clip.bin")
