"""Small studies with planted structure that only the tests use (the demos' worlds are in qrp_core.demos)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from qrp_core.demos.study_files import write_study


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
    concepts = pd.concat(
        [
            _one_hot_rows(ids, shape, ["[Shape] circle", "[Shape] square"], "shape"),
            _one_hot_rows(ids, colour, ["[Color] blue", "[Color] red"], "colour"),
        ],
        ignore_index=True,
    )
    return write_study(
        Path(out_dir),
        "fig2",
        ids,
        concepts,
        {"xor-net": points},
        {"xor-net": {"architecture": "2-D toy", "family": "planted"}},
    )


def make_planted_group_study(out_dir: str | Path, *, n_images: int = 1600, seed: int = 0) -> Path:
    """Eight clusters = label (4) x material (2): within a label, only the material concept tells
    the two clusters apart; an ``other`` group holds unrelated random bits."""
    rng = np.random.default_rng(seed)
    label, material = rng.integers(0, 4, n_images), rng.integers(0, 2, n_images)
    centres = rng.normal(scale=5.0, size=(8, 8))
    features = centres[label * 2 + material] + rng.normal(size=(n_images, 8))
    ids = np.array([f"m{i:05d}" for i in range(n_images)], dtype=object)
    rows, cols = np.nonzero(rng.random((n_images, 6)) < 0.3)
    concepts = pd.concat(
        [
            _one_hot_rows(ids, material, ["[MINC] metal", "[MINC] wood"], "material"),
            pd.DataFrame({"image_id": ids[rows], "concept": [f"[Other] bit{c}" for c in cols], "group": "other"}),
        ],
        ignore_index=True,
    )
    labels = np.array(["apple", "boat", "cat", "drum"])[label]
    return write_study(
        Path(out_dir),
        "planted-material",
        ids,
        concepts,
        {"planted-net": features},
        {"planted-net": {"architecture": "toy", "family": "planted"}},
        labels=labels,
    )


def make_small_labelled_study(out_dir: str | Path, name: str, *, n_images: int, seed: int = 0) -> Path:
    """A valid minimal study to damage in hostile tests: 4 labels, one `colour` concept group, one 4-d model
    `net`, no image files."""
    rng = np.random.default_rng(seed)
    ids = np.array([f"i{i:03d}" for i in range(n_images)], dtype=object)
    labels = rng.integers(0, 4, n_images)
    concepts = pd.DataFrame({"image_id": ids, "concept": [f"[C] c{v}" for v in labels % 2], "group": "colour"})
    features = {"net": rng.normal(size=(n_images, 4))}
    return write_study(Path(out_dir), name, ids, concepts, features, {}, labels=labels.astype(str))
