"""Known answers for confused pairs and coefficient differences (paper section 4.4) and Fig. 2."""

import shutil

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression

from builders import make_fig2_study, make_planted_group_study
from qrp_core.analyses.pairs import (
    coefficient_difference,
    confusion_matrix,
    explain_pair,
    nearest_images,
    over_represented,
    pairwise_confusion,
    run_pairs,
)
from qrp_core.cache import Cache
from qrp_core.config import KMeansConfig, ProbeConfig, RunConfig
from qrp_core.pipeline import Runner
from qrp_core.profiles import cluster_concept_counts, profile_key, save_cluster_profile
from qrp_core.results import load_probe
from qrp_core.study import load_study

# 8 blobs from random starts: about 1 restart in 5 finds all 8, so 10 restarts
CONFIG = RunConfig(ks=(8,), seeds=(0,), kmeans=KMeansConfig(n_iter=20, n_restarts=10), probe=ProbeConfig(max_epochs=30))


def test_fig2_reverse_probe_explains_combinations_a_forward_probe_misses(tmp_path):
    study = load_study(make_fig2_study(tmp_path / "fig2"))
    config = RunConfig(
        ks=(4,), seeds=(0,), kmeans=KMeansConfig(n_iter=20, n_restarts=5), probe=ProbeConfig(max_epochs=30)
    )
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
    return {
        c: (np.bincount(label[assignments == c]).argmax(), np.bincount(material[assignments == c]).argmax())
        for c in range(8)
    }


def test_adding_the_group_removes_the_confusion_of_pairs_that_differ_only_in_it(planted):
    study, cache, pairs = planted
    pairs = pairs.sort_values("drop", ascending=False)
    identity = _cluster_identity(
        study, cache, cache.manifest("probes", pairs["probe_a"].iloc[0])["inputs"]["clustering"]
    )
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
    assignments = cache.load_array(
        "clusterings", cache.manifest("probes", top["probe_b"])["inputs"]["clustering"], "assignments.npy"
    )
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
    profile = cache.path("profiles", profile_key(study, clustering))
    assert (profile / "manifest.json").is_file()  # the run wrote it with the clustering
    shutil.rmtree(profile)
    np.testing.assert_array_equal(cluster_concept_counts(study, cache, clustering).toarray(), brute)
    assert not profile.exists()  # reading (the app) computes what is missing and writes nothing
    save_cluster_profile(study, cache, clustering)
    np.testing.assert_array_equal(cluster_concept_counts(study, cache, clustering).toarray(), brute)
    label, material = _cluster_identity(study, cache, clustering)[3]
    over = over_represented(study, cache, clustering, 3, n=2)
    assert set(over["concept"]) == {
        study.concepts.select(("labels",)).names[label],
        ["[MINC] metal", "[MINC] wood"][material],
    }
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


def _brute_pair_confusion(truth, predicted, k):
    """{(i, j): (#i predicted j + #j predicted i) / (#i + #j)} over the pairs i < j confused at all, by loops."""
    out = {}
    for i in range(k):
        for j in range(i + 1, k):
            confused = np.sum((truth == i) & (predicted == j)) + np.sum((truth == j) & (predicted == i))
            if confused:
                out[(i, j)] = confused / (np.sum(truth == i) + np.sum(truth == j))
    return out


def test_pairs_table_equals_a_brute_force_count_of_test_confusions(planted):
    from qrp_core.split import TEST

    study, cache, pairs = planted
    assert (pairs["i"] < pairs["j"]).all()  # each pair once, never a cluster with itself
    assert not pairs.duplicated(["model", "k", "seed", "i", "j"]).any()
    for (_, k, _), part in pairs.groupby(["model", "k", "seed"]):
        probe_a, probe_b = part["probe_a"].iloc[0], part["probe_b"].iloc[0]
        inputs = cache.manifest("probes", probe_a)["inputs"]
        truth = cache.load_array("clusterings", inputs["clustering"], "assignments.npy")
        test = cache.load_array("splits", inputs["split"], "split.npy") == TEST
        a = _brute_pair_confusion(truth[test], cache.load_array("probes", probe_a, "predictions.npy")[test], int(k))
        b = _brute_pair_confusion(truth[test], cache.load_array("probes", probe_b, "predictions.npy")[test], int(k))
        table = part.set_index(["i", "j"])
        assert sorted(table.index) == sorted(set(a) | set(b))
        for pair, row in table.iterrows():
            assert row["confusion_a"] == pytest.approx(a.get(pair, 0.0))
            assert row["confusion_b"] == pytest.approx(b.get(pair, 0.0))
        assert table["drop"].to_numpy() == pytest.approx((table["confusion_a"] - table["confusion_b"]).to_numpy())
        assert part["drop"].is_monotonic_decreasing  # largest drop first
        assert table["drop"].iloc[0] > 0.3  # the planted pairs: labels + material resolves what labels confuse


