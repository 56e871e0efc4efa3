"""Known answers for confused pairs and coefficient differences (paper section 4.4) and Fig. 2."""

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from qrp_core.analyses.pairs import (cluster_concept_counts, confusion_matrix, coefficient_difference,
                                     explain_pair, nearest_images, over_represented, pairwise_confusion, run_pairs)
from qrp_core.cache import Cache
from qrp_core.pipeline import RunConfig, Runner
from qrp_core.results import load_probe
from qrp_core.probe import ProbeConfig
from qrp_core.quantize import KMeansConfig
from qrp_core.study import load_study
from qrp_core.synthetic import make_fig2_study, make_planted_group_study

# 8 blobs from random starts: about 1 restart in 5 finds all 8, so 10 restarts
CONFIG = RunConfig(ks=(8,), seeds=(0,), kmeans=KMeansConfig(n_iter=20, n_restarts=10), probe=ProbeConfig(max_epochs=30))


def test_fig2_reverse_probe_explains_combinations_a_forward_probe_misses(tmp_path):
    study = load_study(make_fig2_study(tmp_path / "fig2"))
    config = RunConfig(ks=(4,), seeds=(0,), kmeans=KMeansConfig(n_iter=20, n_restarts=5),
                       probe=ProbeConfig(max_epochs=30))
    results = Runner(study, config, Cache(tmp_path / "cache"), show_progress=False).run()
    assert results["top1"].iloc[0] == pytest.approx(1.0)  # reverse: shape + colour -> cluster
    x = np.asarray(study.features("xor-net"))
    colour = study.concepts.select(("colour",)).matrix.toarray().argmax(1)
    shape = study.concepts.select(("shape",)).matrix.toarray().argmax(1)
    forward = lambda y: LogisticRegression().fit(x[:600], y[:600]).score(x[600:], y[600:])  # noqa: E731
    assert forward(shape) > 0.99  # shape is linearly separable
    assert forward(colour) < 0.65  # colour (XOR) is not: about chance


def test_pairwise_confusion_closed_form():
    true = np.array([0, 0, 0, 0, 1, 1, 2, 2, 2, 2])
    pred = np.array([0, 0, 1, 2, 0, 1, 2, 2, 2, 0])
    c = confusion_matrix(true, pred, 3)
    np.testing.assert_array_equal(c.toarray(), [[2, 1, 1], [1, 1, 0], [1, 0, 3]])
    table = pairwise_confusion(c).set_index(["i", "j"])["confusion"]
    assert table[(0, 1)] == pytest.approx((1 + 1) / (4 + 2))
    assert table[(0, 2)] == pytest.approx((1 + 1) / (4 + 4))
    assert (1, 2) not in table.index


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    root = tmp_path_factory.mktemp("planted")
    study = load_study(make_planted_group_study(root / "study"))
    cache = Cache(root / "cache")
    pairs = run_pairs(study, CONFIG, cache, base=("labels",), added="material", show_progress=False)
    return study, cache, pairs


def _cluster_identity(study, cache, clustering):
    """(label, material) of each cluster by majority: K-means numbers clusters arbitrarily."""
    assignments = cache.load_array("clusterings", clustering, "assignments.npy")
    label = study.concepts.select(("labels",)).matrix.toarray().argmax(1)
    material = study.concepts.select(("material",)).matrix.toarray().argmax(1)
    return {c: (np.bincount(label[assignments == c]).argmax(), np.bincount(material[assignments == c]).argmax())
            for c in range(8)}


def test_adding_the_group_removes_the_confusion_of_pairs_that_differ_only_in_it(planted):
    study, cache, pairs = planted
    pairs = pairs.sort_values("drop", ascending=False)
    identity = _cluster_identity(study, cache, cache.manifest("probes", pairs["probe_a"].iloc[0])["inputs"]["clustering"])
    assert sorted(identity.values()) == [(a, g) for a in range(4) for g in range(2)]  # K-means found the 8
    top4 = pairs.head(4)
    for i, j in zip(top4["i"], top4["j"]):
        assert identity[i][0] == identity[j][0] and identity[i][1] != identity[j][1]
    assert (top4["confusion_a"] > 0.3).all()  # labels alone: a coin flip within a label
    assert (top4["confusion_b"] < 0.05).all()  # labels + material: resolved


