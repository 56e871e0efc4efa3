import numpy as np
import pytest

from qrp_core.analyses.transfer import concepts_by_name, default_transfer_groups, run_transfer
from qrp_core.errors import InputError
from qrp_core.cache import Cache
from qrp_core.pipeline import RunConfig, Runner
from qrp_core.probe import ProbeConfig
from qrp_core.quantize import KMeansConfig
from qrp_core.study import load_study
from qrp_core.synthetic import make_synthetic_study


def test_probe_transfers_to_a_second_collection_without_retraining(tmp_path):
    # one seed: the same planted "networks"; two image seeds: two collections of different images
    source = load_study(make_synthetic_study(tmp_path / "a", n_images=900, dim=16, seed=0, image_seed=0))
    target_path = make_synthetic_study(tmp_path / "b", n_images=1200, dim=16, seed=0, image_seed=1)
    target = load_study(target_path)
    cache = Cache(tmp_path / "cache")
    experts = default_transfer_groups(source)
    assert experts == "colour+other+texture"  # every group but the labels
    config = RunConfig(ks=(30,), seeds=(0,), models=("combo-net", "noise-net"),
                       group_sets=(source.concepts.group_names, tuple(experts.split("+"))),
                       kmeans=KMeansConfig(n_iter=20, n_restarts=3), probe=ProbeConfig(max_epochs=40))
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