def test_explain_pair_counts_frequencies_and_images_on_the_right_side(planted):
    study, cache, pairs = planted
    top = pairs.sort_values("drop", ascending=False).iloc[0]
    i, j = int(top["i"]), int(top["j"])
    clustering = cache.manifest("probes", top["probe_b"])["inputs"]["clustering"]
    assignments = cache.load_array("clusterings", clustering, "assignments.npy")
    sizes = np.bincount(assignments, minlength=8)
    if sizes[i] == sizes[j]:  # the frequencies of j must not come out right when divided by i's size
        j = next(c for c in range(8) if c != i and sizes[c] != sizes[i])
    explained = explain_pair(study, cache, top["probe_b"], i, j, n=5)
    dense = study.concepts.matrix.toarray()
    freq = explained["difference"].set_index("concept")
    assert len(freq) >= 4 and (freq["frequency_j"] > 0).any()
    for side, cluster in (("i", i), ("j", j)):
        expected = dense[assignments == cluster].mean(0)
        for name, row in freq.iterrows():  # the probe's concepts (labels and material)
            assert row[f"frequency_{side}"] == pytest.approx(expected[study.concepts.names.index(name)]), (side, name)
        images = explained[f"images_{side}"]
        assert len(images) == 5 and (assignments[images] == cluster).all()


def test_the_most_informative_comparison_has_the_largest_top_drops():
    import itertools

    from qrp_core.analyses.pairs import TOP_PAIRS, most_informative_comparison

    rng = np.random.default_rng(0)
    rows = [
        {"base": base, "added": added, "model": model, "seed": seed, "k": k, "drop": drop}
        for base, added, model, seed, k in itertools.product(["labels"], ["colour", "texture"], "ab", [0, 1], [10, 20])
        for drop in rng.uniform(0, 0.3 if added == "texture" and k == 20 else 0.2, size=40)
    ]
    pairs = pd.DataFrame(rows)
    for k in (10, 20):
        scores = {}  # brute force: per comparison, the mean over clusterings of the mean of the 10 largest drops
        for (base, added), part in pairs[pairs["k"] == k].groupby(["base", "added"]):
            per_clustering = [
                np.sort(g["drop"].to_numpy())[-TOP_PAIRS:].mean() for _, g in part.groupby(["model", "seed"])
            ]
            scores[(base, added)] = np.mean(per_clustering)
        best = max(scores, key=scores.get)
        base, added, score = most_informative_comparison(pairs, k)
        assert (base, added) == best and score == pytest.approx(scores[best], rel=1e-12)
    assert most_informative_comparison(pairs, 30) is None
    assert most_informative_comparison(pairs, 20)[1] == "texture"


def test_the_cluster_map_lays_out_centroids_by_pca_and_names_each_cluster(planted):
    from sklearn.decomposition import PCA

    from qrp_core.analyses.cluster_map import cluster_map

    study, cache, pairs = planted
    clustering = cache.manifest("probes", pairs["probe_a"].iloc[0])["inputs"]["clustering"]
    table = cluster_map(study, cache, clustering)
    centroids = cache.load_array("clusterings", clustering, "centroids.npy").astype(np.float64)
    reference = PCA(2).fit_transform(centroids)
    for axis, column in enumerate(("x", "y")):  # the same axes, up to a sign per axis
        sign = np.sign(reference[:, axis] @ table[column].to_numpy())
        np.testing.assert_allclose(table[column], sign * reference[:, axis], atol=1e-6 * np.abs(reference).max())
    assignments = cache.load_array("clusterings", clustering, "assignments.npy")
    assert table["size"].tolist() == np.bincount(assignments, minlength=len(centroids)).tolist()
    for cluster in range(len(centroids)):
        expected = over_represented(study, cache, clustering, cluster, n=3)
        assert table["top_concepts"][cluster] == ", ".join(expected["concept"])
        assert table["group"][cluster] == (expected["group"].iloc[0] if len(expected) else "none")
