import numpy as np
import pytest

from qrp_core.errors import InputError
from qrp_core.features import standardisation_stats, standardise
from qrp_core.quantize import KMeansConfig, assign, kmeans


def _blobs(n=2000, d=8, k=5, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=6.0, size=(k, d))
    truth = rng.integers(0, k, n)
    return (centres[truth] + rng.normal(size=(n, d))).astype(np.float32), truth


def test_standardisation_stats_match_numpy_in_chunks_with_constant_dims():
    rng = np.random.default_rng(0)
    x = rng.normal(loc=1000.0, scale=3.0, size=(1001, 6)).astype(np.float32)
    x[:, 2] = 7.5  # constant dimension
    mean, std, n_constant = standardisation_stats(x, source="x", chunk_rows=100)
    np.testing.assert_allclose(mean, x.astype(np.float64).mean(0), rtol=1e-12)
    expected_std = x.astype(np.float64).std(0)
    expected_std[2] = 1.0
    np.testing.assert_allclose(std, expected_std, rtol=1e-9)
    assert n_constant == 1
    z = standardise(x, mean, std)
    assert z.dtype == np.float32 and z.flags.c_contiguous
    np.testing.assert_allclose(z[:, 2], 0.0)
    np.testing.assert_allclose(z.std(0)[[0, 1, 3]], 1.0, rtol=1e-4)


def test_kmeans_forces_every_iteration_records_restarts_and_assigns_nearest():
    x, _ = _blobs()
    config = KMeansConfig(n_clusters=5, n_iter=25, n_restarts=3, max_points_per_centroid=100)  # subsampled
    result = kmeans(x, config, seed=0, chunk_rows=300)
    st = result.stats
    assert st["device"] == "cpu"
    assert st["iterations_run"] == [25, 25, 25]
    assert st["n_train_points"] == 500  # K x max_points_per_centroid, subsampled
    objectives = [r["objective"] for r in st["restarts"]]
    assert st["best_restart"] == int(np.argmin(objectives))
    # assignments are the brute-force nearest centroid in standardised space
    z = (x - result.mean) / result.std
    distances = ((z[:, None, :] - result.centroids[None]) ** 2).sum(-1)
    np.testing.assert_array_equal(result.assignments, distances.argmin(1))
    np.testing.assert_allclose(result.distances, distances.min(1), rtol=1e-4, atol=1e-4)
    assert st["inertia_all_points"] == pytest.approx(distances.min(1).sum(), rel=1e-4)


def test_restarts_escape_local_minima_and_recover_planted_blobs():
    from sklearn.metrics import adjusted_rand_score
    x, truth = _blobs()
    one = kmeans(x, KMeansConfig(n_clusters=5, n_iter=20, n_restarts=1), seed=1)
    ten = kmeans(x, KMeansConfig(n_clusters=5, n_iter=20, n_restarts=10), seed=1)
    assert adjusted_rand_score(truth, one.assignments) < 0.9  # random init merged two blobs
    assert adjusted_rand_score(truth, ten.assignments) == pytest.approx(1.0)
    assert ten.stats["restarts"][0]["objective"] == pytest.approx(one.stats["restarts"][0]["objective"])


def test_early_stop_records_fewer_iterations():
    x, _ = _blobs()
    result = kmeans(x, KMeansConfig(n_clusters=5, n_iter=100, n_restarts=1, early_stop_threshold=0.0), seed=0)
    assert 1 <= result.stats["iterations_run"][0] < 100


def test_same_seed_same_clustering():
    x, _ = _blobs(n=1500, d=16, k=20, seed=3)
    config = KMeansConfig(n_clusters=20, n_iter=15, n_restarts=2, max_points_per_centroid=50)
    a, b = kmeans(x, config, seed=4), kmeans(x, config, seed=4)
    np.testing.assert_array_equal(a.assignments, b.assignments)
    np.testing.assert_array_equal(a.centroids, b.centroids)
    c = kmeans(x, config, seed=5)
    assert not np.array_equal(a.centroids, c.centroids)


def test_assign_in_chunks_on_the_fly_equals_one_pass_pre_standardised():
    x, _ = _blobs(n=700)
    centroids = np.random.default_rng(0).normal(size=(9, 8)).astype(np.float32)
    mean, std = x.mean(0).astype(np.float64), x.std(0).astype(np.float64)
    a, distances_a = assign(x, centroids, (mean, std), chunk_rows=64)
    b, distances_b = assign(standardise(x, mean, std), centroids, chunk_rows=10_000)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(distances_a, distances_b, rtol=1e-5)


@pytest.mark.parametrize("k", [1, 101])
def test_bad_k_is_a_clear_error(k):
    x, _ = _blobs(n=100)
    with pytest.raises(InputError, match=r"feats.npy: K=\d+ .*Fix: "):
        kmeans(x, KMeansConfig(n_clusters=k), seed=0, source="feats.npy")


def test_non_finite_features_name_the_row():
    x, _ = _blobs(n=300)
    x[123, 4] = np.nan
    with pytest.raises(InputError, match=r"feats.npy: non-finite value \(NaN or Inf\) in row 123"):
        kmeans(x, KMeansConfig(n_clusters=5), seed=0, source="feats.npy", chunk_rows=50)
