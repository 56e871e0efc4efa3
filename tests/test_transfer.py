import numpy as np
import pytest

from qrp_core.analyses.transfer import concepts_by_name, default_transfer_groups, run_transfer
from qrp_core.cache import Cache
from qrp_core.config import KMeansConfig, ProbeConfig, RunConfig
from qrp_core.demos.synthetic import make_synthetic_study
from qrp_core.errors import InputError
from qrp_core.pipeline import Runner
from qrp_core.study import load_study


def test_probe_transfers_to_a_second_collection_without_retraining(tmp_path):
    # one seed: the same planted "networks"; two image seeds: two collections of different images
    source = load_study(make_synthetic_study(tmp_path / "a", n_images=900, dim=16, seed=0, image_seed=0))
    target_path = make_synthetic_study(tmp_path / "b", n_images=1200, dim=16, seed=0, image_seed=1)
    target = load_study(target_path)
    cache = Cache(tmp_path / "cache")
    experts = default_transfer_groups(source)
    assert experts == "colour+other+texture"  # every group but the labels
    config = RunConfig(
        ks=(30,),
        seeds=(0,),
        models=("combo-net", "noise-net"),
        group_sets=(source.concepts.group_names, tuple(experts.split("+"))),
        kmeans=KMeansConfig(n_iter=20, n_restarts=3),
        probe=ProbeConfig(max_epochs=40),
    )
    Runner(source, config, cache, show_progress=False).run()

    # the paper's Table 7: the probe on the experts only; combo-net's clusters are (shape, colour) and
    # only colour is left to predict them from, so about one cluster in six is right, far above noise-net
    table = run_transfer(source, target, cache).set_index("model")
    assert set(table["groups"]) == {experts}
    assert 0.1 < table.loc["combo-net", "target_top1"] < 0.3
    assert table.loc["combo-net", "target_top5"] >= table.loc["combo-net", "target_top1"]
    assert table.loc["noise-net", "target_top1"] < 0.08
    assert table.loc["combo-net", "shared_concepts"] == table.loc["combo-net", "probe_concepts"]

    # asked for, the probe that reads ground-truth labels transfers too, and reads the target's labels
    table = run_transfer(source, target, cache, groups="other+labels+texture+colour").set_index("model")
    assert set(table["groups"]) == {"+".join(source.concepts.group_names)}
    assert table.loc["combo-net", "target_top1"] > 0.8
    assert table.loc["noise-net", "target_top1"] < 0.15
    stored = cache.read_table(source.name, f"transfer-{target.name}")
    assert len(stored) == 4  # both group sets' rows: a second transfer adds, never drops, rows


def test_transfer_of_a_group_set_not_computed_says_how_to_compute_it(tiny_study, tiny_cache):
    cache, _ = tiny_cache
    with pytest.raises(InputError, match="no source results on groups colour at K=7") as error:
        run_transfer(tiny_study, tiny_study, cache, k=7, groups="colour")  # the tiny run has K=8 only
    assert f"run {tiny_study.path} --groups colour --k 7" in error.value.fix
    with pytest.raises(InputError, match="unknown concept group"):
        run_transfer(tiny_study, tiny_study, cache, groups="colour+nonsense")


def test_concepts_are_matched_by_name(tiny_study):
    names = ["[Color] red", "not-there", "[labels] star"]
    matrix, shared = concepts_by_name(tiny_study, names)
    assert shared == 2 and matrix.shape == (600, 3)
    full = tiny_study.concepts
    red = full.matrix[:, full.names.index("[Color] red")].toarray().ravel()
    np.testing.assert_array_equal(matrix[:, 0].toarray().ravel(), red)
    assert matrix[:, 1].nnz == 0


