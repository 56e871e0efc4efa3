"""Experts' documented rules on hand-made images and hand-made model outputs, against numpy/scipy/torch references."""

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from test_adapters import TinyClip, _tokenize
from torch import nn

from qrp_core.experts import get_expert
from qrp_core.experts.adapters import STYLE_PROMPTS, ClipStyle
from qrp_core.experts.colour import NAMES, rule_names, table_names
from qrp_core.experts.runner import import_labels, label_images
from qrp_core.extract import list_images

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")
LABELS = ["airfield", "bakery", "background", "canyon", "dam"]


def _two_colour(first, second, n_second, side=10):
    image = np.full((side * side, 3), first, np.uint8)
    image[:n_second] = second
    return image.reshape(side, side, 3)


def test_colour_fractions_and_the_threshold_is_inclusive():
    red, blue = (220, 30, 30), (30, 60, 220)
    expert = get_expert("colour")
    images = np.stack([_two_colour(blue, red, 10), _two_colour(blue, red, 9), _two_colour(blue, red, 50)])
    named = [sorted(NAMES[i] for i in a) for a in expert.predict(images)]
    assert named == [["blue", "red"], ["blue"], ["blue", "red"]]  # 10% is enough, 9% is not
    strict = get_expert("colour", threshold=0.6)
    assert [[NAMES[i] for i in a] for a in strict.predict(images)] == [["blue"], ["blue"], []]


def test_colour_rule_borderline_cases_of_its_documented_structure():
    pixels = np.array(
        [
            [
                (125, 135, 150),  # bluish grey, saturation 0.17: blue already (SAT_GREY_BLUE 0.15)
                (150, 135, 125),  # same saturation, orange hue: grey (SAT_GREY 0.2)
                (250, 150, 150),  # light, weakly saturated red: pink
                (150, 130, 20),  # dark yellow (value 0.59 < 0.8): brown
                (240, 220, 30),  # bright yellow: yellow
                (60, 20, 20),
            ]
        ],
        np.uint8,
    )  # dark red, value 0.24 but saturated: keeps its hue
    assert [NAMES[i] for i in rule_names(pixels)[0]] == ["blue", "grey", "pink", "brown", "yellow", "red"]


