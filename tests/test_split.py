import numpy as np
import pytest

from qrp_core.config import SplitConfig
from qrp_core.split import TEST, TRAIN, VAL, min_cluster_size, stratified_split


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


@pytest.mark.parametrize(
    "size,test_fraction,n_test",
    [
        (5, 0.5, 3),
        (9, 0.5, 5),
        (1, 0.5, 1),
        (10, 0.25, 3),
        (2, 0.25, 1),
        (7, 0.5, 4),
        (6, 0.25, 2),
    ],
)
def test_half_ties_round_up(size, test_fraction, n_test):
    """size * test_fraction = x.5 gives x + 1 test images (half up, never to the even neighbour)."""
    split, stats = stratified_split(np.zeros(size, dtype=int), SplitConfig(test_fraction, 0.0), seed=0)
    assert (split == TEST).sum() == stats["n_test"] == n_test
    assert stats["n_val"] == 0 and stats["n_train"] == size - n_test


def test_clusters_without_val_are_listed_by_id():
    """Sizes 50, 1, 2, 3 under 20%/20%: the 3-image cluster gets a test image but no validation one."""
    ids = np.array([7] * 50 + [3] + [10, 10] + [42] * 3)
    shuffled = np.random.default_rng(0).permutation(ids)
    split, stats = stratified_split(shuffled, seed=1)
    assert stats["clusters_without_test"] == [3, 10]
    assert stats["clusters_without_val"] == [3, 10, 42]
    no_val = sorted(int(c) for c in np.unique(shuffled) if not (split[shuffled == c] == VAL).any())
    assert no_val == [3, 10, 42]


@pytest.mark.parametrize("fractions", [(0.2, 0.2), (0.5, 0.5), (0.4, 0.5), (0.1, 0.1), (0.3, 0.25), (0.5, 0.2)])
def test_min_cluster_size_is_the_smallest_cluster_every_split_gets_an_image_from(fractions):
    config = SplitConfig(*fractions)

    def every_split_gets_one(size):
        split, _ = stratified_split(np.zeros(size, dtype=int), config, seed=0)
        return all((split == s).any() for s in (TRAIN, VAL, TEST))

    works = [size for size in range(1, 60) if every_split_gets_one(size)]
    assert min_cluster_size(config) == works[0]
    assert works == list(range(works[0], 60))  # and every larger cluster works too