def test_coefficient_difference_is_largest_on_the_distinguishing_concepts(planted):
    study, cache, pairs = planted
    top = pairs.sort_values("drop", ascending=False).iloc[0]
    diff = coefficient_difference(load_probe(cache, top["probe_b"]), int(top["i"]), int(top["j"]))
    assert set(diff["concept"].head(2)) == {"[MINC] metal", "[MINC] wood"}
    assert np.sign(diff["difference"].iloc[0]) == -np.sign(diff["difference"].iloc[1])
    explained = explain_pair(study, cache, top["probe_b"], int(top["i"]), int(top["j"]), n=5)
    assert explained["top_i"]["coefficient"].is_monotonic_decreasing
    freq = explained["difference"].set_index("concept")
    assignments = cache.load_array("clusterings", cache.manifest("probes", top["probe_b"])["inputs"]["clustering"],
                                   "assignments.npy")
    members = assignments == int(top["i"])
    wood = study.concepts.matrix[:, study.concepts.names.index("[MINC] wood")].toarray().ravel()
    assert freq.loc["[MINC] wood", "frequency_i"] == pytest.approx(wood[members].mean())
    from qrp_core.browse import wordcloud_words
    words = wordcloud_words(explained["difference"])
    assert ((words["frequency_i"] > 0) | (words["frequency_j"] > 0)).all()
    assert len(explained["images_i"]) == 5


def test_nearest_images_and_over_represented_concepts(planted):
    study, cache, pairs = planted
    clustering = cache.manifest("probes", pairs["probe_a"].iloc[0])["inputs"]["clustering"]
    assignments = cache.load_array("clusterings", clustering, "assignments.npy")
    distances = cache.load_array("clusterings", clustering, "distances.npy")
    nearest = nearest_images(cache, clustering, 3, n=10)
    assert (assignments[nearest] == 3).all()
    assert np.all(np.diff(distances[nearest]) >= 0)
    assert distances[nearest[-1]] <= np.sort(distances[assignments == 3])[9]
    counts = cluster_concept_counts(study, cache, clustering).toarray()
    brute = np.stack([study.concepts.matrix[assignments == c].toarray().sum(0) for c in range(8)])
    np.testing.assert_array_equal(counts, brute)
    label, material = _cluster_identity(study, cache, clustering)[3]
    over = over_represented(study, cache, clustering, 3, n=2)
    assert set(over["concept"]) == {study.concepts.select(("labels",)).names[label],
                                    ["[MINC] metal", "[MINC] wood"][material]}
    assert (over["in_cluster"] > 0.9).all() and (over["lift"] > 1.5).all()
    # asked for every concept, it lists exactly those more frequent in the cluster than overall
    everything = over_represented(study, cache, clustering, 3, n=10_000)
    in_cluster = counts[3] / (assignments == 3).sum()
    overall = study.concepts.matrix.toarray().mean(0)
    expected = np.asarray(study.concepts.names)[in_cluster > overall]
    assert sorted(everything["concept"]) == sorted(expected) and (everything["lift"] > 1).all()


def test_pairs_table_is_cached_and_rerun_trains_nothing(planted, monkeypatch):
    import qrp_core.pipeline as pipeline
    study, cache, pairs = planted
    monkeypatch.setattr(pipeline, "train_probes", lambda *a, **k: pytest.fail("retrained a cached probe"))
    again = run_pairs(study, CONFIG, cache, base=("labels",), added="material", show_progress=False)
    assert again["drop"].tolist() == pairs["drop"].tolist()
    stored = cache.read_table(study.name, "pairs")
    assert len(stored) == len(pairs)
