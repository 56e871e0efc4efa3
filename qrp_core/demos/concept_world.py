"""Concept world: drawn images whose concepts are known exactly, seen by real and planted representations.

Each image shows one or two shapes of one colour, texture and size on a plain background. The
factors are the concepts: shape is the ground-truth label (base group), and colour, texture,
background (``scene``) and size and count (``other``) are expert groups. Representations:

* ``lite0`` – EfficientNet-Lite0's ImageNet features of the image (real network, real weights);
* ``lite0-random`` – the same network randomly initialised;
* ``pixels`` and ``colour-histogram`` – baselines without learning;
* ``combo-code`` – planted, not extracted: a 2-D code with one point per (shape, colour), laid out so
  shape is linearly decodable and colour is not (the paper's Fig. 2b): its clusters are "red square",
  "blue star", ..., which a forward linear probe for colour misses and the reverse probe explains.

Every model's metadata records ``linear_acc``: a forward linear probe (logistic regression, 80/20
split) for the shape label on its features, measured here, for the Fig. 3 scatter.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ..cache import atomic_write_json, sha256_file
from .shapes import BACKGROUNDS, SIZES, draw_scene
from .study_files import write_study
from .synthetic import COLOURS, SHAPES, TEXTURES

JOBS = {
    "lite0": ("efficientnet-lite0", {}),
    "lite0-random": ("efficientnet-lite0", {"pretrained": False}),
    "pixels": ("pixels", {"side": 16, "image_size": 96}),
    "colour-histogram": ("colour-histogram", {"image_size": 96}),
}


def combo_code(shape: np.ndarray, colour: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Shape along y; within a shape's row the colours are shuffled along x, differently per row, so no
    line separates one colour from the rest (there are several interleaved copies of each)."""
    order = np.stack([rng.permutation(len(COLOURS)) for _ in SHAPES])  # x slot of each (shape, colour)
    x = order[shape, colour] * 3.0
    y = shape * 3.0
    return np.stack([x, y], axis=1) + rng.normal(scale=0.35, size=(len(shape), 2))


def forward_probe_accuracy(x: np.ndarray, y: np.ndarray, *, seed: int = 0) -> float:
    """Held-out accuracy (%) of a logistic regression from standardised features to ``y`` (80/20)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x_train, x_test, y_train, y_test = train_test_split(np.asarray(x), y, test_size=0.2, random_state=seed, stratify=y)
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    return 100 * float(model.fit(x_train, y_train).score(x_test, y_test))


def linear_accuracies(features: dict[str, Path], labels: np.ndarray, store: Path) -> dict[str, float]:
    """Each representation's ``forward_probe_accuracy`` (%, 2 decimals) for ``labels``, remembered in
    ``store`` by the sha256 of its feature file and of the labels, so a rebuild refits only what changed."""
    known = json.loads(store.read_text()) if store.is_file() else {}
    labels_hash = hashlib.sha256(np.ascontiguousarray(labels).tobytes()).hexdigest()
    for name, path in features.items():
        key = f"{sha256_file(path)}-{labels_hash}"
        if known.get(name, {}).get("key") != key:
            known[name] = {"key": key, "linear_acc": round(forward_probe_accuracy(np.load(path), labels), 2)}
    atomic_write_json(store, known)
    return {name: known[name]["linear_acc"] for name in features}


@dataclass(frozen=True)
class World:
    """Drawn images: their ids, paths (relative to the study folder), factors, concept table and labels."""

    ids: np.ndarray
    paths: np.ndarray
    factors: dict[str, np.ndarray]
    concepts: pd.DataFrame

    @property
    def labels(self) -> np.ndarray:
        return np.array(SHAPES)[self.factors["shape"]]


def draw_world(out: Path, n_images: int, *, seed: int = 0, image_seed: int = 0, by_shape: bool = False) -> World:
    """Draw ``n_images`` scenes into ``out/images`` (kept when already there), under one folder per shape
    when ``by_shape`` (a trainer's class folders). Image ids are ``scene<image_seed>-<i>``."""
    rng = np.random.default_rng([seed, image_seed])
    factors = {
        "shape": rng.integers(len(SHAPES), size=n_images),
        "colour": rng.integers(len(COLOURS), size=n_images),
        "texture": rng.integers(len(TEXTURES), size=n_images),
        "background": rng.integers(len(BACKGROUNDS), size=n_images),
        "size": rng.integers(len(SIZES), size=n_images),
        "count": rng.integers(1, 3, size=n_images),
    }
    ids = np.array([f"scene{image_seed}-{i:05d}" for i in range(n_images)], dtype=object)
    folders = [f"{SHAPES[s]}/" if by_shape else "" for s in factors["shape"]]
    paths = np.array([f"images/{folder}{i}.jpg" for folder, i in zip(folders, ids)], dtype=object)
    backgrounds, sizes = list(BACKGROUNDS), list(SIZES)
    for i, path in enumerate(paths):
        if not (out / path).is_file():
            (out / path).parent.mkdir(parents=True, exist_ok=True)
            draw_scene(
                SHAPES[factors["shape"][i]],
                COLOURS[factors["colour"][i]],
                TEXTURES[factors["texture"][i]],
                backgrounds[factors["background"][i]],
                sizes[factors["size"][i]],
                int(factors["count"][i]),
                rng,
            ).save(out / path, quality=90)
    named = {
        ("colour", "Color"): [COLOURS[c] for c in factors["colour"]],
        ("texture", "Texture"): [TEXTURES[t] for t in factors["texture"]],
        ("scene", "Background"): [backgrounds[b] for b in factors["background"]],
        ("other", "Size"): [sizes[s] for s in factors["size"]],
        ("other", "Count"): ["one" if c == 1 else "two" for c in factors["count"]],
    }
    concepts = pd.concat(
        [
            pd.DataFrame({"image_id": ids, "concept": [f"[{kind}] {v}" for v in values], "group": group})
            for (group, kind), values in named.items()
        ],
        ignore_index=True,
    )
    return World(ids, paths, factors, concepts)


def make_concept_world(
    out: str | Path, *, n_images: int = 1500, seed: int = 0, image_seed: int = 0, show_progress: bool = True
) -> Path:
    """Draw the images, extract every representation (resumable) and write the study; returns study.toml."""
    from ..extract import ImageList, extract
    from ..networks import get_source

    out = Path(out)
    world = draw_world(out, n_images, seed=seed, image_seed=image_seed)
    images = ImageList(out, tuple(out / p for p in world.paths), tuple(world.ids), None)
    features, metadata = {}, {}
    for name, (source_name, options) in JOBS.items():
        source = get_source(source_name, **options)
        features[name] = extract(
            source, images, out / "features", prefix=f"{name}--", batch_size=50, show_progress=show_progress
        )["final"]
        metadata[name] = dict(source.metadata)
    code = combo_code(world.factors["shape"], world.factors["colour"], np.random.default_rng(seed))
    np.save(out / "features" / "combo-code.npy", code.astype(np.float32))
    features["combo-code"] = out / "features" / "combo-code.npy"
    metadata["combo-code"] = {"architecture": "2-D code", "family": "planted (shape x colour)"}
    shapes = world.factors["shape"]
    for name, accuracy in linear_accuracies(features, shapes, out / "features" / "linear_acc.json").items():
        metadata[name]["linear_acc"] = accuracy
    return write_study(
        out,
        f"concept-world-{n_images}",
        world.ids,
        world.concepts,
        features,
        metadata,
        labels=world.labels,
        paths=world.paths,
    )
