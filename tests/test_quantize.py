import dataclasses

import numpy as np
import pytest
from sklearn.metrics import normalized_mutual_info_score

from qrp_core.config import KMeansConfig
from qrp_core.errors import InputError
from qrp_core.features import standardisation_stats, standardise
from qrp_core.quantize import assign, kmeans, resolve_backend


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


@pytest.mark.parametrize("scale", [1e-9, 1.0, 1e6])
def test_standardisation_is_relative_to_the_features_own_scale(scale):
    """A random network's features of order 1e-9 are standardised like any other (all 1,280 dimensions of
    a random-init EfficientNet-Lite0 were taken as constant); K-means then finds the same clusters at any scale."""
    x, truth = _blobs(n=600, d=6, k=4)
    x = x.astype(np.float64) * scale
    x[:, 5] = 3.0 * scale  # one constant dimension at every scale
    x = x.astype(np.float32)
    mean, std, n_constant = standardisation_stats(x, source="x", chunk_rows=100)
    assert n_constant == 1 and std[5] == 1.0
    np.testing.assert_allclose(std[:5], x.astype(np.float64).std(0)[:5], rtol=1e-6)
    result = kmeans(x, KMeansConfig(n_clusters=4, n_iter=20, n_restarts=2), seed=0)
    assert result.stats["n_constant_dims"] == 1
    assert normalized_mutual_info_score(truth, result.assignments) > 0.95


def test_features_constant_in_every_dimension_are_refused(tmp_path):
    with pytest.raises(InputError, match=r"feats.npy: all 4 feature dimensions are constant over the 50 images"):
        standardisation_stats(np.full((50, 4), 0.25, np.float32), source=tmp_path / "feats.npy")
    with pytest.raises(InputError, match="all 3 feature dimensions are constant"):
        standardisation_stats(np.zeros((50, 3), np.float32), source="zeros")


def test_kmeans_forces_every_iteration_records_restarts_and_assigns_nearest():
    x, _ = _blobs()
    config = KMeansConfig(n_clusters=5, n_iter=25, n_restarts=3, max_points_per_centroid=100)  # subsampled
    result = kmeans(x, config, seed=0, chunk_rows=300)
    st = result.stats
    assert (st["backend"], st["device"]) == resolve_backend("auto")  # a GPU when one is present
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


def test_torch_lloyd_follows_faiss_from_the_same_centroids():
    import faiss
    import torch

    from qrp_core.torch_kmeans import lloyd

    x, _ = _blobs(n=3000, d=16, k=12, seed=3)
    x = standardise(x, x.mean(0), x.std(0))
    init = x[np.random.default_rng(0).choice(len(x), 30, replace=False)]
    km = faiss.Kmeans(16, 30, niter=15, max_points_per_centroid=len(x), early_stop_threshold=-1.0)
    km.train(x, init_centroids=init)
    centroids, objectives, _ = lloyd(torch.as_tensor(x), torch.as_tensor(init), 15)
    assert len(objectives) == len(km.obj) == 15
    np.testing.assert_allclose(objectives, km.obj, rtol=1e-5)
    np.testing.assert_allclose(centroids.numpy(), km.centroids, atol=1e-4)


def test_torch_backend_gives_the_faiss_clustering(monkeypatch):
    import qrp_core.quantize as quantize

    x, _ = _blobs(n=3000, d=16, k=12, seed=4)
    config = KMeansConfig(n_clusters=12, n_iter=12, n_restarts=3, max_points_per_centroid=200)
    faiss_result = kmeans(x, dataclasses.replace(config, device="cpu"), seed=2)
    monkeypatch.setattr(quantize, "resolve_backend", lambda device: ("torch", "cpu"))
    torch_result = kmeans(x, config, seed=2, chunk_rows=700)
    assert torch_result.stats["backend"] == "torch" and faiss_result.stats["backend"] == "faiss"
    np.testing.assert_array_equal(torch_result.assignments, faiss_result.assignments)
    np.testing.assert_allclose(
        [r["objective"] for r in torch_result.stats["restarts"]],
        [r["objective"] for r in faiss_result.stats["restarts"]],
        rtol=1e-5,
    )
    np.testing.assert_allclose(torch_result.distances, faiss_result.distances, rtol=1e-4, atol=1e-4)


def test_torch_lloyd_stops_early_when_faiss_does():
    import faiss
    import torch

    from qrp_core.torch_kmeans import lloyd

    for seed in range(3):
        x, _ = _blobs(seed=seed)
        init = x[np.random.default_rng(seed).choice(len(x), 5, replace=False)]
        km = faiss.Kmeans(8, 5, niter=100, max_points_per_centroid=len(x), early_stop_threshold=0.0)
        km.train(x, init_centroids=init)
        _, objectives, _ = lloyd(torch.as_tensor(x), torch.as_tensor(init), 100, early_stop_threshold=0.0)
        assert len(objectives) == len(km.obj) < 100