def test_table_names_index_the_table_by_rgb_over_8():
    rng = np.random.default_rng(0)
    table = rng.integers(0, 11, (32, 32, 32), dtype=np.uint8)
    pixels = rng.integers(0, 256, (3, 5, 3), dtype=np.uint8)
    expected = [[table[r // 8, g // 8, b // 8] for r, g, b in row] for row in pixels.tolist()]
    np.testing.assert_array_equal(table_names(pixels, table), expected)


def _style_reference(images, p):
    """The documented cues with hand-written HSV (colorsys), Rec. 601 luminance and scipy's Laplacian."""
    import colorsys

    from scipy.ndimage import laplace

    out = []
    for image in images.astype(np.float64):
        hsv = np.array([colorsys.rgb_to_hsv(*(px / 255)) for px in image.reshape(-1, 3)])
        sat, val = hsv[:, 1].mean(), hsv[:, 2].mean()
        lum = image @ [0.299, 0.587, 0.114]
        lap = laplace(lum)[1:-1, 1:-1].var()
        cues = [
            sat < p["grey"],
            p["grey"] <= sat < p["low_saturation"],
            sat > p["high_saturation"],
            lap < p["blur"],
            val < p["dark"],
            val > p["bright"],
            (lum / 255).std() < p["low_contrast"],
        ]
        out.append([i for i, c in enumerate(cues) if c])
    return out


def test_style_cues_match_a_hand_computation():
    rng = np.random.default_rng(0)
    side = 24
    grey170 = np.full((side, side, 3), 170, np.uint8)  # value 0.67: neither dark nor bright
    checker = np.where((np.indices((side, side)).sum(0) % 2)[..., None], 100, 180).astype(np.uint8).repeat(3, 2)
    blue_black = np.zeros((side, side, 3), np.uint8)
    blue_black[:, side // 2 :, 2] = 255  # luminance std 0.057 by Rec. 601 weights: low contrast
    noisy = np.clip(128 + rng.normal(0, 2.5, (side, side, 1)), 0, 255).astype(np.uint8).repeat(3, 2)  # lap var ~ 125
    pale = np.full((side, side, 3), (200, 190, 180), np.uint8)  # saturation 0.1: low saturation
    bright = np.full((side, side, 3), (250, 250, 240), np.uint8)
    images = np.stack([grey170, checker, blue_black, noisy, pale, bright])
    style = get_expert("style")
    expected = _style_reference(images, style.params)
    assert style.predict(images) == expected
    names = [[style.labels[i] for i in a] for a in expected]
    assert "bright" not in names[0] and "low contrast" not in names[1] and "low contrast" in names[2]
    assert "blurry" not in names[3] and "low saturation" in names[4] and "bright" in names[5]


def test_text_needs_confidence_and_enough_letters_or_digits():
    expert = get_expert("text")
    reads = [[("ab1", 0.8)], [("ab", 0.99)], [("abc", 0.79)], [("a - b", 0.95), ("x.y.z", 0.9)], []]
    lines = iter(reads)
    expert.lines = lambda image: next(lines)
    assert expert.predict(np.zeros((5, 8, 8, 3), np.uint8)) == [[0], [], [], [0], []]


def test_imagenet_objects_keep_the_top_class_and_classes_at_the_threshold():
    expert = get_expert("imagenet")
    probs = np.full((3, 1000), 0.0, np.float32)
    probs[0, 5] = 0.2  # nothing reaches 0.25: the top class alone
    probs[1, [7, 9, 11]] = (0.5, 0.25, 0.24)
    probs[2, 3] = 1.0
    expert.probabilities = lambda images: probs
    assert expert.predict(np.zeros((3, 4, 4, 3), np.uint8)) == [[5], [7, 9], [3]]


def test_imagenet_probabilities_use_inputs_in_minus_one_to_one():
    expert = get_expert("imagenet")
    images = np.random.default_rng(0).integers(0, 256, (2, 64, 64, 3), dtype=np.uint8)
    x = torch.from_numpy(images.astype(np.float32)).permute(0, 3, 1, 2) / 127.5 - 1.0
    with torch.no_grad():
        expected = torch.softmax(expert.network.model(x), dim=1).numpy()
    np.testing.assert_allclose(expert.probabilities(images), expected, rtol=1e-4, atol=1e-6)


def test_haar_boxes_must_be_a_tenth_of_the_image_side():
    expert = get_expert("haar")
    seen = []

    class Fake:
        def detectMultiScale(self, grey, **kw):  # noqa: N802 (OpenCV's name)
            seen.append(kw["minSize"])
            return [(0, 0, 40, 40)]

    expert.cascades = {name: [Fake()] for name in expert.cascades}
    assert expert.predict(np.zeros((1, 320, 320, 3), np.uint8)) == [[0, 1, 2]]
    assert set(seen) == {(32, 32)}


# --- adapters: models whose outputs are set by hand ---------------------------------------------
class FixedLogits(nn.Module):
    def __init__(self, logits: list[float]):
        super().__init__()
        self.register_buffer("logits", torch.tensor(logits))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits.expand(x.shape[0], -1) + 0 * x.mean()


class FixedDetections(nn.Module):
    """A scripted torchvision detector's convention: (losses, detections)."""

    def forward(self, x: torch.Tensor) -> tuple[dict[str, torch.Tensor], list[dict[str, torch.Tensor]]]:
        out: list[dict[str, torch.Tensor]] = []
        for _ in x:
            out.append(
                {
                    "labels": torch.tensor([1, 3, 4, 2]),
                    "scores": torch.tensor([0.5, 0.49, 0.9, 0.9]),
                    "boxes": torch.zeros(4, 4),
                }
            )
        return {"loss": torch.tensor(0.0)}, out


def _files(tmp_path, module):
    torch.jit.save(torch.jit.script(module), str(tmp_path / "m.pt"))
    (tmp_path / "labels.txt").write_text("\n".join(LABELS) + "\n")
    return {"weights": tmp_path / "m.pt", "labels": tmp_path / "labels.txt", "image_size": 8}


def test_multilabel_threshold_is_inclusive(tmp_path):
    expert = get_expert(
        "multilabel", **_files(tmp_path, FixedLogits([0.0, -0.01, 5.0, 0.01, -5.0])), group="scene", source="SUN"
    )
    assert expert.predict(np.zeros((2, 8, 8, 3), np.uint8)) == [[0, 3], [0, 3]]  # sigmoid(0) = 0.5 counts


def test_detector_takes_the_detections_of_a_losses_detections_pair(tmp_path):
    expert = get_expert("detector", **_files(tmp_path, FixedDetections()), group="objects", source="COCO")
    assert expert.predict(np.zeros((2, 8, 8, 3), np.uint8)) == [[1, 4], [1, 4]]  # score 0.5 counts; 2 is background


class TinyClipOfNorms(TinyClip):
    def encode_text(self, tokens):
        return super().encode_text(tokens) * torch.arange(1, len(tokens) + 1)[:, None]  # prompts of different norms


def test_clip_probabilities_are_a_softmax_of_scaled_cosines():
    torch.manual_seed(0)
    model = TinyClipOfNorms()
    mean, std = (0.2, 0.5, 0.7), (0.3, 0.2, 0.1)
    expert = ClipStyle(model=model, tokenizer=_tokenize, preprocess_size=16, mean=mean, std=std, logit_scale=30.0)
    images = np.random.default_rng(0).integers(0, 256, (6, 16, 16, 3), dtype=np.uint8)
    x = (
        torch.from_numpy(images / 255.0).float().permute(0, 3, 1, 2) - torch.tensor(mean)[:, None, None]
    ) / torch.tensor(std)[:, None, None]
    with torch.no_grad():
        image, text = model.encode_image(x), model.encode_text(_tokenize(list(STYLE_PROMPTS)))
        cos = F.cosine_similarity(image[:, None, :], text[None, :, :], dim=-1)
    np.testing.assert_allclose(expert.probabilities(images), torch.softmax(30.0 * cos, 1).numpy(), rtol=1e-4, atol=1e-6)


def test_clip_threshold_is_inclusive():
    expert = ClipStyle(model=TinyClipOfNorms(), tokenizer=_tokenize, preprocess_size=16)
    probs = np.array([[0.5] + [0.5 / 7] * 7, [0.25] * 2 + [0.5 / 6] * 6], dtype=np.float64)
    expert.probabilities = lambda images: probs
    assert expert.predict(np.zeros((2, 16, 16, 3), np.uint8)) == [[0], []]


# --- the labelling runner and label import -------------------------------------------------------
def _folder(folder, parts, n=6, prefix="im"):
    folder.mkdir()
    for i in range(n):
        red = parts[i % len(parts)]
        Image.fromarray(_two_colour((30, 60, 220), (220, 30, 30), red)).save(folder / f"{prefix}{i}.png")
    return list_images(folder)


def _labelled(path):
    table = pd.read_parquet(path)
    return sorted(zip(table["image_id"], table["concept"]))


def test_labels_are_redone_when_the_expert_or_the_images_change(tmp_path):
    images = _folder(tmp_path / "imgs", [5, 30])
    loose, strict = get_expert("colour", threshold=0.1), get_expert("colour", threshold=0.5)
    for expert in (loose, strict):  # a finished table of other thresholds is not reused
        alone = _labelled(
            label_images(
                expert, images, tmp_path / f"alone-{expert.params['threshold']}", batch_size=2, show_progress=False
            )
        )
        assert _labelled(label_images(expert, images, tmp_path / "shared", batch_size=2, show_progress=False)) == alone
    # an interrupted run's parts are not reused by other thresholds
    label_images(loose, images, tmp_path / "cut", batch_size=2, show_progress=False, stop_after=2)
    assert _labelled(label_images(strict, images, tmp_path / "cut", batch_size=2, show_progress=False)) == _labelled(
        tmp_path / "alone-0.5" / "colour.parquet"
    )
    # nor by other images of the same number
    others = _folder(tmp_path / "others", [30, 5], prefix="other")
    label_images(loose, images, tmp_path / "cut2", batch_size=2, show_progress=False, stop_after=2)
    got = _labelled(label_images(loose, others, tmp_path / "cut2", batch_size=2, show_progress=False))
    assert got == _labelled(label_images(loose, others, tmp_path / "others-alone", batch_size=2, show_progress=False))
    assert ("other0.png", "[Color] red") in got and ("other1.png", "[Color] red") not in got


def test_imported_labels_are_strings_and_missing_cells_are_absent(tmp_path):
    pd.DataFrame({"image_id": [1, 2], "concept": [7, 8], "group": ["objects", "objects"], "extra": [0, 0]}).to_csv(
        tmp_path / "long.csv", index=False
    )
    long = import_labels(tmp_path / "long.csv")
    assert list(long.columns) == ["image_id", "concept", "group"]
    assert long.values.tolist() == [["1", "7", "objects"], ["2", "8", "objects"]]
    pd.DataFrame({"image_id": ["a", "b", "c"], "sea": [1, None, 0], "sky": [None, 1, 1]}).to_csv(
        tmp_path / "wide.csv", index=False
    )
    wide = import_labels(tmp_path / "wide.csv", group="scene")
    assert sorted(zip(wide["image_id"], wide["concept"], wide["group"])) == [
        ("a", "sea", "scene"),
        ("b", "sky", "scene"),
        ("c", "sky", "scene"),
    ]


def test_labels_are_redone_for_other_files_under_the_same_names(tmp_path):
    """Another folder whose images carry the same names (im0.png, ...) is another image set: neither the
    finished table nor an interrupted run's parts are reused for it."""
    expert = get_expert("colour", threshold=0.1)
    first = _folder(tmp_path / "first", [5, 30])
    second = _folder(tmp_path / "second", [30, 5])  # same names, the red share swapped
    alone = _labelled(label_images(expert, second, tmp_path / "second-alone", batch_size=2, show_progress=False))
    assert alone != _labelled(label_images(expert, first, tmp_path / "out", batch_size=2, show_progress=False))
    assert _labelled(label_images(expert, second, tmp_path / "out", batch_size=2, show_progress=False)) == alone
    label_images(expert, first, tmp_path / "cut", batch_size=2, show_progress=False, stop_after=2)
    assert _labelled(label_images(expert, second, tmp_path / "cut", batch_size=2, show_progress=False)) == alone
