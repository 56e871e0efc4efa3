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

from pathlib import Path

import numpy as np
import pandas as pd

from .shapes import draw_image
from .study_files import write_study

SHAPES = ("circle", "square", "triangle", "star", "cross", "ring")
COLOURS = ("red", "green", "blue", "yellow", "purple")
TEXTURES = ("striped", "dotted", "plain", "checked")
N_OTHER = 12
MODELS = {
    "combo-net": {"architecture": "synthetic", "family": "planted (shape x colour)"},
    "shape-net": {"architecture": "synthetic", "family": "planted (shape)"},
    "noise-net": {"architecture": "synthetic", "family": "random baseline"},
}


def make_synthetic_study(
    out_dir: str | Path, *, n_images: int = 3000, dim: int = 32, seed: int = 0, image_seed: int = 0
) -> Path:
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

    long_rows = [
        pd.DataFrame({"image_id": ids, "concept": [f"[Color] {COLOURS[c]}" for c in colour], "group": "colour"}),
        pd.DataFrame({"image_id": ids, "concept": [f"[Texture] {TEXTURES[t]}" for t in texture], "group": "texture"}),
    ]
    rows, cols = np.nonzero(other)
    long_rows.append(
        pd.DataFrame({"image_id": ids[rows], "concept": [f"[Other] bit{c:02d}" for c in cols], "group": "other"})
    )
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
    return write_study(
        out, f"synthetic-{n_images}", ids, concepts, features, MODELS, labels=np.array(SHAPES)[shape], paths=paths
    )