def test_transfer_of_a_study_to_itself_scores_the_probe_against_its_own_clusters(tiny_study, tiny_cache):
    """Source = target: every image goes back to its own cluster, and the target scores are the
    probe's scores on all images, recomputed here with numpy and sklearn."""
    from sklearn.metrics import adjusted_mutual_info_score, normalized_mutual_info_score

    from qrp_core.results import load_probe

    cache, results = tiny_cache
    groups = "+".join(tiny_study.concepts.group_names)  # the tiny run's only group set
    table = run_transfer(tiny_study, tiny_study, cache, groups=groups)
    assert len(table) == len(results) == 6  # three models x two seeds
    concepts = tiny_study.concepts
    # for the probes without ties: how often the truth is exactly 5th, and how many images would
    # change cluster if the features were not centred on the source's mean
    exact, fifth, moved = [], [], []
    for row in table.itertuples():
        source = results[
            (results["model"] == row.model)
            & (results["k"] == row.k)
            & (results["seed"] == row.seed)
            & (results["groups"] == row.groups)
        ]
        assert len(source) == 1 and source["probe"].iloc[0] == row.probe
        source = source.iloc[0]
        assert (row.source_top1, row.source_nmi, row.source_ami) == (source["top1"], source["nmi"], source["ami"])
        if row.source_nmi > 0:  # a probe that kept the marginal predicts one cluster: NMI = AMI = 0
            assert row.source_ami != row.source_nmi

        clustering = cache.manifest("probes", row.probe)["inputs"]["clustering"]
        assignments = cache.load_array("clusterings", clustering, "assignments.npy")
        # the truth transfer uses: nearest centroid of the standardised features, by brute force
        x = np.asarray(tiny_study.features(row.model), np.float64)
        mean = cache.load_array("clusterings", clustering, "mean.npy").astype(np.float64)
        std = cache.load_array("clusterings", clustering, "std.npy").astype(np.float64)
        centroids = cache.load_array("clusterings", clustering, "centroids.npy").astype(np.float64)
        z = (x - mean) / std
        nearest = (((z[:, None, :] - centroids[None]) ** 2).sum(-1)).argmin(1)
        np.testing.assert_array_equal(nearest, assignments)  # a study's own images keep their clusters
        uncentred = (((x[:, None, :] / std - centroids[None]) ** 2).sum(-1)).argmin(1)
        stored = cache.load_array("probes", row.probe, "predictions.npy")  # argmax: ties to the lower id
        assert row.target_top1 == np.mean(stored == assignments)

        probe = load_probe(cache, row.probe)
        assert list(probe["names"]) == list(concepts.names)
        assert row.shared_concepts == row.probe_concepts == len(concepts.names)
        logits = concepts.matrix.toarray().astype(np.float64) @ probe["weight"].astype(np.float64) + probe[
            "bias"
        ].astype(np.float64)
        predicted = logits.argmax(1)
        truth_logit = logits[np.arange(len(logits)), assignments][:, None]
        above = (logits > truth_logit + 1e-5).sum(1)  # classes scored clearly above the truth
        level = (np.abs(logits - truth_logit) <= 1e-5).sum(1) - 1  # other classes scored as the truth
        if ((logits >= logits.max(1, keepdims=True) - 1e-5).sum(1) > 1).any() or (level > 0).any():
            # a probe with (float32) ties may break them either way: only bounds
            assert np.mean((above == 0) & (level == 0)) <= row.target_top1 <= np.mean(above == 0)
            assert np.mean(above + level < 5) <= row.target_top5 <= np.mean(above < 5)
            continue
        exact.append((row.model, row.seed))
        moved.append(np.mean(uncentred != assignments))
        assert row.target_top1 == pytest.approx(np.mean(predicted == assignments))
        assert row.target_top5 == pytest.approx(np.mean(above < 5))
        assert row.target_nmi == pytest.approx(normalized_mutual_info_score(assignments, predicted))
        assert row.target_ami == pytest.approx(adjusted_mutual_info_score(assignments, predicted))
        fifth.append(np.mean(above == 4))
    # the checks must tell the plausible slips apart: uncentred features, top-4 for top-5, NMI for AMI or top-1
    assert len(exact) >= 4 and max(fifth) > 0.05 and max(moved) > 0.02
    scores = table.set_index(["model", "seed"]).loc[exact]
    assert (scores["target_nmi"] - scores["target_ami"]).abs().min() > 1e-3
    assert (scores["target_nmi"] - scores["target_top1"]).abs().min() > 1e-3  # far above approx's 1e-6
