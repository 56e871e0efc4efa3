"""Concept world: the concepts recorded for each image are the ones visibly drawn in it (read back with numpy/scipy)."""

import numpy as np
from PIL import Image
from scipy import ndimage

import qrp_core.demos.concept_world as concept_world
from qrp_core.demos.shapes import BACKGROUNDS, RGB
from qrp_core.study import load_study


def _read_back(path):
    """Background name, colour name, patterned?, count, largest radius and shape cues of a drawn image."""
    a = np.asarray(Image.open(path).convert("RGB")).astype(float)
    border = np.concatenate(
        [a[:2].reshape(-1, 3), a[-2:].reshape(-1, 3), a[:, :2].reshape(-1, 3), a[:, -2:].reshape(-1, 3)]
    )
    bg = np.median(border, axis=0)
    background = min(BACKGROUNDS, key=lambda n: np.abs(np.array(BACKGROUNDS[n]) - bg).max())
    fg = np.abs(a - bg).max(-1) > 45
    refs = {n: np.array(c, float) for n, c in RGB.items()}
    darks = {n: np.array([int(v * 0.45) for v in c], float) for n, c in RGB.items()}
    names = list(RGB)
    pixels = a[fg]
    dist = np.stack(
        [np.abs(pixels - refs[n]).sum(1) for n in names] + [np.abs(pixels - darks[n]).sum(1) for n in names]
    )
    nearest = dist.argmin(0)
    colour = names[np.bincount(nearest % len(names), minlength=len(names)).argmax()]
    dark_fraction = float(np.mean(nearest >= len(names)))
    labelled, n = ndimage.label(ndimage.binary_opening(fg))
    parts = [labelled == k for k in range(1, n + 1) if (labelled == k).sum() > 30]
    largest = max(parts, key=np.sum)
    rows, cols = np.nonzero(largest)
    height, width = np.ptp(rows) + 1, np.ptp(cols) + 1
    holes = ndimage.binary_fill_holes(largest).sum() / largest.sum()
    return {
        "background": background,
        "colour": colour,
        "patterned": dark_fraction > 0.08,
        "count": len(parts),
        "radius": max(height, width) / 2,
        "fill": largest.sum() / (height * width),
        "holes": holes,
    }


def test_recorded_concepts_are_the_drawn_ones(tmp_path, monkeypatch):
    monkeypatch.setattr(concept_world, "JOBS", {"pixels": ("pixels", {"side": 4, "image_size": 32})})
    monkeypatch.setattr(concept_world, "linear_accuracies", lambda features, labels, store: {n: 50.0 for n in features})
    study = load_study(concept_world.make_concept_world(tmp_path, n_images=120, show_progress=False))
    names = study.concepts.names
    matrix = study.concepts.matrix.toarray().astype(bool)
    labels = list(study.labels)
    checked = 0
    for i, path in enumerate(study.image_paths):
        seen = _read_back(tmp_path / path)
        concepts = {names[j] for j in np.flatnonzero(matrix[i])}
        assert f"[Background] {seen['background']}" in concepts, (path, concepts, seen)
        assert f"[Color] {seen['colour']}" in concepts, (path, concepts, seen)
        assert f"[Count] {'one' if seen['count'] == 1 else 'two'}" in concepts, (path, concepts, seen)
        assert seen["patterned"] == ("[Texture] plain" not in concepts), (path, concepts, seen)
        # radius: small 0.13-0.18 of 96 px (<= 17.3), large 0.26-0.33 (two large copies: 22, to fit side by
        # side); read back from the JPEG, small spans at most 18.5 px and two large copies at least 19.0 (the
        # world is seeded: the same images every run)
        assert f"[Size] {'small' if seen['radius'] < 18.75 else 'large'}" in concepts, (path, concepts, seen)
        shape = labels[i]
        if seen["count"] == 2:
            checked += 1
            continue  # shape cues below read one copy
        if shape == "square":
            assert seen["fill"] > 0.85, (path, seen)
        elif shape == "ring":
            assert seen["holes"] > 1.1, (path, seen)
        elif shape in ("circle", "star", "triangle", "cross", "square"):
            assert seen["holes"] < 1.05, (path, shape, seen)
        if shape == "star":
            assert seen["fill"] < 0.5, (path, seen)
        checked += 1
    assert checked == 120