def test_torch_lloyd_splits_empty_clusters_like_faiss():
    import faiss
    import torch

    from qrp_core.torch_kmeans import lloyd, nearest_centroids

    x, _ = _blobs(n=4000, d=6, k=3, seed=5)
    init = np.concatenate([np.repeat(x[:1], 5, axis=0), x[1:40]])  # 4 duplicates of centroid 0: empty
    km = faiss.Kmeans(6, len(init), niter=8, max_points_per_centroid=len(x), early_stop_threshold=-1.0)
    km.train(x, init_centroids=init)
    centroids, objectives, _ = lloyd(torch.as_tensor(x), torch.as_tensor(init), 8)
    labels, _, _ = nearest_centroids(torch.as_tensor(x), torch.as_tensor(init))
    assert np.bincount(labels.numpy(), minlength=len(init))[1:5].sum() == 0  # the splits had work to do
    np.testing.assert_allclose(objectives, km.obj, rtol=1e-5)
    np.testing.assert_allclose(centroids.numpy(), km.centroids, atol=1e-4)


def test_chunked_reads_of_a_memory_map_equal_indexing_and_leave_no_resident_pages(tmp_path):
    from qrp_core.features import read_rows, standardised_rows, take_rows

    x = np.random.default_rng(0).normal(size=(40_000, 256)).astype(np.float32)  # 41 MB
    np.save(tmp_path / "x.npy", x)
    mapped = np.load(tmp_path / "x.npy", mmap_mode="r")

    def resident_file_kb():
        return int(next(line.split()[1] for line in open("/proc/self/status") if line.startswith("RssFile")))

    before = resident_file_kb()
    chunks = [read_rows(mapped, start, start + 4096) for start in range(0, len(x), 4096)]
    assert resident_file_kb() - before < 8_000  # plain slicing of the map would add ~41,000 kB
    np.testing.assert_array_equal(np.concatenate(chunks), x)
    rows = np.sort(np.random.default_rng(1).choice(len(x), 500, replace=False))
    np.testing.assert_array_equal(take_rows(mapped, rows), x[rows])
    mean, std = x.mean(0).astype(np.float64), x.std(0).astype(np.float64)
    np.testing.assert_array_equal(
        standardised_rows(mapped, mean, std, rows, chunk_rows=64), standardise(x[rows], mean, std)
    )


def _bf16_products(a, b):
    """Products from bfloat16-rounded inputs (8-bit mantissas: at most 2^-7 relative error per
    product), a CPU stand-in for a GPU's TF32 tensor cores."""
    return a.bfloat16().float() @ b.bfloat16().float().T


def _overlapping_blobs():
    import torch

    x, _ = _blobs(n=6000, d=64, k=40, seed=6)
    x = standardise(x, x.mean(0), x.std(0)) + np.random.default_rng(7).normal(size=(6000, 64)).astype(np.float32)
    centroids = x[np.random.default_rng(8).choice(6000, 200, replace=False)]
    return torch.as_tensor(x), torch.as_tensor(centroids)


def _assert_same_search(labels, distances, x, centroids):
    """Equal to the float32 search, except between centroids whose float32 distances tie to 1e-5."""
    from qrp_core.torch_kmeans import nearest_centroids

    exact_labels, exact_distances, recomputed = nearest_centroids(x, centroids)
    assert recomputed == 0
    np.testing.assert_allclose(distances.numpy(), exact_distances.numpy(), rtol=1e-5, atol=1e-3)
    differ = np.flatnonzero(labels.numpy() != exact_labels.numpy())
    full = ((x[differ, None, :] - centroids[None]) ** 2).sum(-1)
    gap = full.gather(1, labels[differ, None]) - full.gather(1, exact_labels[differ, None])
    assert (gap.abs() <= 1e-5 * full.min(1).values[:, None]).all()


def test_low_precision_products_with_float32_where_ambiguous_give_the_float32_search():
    from qrp_core.torch_kmeans import nearest_centroids

    x, centroids = _overlapping_blobs()
    labels, distances, recomputed = nearest_centroids(
        x, centroids, chunk_rows=1000, coarse_products=(_bf16_products, 2.0**-6)
    )
    assert 0 < recomputed < 0.75 * len(x)  # many rows settled by the coarse products, some recomputed
    _assert_same_search(labels, distances, x, centroids)
    # the coarse products alone pick other centroids: without the recomputation the test fails
    coarse, _, _ = nearest_centroids(x, centroids, coarse_products=(_bf16_products, 0.0))
    exact, _, _ = nearest_centroids(x, centroids)
    assert (coarse != exact).sum() > 10


