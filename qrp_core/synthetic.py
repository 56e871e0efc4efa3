"""A synthetic study with planted structure: the embedded demo and the tests' fixture.

Each image has a shape (its ground-truth label), a colour, a texture and a few random
"other" bits. Three representations of clearly different quality:

* ``combo-net`` clusters images by (shape, colour) combination: the reverse probe explains
  its clusters almost perfectly from concepts;
* ``shape-net`` clusters by shape only, with colour mixed into noise;
* ``noise-net`` is random noise, unrelated to any concept (a random-init baseline).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .cache import atomic_write_bytes

SHAPES = ("circle", "square", "triangle", "star", "cross", "ring")
COLOURS = ("red", "green", "blue", "yellow", "purple")
TEXTURES = ("striped", "dotted", "plain", "checked")
N_OTHER = 12
MODELS = {
    "combo-net": {"architecture": "synthetic", "family": "planted (shape x colour)"},
    "shape-net": {"architecture": "synthetic", "family": "planted (shape)"},
    "noise-net": {"architecture": "synthetic", "family": "random baseline"},
}


def make_synthetic_study(out_dir: str | Path, *, n_images: int = 3000, dim: int = 32, seed: int = 0) -> Path:
    """Write a complete study (image table, long concept table, features, study.toml) and return its path."""
    out = Path(out_dir)
    rng = np.random.default_rng(seed)
    shape = rng.integers(len(SHAPES), size=n_images)
    colour = rng.integers(len(COLOURS), size=n_images)
    texture = rng.integers(len(TEXTURES), size=n_images)
    other = rng.random((n_images, N_OTHER)) < 0.15
    ids = np.array([f"img{i:06d}" for i in range(n_images)], dtype=object)

    long_rows = [pd.DataFrame({"image_id": ids, "concept": [f"[Color] {COLOURS[c]}" for c in colour],
                               "group": "colour"}),
                 pd.DataFrame({"image_id": ids, "concept": [f"[Texture] {TEXTURES[t]}" for t in texture],
                               "group": "texture"})]
    rows, cols = np.nonzero(other)
    long_rows.append(pd.DataFrame({"image_id": ids[rows], "concept": [f"[Other] bit{c:02d}" for c in cols],
                                   "group": "other"}))
    concepts = pd.concat(long_rows, ignore_index=True)

    combo_centres = rng.normal(scale=4.0, size=(len(SHAPES) * len(COLOURS), dim))
    shape_centres = rng.normal(scale=4.0, size=(len(SHAPES), dim))
    features = {
        "combo-net": combo_centres[shape * len(COLOURS) + colour] + rng.normal(size=(n_images, dim)),
        "shape-net": shape_centres[shape] + 2.0 * rng.normal(size=(n_images, dim)),
        "noise-net": rng.normal(size=(n_images, dim)),
    }

    (out / "features").mkdir(parents=True, exist_ok=True)
    for name, x in features.items():
        np.save(out / "features" / f"{name}.npy", x.astype(np.float32))
    atomic_write_bytes(out / "images.csv", pd.DataFrame({"image_id": ids, "label": np.array(SHAPES)[shape]})
                       .to_csv(index=False).encode())
    atomic_write_bytes(out / "concepts.parquet", concepts.to_parquet(index=False))
    lines = [f'name = "synthetic-{n_images}"', 'images = "images.csv"', 'base_group = "labels"', "",
             "[concepts]", 'table = "concepts.parquet"']
    for name, meta in MODELS.items():
        lines += ["", f"[models.{name}]", f'features = "features/{name}.npy"']
        lines += [f'{k} = "{v}"' for k, v in meta.items()]
    study_path = out / "study.toml"
    atomic_write_bytes(study_path, ("\n".join(lines) + "\n").encode())
    return study_path
