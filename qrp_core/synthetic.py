"""A synthetic study with planted structure: the embedded demo and the tests' fixture.

Each image has a shape (its ground-truth label), a colour, a texture and a few random
"other" bits, and a small drawn thumbnail that shows them. The features are planted, not
extracted from the thumbnails. Three representations of clearly different quality:

* ``combo-net`` clusters images by (shape, colour) combination: the reverse probe explains
  its clusters almost perfectly from concepts;
* ``shape-net`` clusters by shape only, with colour mixed into noise;
* ``noise-net`` is random noise, unrelated to any concept (a random-init baseline).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from .cache import atomic_write_bytes
from .shapes import draw_image

SHAPES = ("circle", "square", "triangle", "star", "cross", "ring")
COLOURS = ("red", "green", "blue", "yellow", "purple")
TEXTURES = ("striped", "dotted", "plain", "checked")
N_OTHER = 12
MODELS = {
    "combo-net": {"architecture": "synthetic", "family": "planted (shape x colour)"},
    "shape-net": {"architecture": "synthetic", "family": "planted (shape)"},
    "noise-net": {"architecture": "synthetic", "family": "random baseline"},
}


def make_synthetic_study(out_dir: str | Path, *, n_images: int = 3000, dim: int = 32, seed: int = 0,
                         image_seed: int = 0) -> Path:
    """Write a complete study (image table, long concept table, features, study.toml) and return its path.

    ``seed`` fixes the three "networks" (their planted centres); ``image_seed`` the images drawn,
    so two collections with one ``seed`` and two ``image_seed`` are seen by the same networks.
    """
    out = Path(out_dir)
    network = np.random.default_rng(seed)
    combo_centres = network.normal(scale=4.0, size=(len(SHAPES) * len(COLOURS), dim))
    shape_centres = network.normal(scale=4.0, size=(len(SHAPES), dim))
    rng = np.random.default_rng([seed, image_seed])
    shape = rng.integers(len(SHAPES), size=n_images)
    colour = rng.integers(len(COLOURS), size=n_images)
    texture = rng.integers(len(TEXTURES), size=n_images)
    other = rng.random((n_images, N_OTHER)) < 0.15
    ids = np.array([f"img{image_seed}-{i:06d}" for i in range(n_images)], dtype=object)

    long_rows = [pd.DataFrame({"image_id": ids, "concept": [f"[Color] {COLOURS[c]}" for c in colour],
                               "group": "colour"}),
                 pd.DataFrame({"image_id": ids, "concept": [f"[Texture] {TEXTURES[t]}" for t in texture],
                               "group": "texture"})]
    rows, cols = np.nonzero(other)
    long_rows.append(pd.DataFrame({"image_id": ids[rows], "concept": [f"[Other] bit{c:02d}" for c in cols],
                                   "group": "other"}))
    concepts = pd.concat(long_rows, ignore_index=True)

    features = {
        "combo-net": combo_centres[shape * len(COLOURS) + colour] + rng.normal(size=(n_images, dim)),
        "shape-net": shape_centres[shape] + 2.0 * rng.normal(size=(n_images, dim)),
        "noise-net": rng.normal(size=(n_images, dim)),
    }

    (out / "thumbs").mkdir(parents=True, exist_ok=True)
    paths = np.array([f"thumbs/{i}.jpg" for i in ids], dtype=object)
    draw_rng = np.random.default_rng([seed, image_seed, 1])
    for path, s, c, t in zip(paths, shape, colour, texture):
        draw_image(SHAPES[s], COLOURS[c], TEXTURES[t], draw_rng).save(out / path, quality=85)
    return write_study(out, f"synthetic-{n_images}", ids, concepts, features, MODELS,
                       labels=np.array(SHAPES)[shape], paths=paths)


def write_study(out: Path, name: str, ids: np.ndarray, concepts: pd.DataFrame, features: dict[str, np.ndarray],
                metadata: dict[str, dict], *, labels: np.ndarray | None = None,
                paths: np.ndarray | None = None) -> Path:
    """Write the files of a study (image table, long concept table, one .npy per model, study.toml).

    A feature value that is a path to a file inside ``out`` is referenced, not copied.
    """
    out = Path(out)
    (out / "features").mkdir(parents=True, exist_ok=True)
    feature_files = {}
    for model, x in features.items():
        if isinstance(x, Path):
            feature_files[model] = x.relative_to(out).as_posix()
        else:
            np.save(out / "features" / f"{model}.npy", x.astype(np.float32))
            feature_files[model] = f"features/{model}.npy"
    images = pd.DataFrame({"image_id": ids})
    if labels is not None:
        images["label"] = labels
    if paths is not None:
        images["path"] = paths
    atomic_write_bytes(out / "images.csv", images.to_csv(index=False).encode())
    atomic_write_bytes(out / "concepts.parquet", concepts.to_parquet(index=False))
    lines = [f'name = "{name}"', 'images = "images.csv"', 'base_group = "labels"', "",
             "[concepts]", 'table = "concepts.parquet"']
    for model in features:
        lines += ["", f"[models.{model}]", f'features = "{feature_files[model]}"']
        lines += [f"{k} = {json.dumps(v)}" for k, v in metadata.get(model, {}).items()]
    study_path = out / "study.toml"
    atomic_write_bytes(study_path, ("\n".join(lines) + "\n").encode())
    return study_path


def _one_hot_rows(ids: np.ndarray, values: np.ndarray, names: list[str], group: str) -> pd.DataFrame:
    return pd.DataFrame({"image_id": ids, "concept": np.asarray(names, dtype=object)[values], "group": group})


def make_fig2_study(out_dir: str | Path, *, n_images: int = 800, seed: int = 0) -> Path:
    """The paper's Fig. 2(b) world: four clusters = shape x colour in 2-D, where colour is an XOR of
    the coordinates (not linearly separable) and shape is the sign of x (linearly separable)."""
    rng = np.random.default_rng(seed)
    shape, colour = rng.integers(0, 2, (2, n_images))
    x_sign = 2 * shape - 1
    y_sign = np.where(colour == 1, x_sign, -x_sign)  # red on the diagonal, blue off it
    points = np.stack([x_sign, y_sign], axis=1) * 3.0 + rng.normal(scale=0.5, size=(n_images, 2))
    ids = np.array([f"p{i:05d}" for i in range(n_images)], dtype=object)
    concepts = pd.concat([_one_hot_rows(ids, shape, ["[Shape] circle", "[Shape] square"], "shape"),
                          _one_hot_rows(ids, colour, ["[Color] blue", "[Color] red"], "colour")], ignore_index=True)
    return write_study(Path(out_dir), "fig2", ids, concepts, {"xor-net": points},
                       {"xor-net": {"architecture": "2-D toy", "family": "planted"}})


def make_planted_group_study(out_dir: str | Path, *, n_images: int = 1600, seed: int = 0) -> Path:
    """Eight clusters = label (4) x material (2): within a label, only the material concept tells
    the two clusters apart; an ``other`` group holds unrelated random bits."""
    rng = np.random.default_rng(seed)
    label, material = rng.integers(0, 4, n_images), rng.integers(0, 2, n_images)
    centres = rng.normal(scale=5.0, size=(8, 8))
    features = centres[label * 2 + material] + rng.normal(size=(n_images, 8))
    ids = np.array([f"m{i:05d}" for i in range(n_images)], dtype=object)
    rows, cols = np.nonzero(rng.random((n_images, 6)) < 0.3)
    concepts = pd.concat([
        _one_hot_rows(ids, material, ["[MINC] metal", "[MINC] wood"], "material"),
        pd.DataFrame({"image_id": ids[rows], "concept": [f"[Other] bit{c}" for c in cols], "group": "other"}),
    ], ignore_index=True)
    labels = np.array(["apple", "boat", "cat", "drum"])[label]
    return write_study(Path(out_dir), "planted-material", ids, concepts, {"planted-net": features},
                       {"planted-net": {"architecture": "toy", "family": "planted"}}, labels=labels)
