import numpy as np

from qrp_core.split import TEST, TRAIN, VAL, SplitConfig, stratified_split


def test_split_is_stratified_per_cluster():
    rng = np.random.default_rng(0)
    sizes = rng.integers(20, 200, size=30)
    assignments = rng.permutation(np.repeat(np.arange(30), sizes))
    split, stats = stratified_split(assignments, seed=0)
    for c, n in enumerate(sizes):
        members = split[assignments == c]
        n_test = int(np.floor(0.2 * n + 0.5))
        assert (members == TEST).sum() == n_test
        assert (members == VAL).sum() == int(np.floor(0.2 * (n - n_test) + 0.5))
    assert stats["n_train"] + stats["n_val"] + stats["n_test"] == len(assignments)
    assert abs(stats["n_test"] / len(assignments) - 0.2) < 0.01
    assert stats["clusters_without_test"] == []


def test_tiny_clusters_are_reported_not_crashed_on():
    assignments = np.array([0] * 50 + [1] + [2, 2] + [3] * 3)
    split, stats = stratified_split(assignments, seed=1)
    assert split[50] == TRAIN and (split[51:53] == TRAIN).all()
    assert stats["clusters_without_test"] == [1, 2]
    assert 1 in stats["clusters_without_val"] and 2 in stats["clusters_without_val"]


def test_split_depends_on_seed_only():
    assignments = np.random.default_rng(2).integers(0, 10, 1000)
    a, _ = stratified_split(assignments, seed=3)
    b, _ = stratified_split(assignments, seed=3)
    c, _ = stratified_split(assignments, seed=4)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_custom_fractions():
    assignments = np.zeros(1000, dtype=int)
    split, stats = stratified_split(assignments, SplitConfig(test_fraction=0.5, val_fraction=0.1), seed=0)
    assert stats["n_test"] == 500 and stats["n_val"] == 50