@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="needs a CUDA GPU")
def test_tf32_search_on_cuda_gives_the_float32_search():
    import torch

    from qrp_core.torch_kmeans import lloyd, nearest_centroids

    x, centroids = _overlapping_blobs()
    labels, distances, recomputed = nearest_centroids(x.cuda(), centroids.cuda(), chunk_rows=1000)
    assert recomputed > 0
    _assert_same_search(labels.cpu(), distances.cpu(), x, centroids)
    centroids_a, objectives_a, _ = lloyd(x.cuda(), centroids.cuda(), 5)
    centroids_b, objectives_b, _ = lloyd(x.cuda(), centroids.cuda(), 5)  # deterministic: the same bits twice
    assert objectives_a == objectives_b
    assert torch.equal(centroids_a, centroids_b)


@pytest.mark.parametrize("max_points_per_centroid", [40, 10_000])  # a sample of the rows, and all of them
def test_kmeans_on_features_resident_on_the_device_equals_reading_them(monkeypatch, tmp_path, max_points_per_centroid):
    import qrp_core.quantize as quantize
    from qrp_core.quantize import standardised_on_device

    x, _ = _blobs(n=3000, d=16, k=12, seed=9)
    np.save(tmp_path / "x.npy", x * 3 + 1)
    x = np.load(tmp_path / "x.npy", mmap_mode="r")
    monkeypatch.setattr(quantize, "resolve_backend", lambda device: ("torch", "cpu"))
    config = KMeansConfig(n_clusters=12, n_iter=8, n_restarts=2, max_points_per_centroid=max_points_per_centroid)
    stats = standardisation_stats(x, source="x")
    on_device = standardised_on_device(x, stats[0], stats[1], "cpu", chunk_rows=700)
    np.testing.assert_array_equal(on_device.numpy(), standardise(np.asarray(x), stats[0], stats[1]))
    read = kmeans(x, config, seed=3, standardisation=stats, chunk_rows=700)
    resident = kmeans(x, config, seed=3, standardisation=stats, on_device=on_device)
    assert resident.stats["features_resident_on_device"] and not read.stats["features_resident_on_device"]
    np.testing.assert_array_equal(resident.assignments, read.assignments)
    np.testing.assert_array_equal(resident.distances, read.distances)
    np.testing.assert_array_equal(resident.centroids, read.centroids)


def test_resident_features_budget_counts_the_sample_and_its_sorted_copy():
    from qrp_core.quantize import resident_bytes

    gib = 2**30
    # ImageNet: 1.28M x 2048 features (9.8 GiB) + a 256k-row sample + its sorted copy (2 x 2 GiB)
    assert resident_bytes((1_281_167, 2048), 256_000) / gib == pytest.approx(9.7745 + 2 * 1.9531, abs=1e-3)
    # every row trains: the sample is the features themselves, only the sorted copy is extra
    assert resident_bytes((1000, 10), 5000) == 4 * 10 * 2000


def test_faiss_trains_on_the_whole_sample_beyond_its_default_256_points_per_centroid(monkeypatch):
    """max_points_per_centroid above faiss's own default (256): faiss must train on all 3000 sampled
    rows, not quietly subsample 5 x 256 of them. The last objective of each restart then is the sum
    over all rows of the squared distance to the nearest (converged) centroid, and the torch backend,
    which never subsamples, gives the same centroids."""
    import qrp_core.quantize as quantize

    x, _ = _blobs(n=3000, d=8, k=5, seed=11)
    config = KMeansConfig(n_clusters=5, n_iter=30, n_restarts=2, max_points_per_centroid=1000, device="cpu")
    result = kmeans(x, config, seed=0)
    assert result.stats["backend"] == "faiss" and result.stats["n_train_points"] == 3000
    z = standardise(x, result.mean, result.std)
    inertia = ((z[:, None, :] - result.centroids[None]) ** 2).sum(-1).min(1).sum(dtype=np.float64)
    best = result.stats["restarts"][result.stats["best_restart"]]
    assert best["objective"] == pytest.approx(inertia, rel=1e-4)  # over 3000 rows, not 1280
    monkeypatch.setattr(quantize, "resolve_backend", lambda device: ("torch", "cpu"))
    torch_result = kmeans(x, config, seed=0)
    np.testing.assert_allclose(torch_result.centroids, result.centroids, atol=1e-4)
    np.testing.assert_array_equal(torch_result.assignments, result.assignments)
