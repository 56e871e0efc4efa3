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


def make_concept_world(
    out: str | Path, *, n_images: int = 1500, seed: int = 0, image_seed: int = 0, show_progress: bool = True
) -> Path:
    """Draw the images, extract every representation (resumable) and write the study; returns study.toml."""
    from ..extract import ImageList, extract
    from ..networks import get_source

    out = Path(out)
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
    paths = np.array([f"images/{i}.jpg" for i in ids], dtype=object)
    (out / "images").mkdir(parents=True, exist_ok=True)
    backgrounds, sizes = list(BACKGROUNDS), list(SIZES)
    for i, path in enumerate(paths):
        if not (out / path).is_file():
            draw_scene(
                SHAPES[factors["shape"][i]],
                COLOURS[factors["colour"][i]],
                TEXTURES[factors["texture"][i]],
                backgrounds[factors["background"][i]],
                sizes[factors["size"][i]],
                int(factors["count"][i]),
                rng,
            ).save(out / path, quality=90)

    concepts = pd.concat(
        [
            pd.DataFrame(
                {"image_id": ids, "concept": [f"[Color] {COLOURS[c]}" for c in factors["colour"]], "group": "colour"}
            ),
            pd.DataFrame(
                {
                    "image_id": ids,
                    "concept": [f"[Texture] {TEXTURES[t]}" for t in factors["texture"]],
                    "group": "texture",
                }
            ),
            pd.DataFrame(
                {
                    "image_id": ids,
                    "concept": [f"[Background] {backgrounds[b]}" for b in factors["background"]],
                    "group": "scene",
                }
            ),
            pd.DataFrame(
                {"image_id": ids, "concept": [f"[Size] {sizes[s]}" for s in factors["size"]], "group": "other"}
            ),
            pd.DataFrame(
                {
                    "image_id": ids,
                    "concept": [f"[Count] {'one' if c == 1 else 'two'}" for c in factors["count"]],
                    "group": "other",
                }
            ),
        ],
        ignore_index=True,
    )

    images = ImageList(out, tuple(out / p for p in paths), tuple(ids), None)
    features, metadata = {}, {}
    for name, (source_name, options) in JOBS.items():
        source = get_source(source_name, **options)
        features[name] = extract(
            source, images, out / "features", prefix=f"{name}--", batch_size=50, show_progress=show_progress
        )["final"]
        metadata[name] = dict(source.metadata)
    code = combo_code(factors["shape"], factors["colour"], np.random.default_rng(seed))
    np.save(out / "features" / "combo-code.npy", code.astype(np.float32))
    features["combo-code"] = out / "features" / "combo-code.npy"
    metadata["combo-code"] = {"architecture": "2-D code", "family": "planted (shape x colour)"}
    for name, accuracy in linear_accuracies(features, factors["shape"], out / "features" / "linear_acc.json").items():
        metadata[name]["linear_acc"] = accuracy
    labels = np.array(SHAPES)[factors["shape"]]
    return write_study(out, f"concept-world-{n_images}", ids, concepts, features, metadata, labels=labels, paths=paths)
