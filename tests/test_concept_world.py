"""Concept world: drawn images with known concepts, and the planted code that shows the paper's point."""

import numpy as np
import pandas as pd

import qrp_core.demos.concept_world as concept_world
from qrp_core.cache import Cache
from qrp_core.config import KMeansConfig, ProbeConfig, RunConfig
from qrp_core.demos.concept_world import combo_code, forward_probe_accuracy, linear_accuracies, make_concept_world
from qrp_core.demos.study_files import write_study
from qrp_core.pipeline import Runner
from qrp_core.study import load_study


def test_combo_code_clusters_on_combinations_that_a_forward_probe_misses(tmp_path):
    rng = np.random.default_rng(0)
    n = 1800
    shape, colour = rng.integers(0, 6, n), rng.integers(0, 5, n)
    code = combo_code(shape, colour, np.random.default_rng(0))
    assert forward_probe_accuracy(code, shape) > 95  # shape is linearly decodable
    assert forward_probe_accuracy(code, colour) < 45  # colour is not (chance is 20%)
    ids = np.array([f"i{k}" for k in range(n)], dtype=object)
    concepts = pd.DataFrame({"image_id": ids, "concept": [f"[Color] {c}" for c in colour], "group": "colour"})
    study = load_study(
        write_study(
            tmp_path, "code", ids, concepts, {"combo-code": code}, {}, labels=np.array([f"shape{s}" for s in shape])
        )
    )
    config = RunConfig(
        ks=(30,), seeds=(0,), kmeans=KMeansConfig(n_iter=30, n_restarts=5), probe=ProbeConfig(max_epochs=40)
    )
    results = Runner(study, config, Cache(tmp_path / "cache"), show_progress=False).run()
    # the reverse probe names the clusters ("red square", ...); K-means from random starts merges a few
    # of the 30 blobs, which caps top-1 a little below 1
    assert results["top1"].iloc[0] > 0.9 and results["nmi"].iloc[0] > 0.95


def test_concept_world_study(tmp_path):
    study = load_study(make_concept_world(tmp_path, n_images=40, show_progress=False))
    assert list(study.models) == ["lite0", "lite0-random", "pixels", "colour-histogram", "combo-code"]
    assert study.concepts.group_names == ("labels", "colour", "other", "scene", "texture")
    assert study.features("lite0").shape == (40, 1280)
    other = study.concepts.select(("other",)).matrix
    assert (np.asarray(other.sum(axis=1)).ravel() == 2).all()  # a size and a count per image
    assert all(0 <= spec.metadata["linear_acc"] <= 100 for spec in study.models.values())
    assert (tmp_path / study.image_paths[0]).stat().st_size < 6000


def test_linear_accuracies_are_refit_only_for_changed_features(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 300)
    features = {}
    for name, scale in (("clean", 0.1), ("noisy", 3.0)):
        features[name] = tmp_path / f"{name}.npy"
        np.save(features[name], (labels[:, None] + scale * rng.normal(size=(300, 4))).astype(np.float32))
    store = tmp_path / "linear_acc.json"
    first = linear_accuracies(features, labels, store)
    assert first == {name: round(forward_probe_accuracy(np.load(path), labels), 2) for name, path in features.items()}
    assert first["clean"] > 95 > first["noisy"]
    refit = []
    monkeypatch.setattr(concept_world, "forward_probe_accuracy", lambda x, y: refit.append(len(x)) or 50.0)
    assert linear_accuracies(features, labels, store) == first and refit == []  # unchanged: nothing refit
    np.save(features["noisy"], rng.normal(size=(300, 4)).astype(np.float32))
    assert linear_accuracies(features, labels, store) == {"clean": first["clean"], "noisy": 50.0}
    assert linear_accuracies(features, labels[::-1].copy(), store) == {"clean": 50.0, "noisy": 50.0}  # new labels
