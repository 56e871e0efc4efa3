"""faiss's bundled OpenBLAS gets a kernel that knows the CPU, only where it would not, and nothing else changes."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from qrp_core.blas import bundled_openblas, core_type_for, faiss_blas
from qrp_core.config import KMeansConfig
from qrp_core.quantize import kmeans

SKYLAKE_SERVER = {"sse3", "avx", "avx2", "fma", "avx512f", "avx512cd", "avx512bw", "avx512dq", "avx512vl"}


@pytest.mark.parametrize(
    ("kernel", "flags", "named"),
    [
        ("Prescott", SKYLAKE_SERVER, "SKYLAKEX"),  # a CPU newer than the library, with AVX-512
        ("Prescott", {"sse3", "avx", "avx2", "fma"}, "HASWELL"),  # newer, AVX2 only
        ("Prescott", {"sse3"}, None),  # really an old CPU
        ("SkylakeX", SKYLAKE_SERVER, None),  # the library knows the CPU: its choice stands
        ("Haswell", SKYLAKE_SERVER, None),
        ("Zen", {"avx2", "fma"}, None),
    ],
)
def test_a_kernel_is_named_only_for_a_generic_choice_on_a_capable_cpu(kernel, flags, named):
    assert core_type_for(kernel, flags) == named


PROBE = """
import json, os, sys
from qrp_core.blas import faiss_blas
info = faiss_blas() if sys.argv[1] == "faiss" else None  # faiss loads first, then scipy's own OpenBLAS
import scipy.linalg
from threadpoolctl import threadpool_info
kernels = {p["filepath"].rsplit("/", 1)[-1]: p.get("architecture") for p in threadpool_info() if p["user_api"] == "blas"}
print(json.dumps({"faiss": info, "kernels": kernels, "env": os.environ.get("OPENBLAS_CORETYPE")}))
"""


def probe(what: str, **env) -> dict:
    environment = {k: v for k, v in os.environ.items() if k != "OPENBLAS_CORETYPE"} | env
    out = subprocess.run(
        [sys.executable, "-c", PROBE, what], env=environment, capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(bundled_openblas() is None, reason="faiss is not linked to a bundled OpenBLAS here")
def test_only_faiss_blas_changes_and_a_users_choice_wins():
    with_faiss, without = probe("faiss"), probe("no faiss")
    assert with_faiss["env"] is None  # the variable was removed once faiss had loaded
    named = with_faiss["faiss"]["faiss_blas_kernel_named_by_qrp"]
    if named is not None:
        assert with_faiss["faiss"]["faiss_blas_kernel"].upper() == named
    faiss_library = bundled_openblas().name
    others = {name: kernel for name, kernel in with_faiss["kernels"].items() if name != faiss_library}
    assert others == without["kernels"]  # numpy's and scipy's OpenBLAS chose as they do without faiss
    user = probe("faiss", OPENBLAS_CORETYPE="PRESCOTT")
    assert user["faiss"]["faiss_blas_kernel"] == "Prescott" and user["faiss"]["faiss_blas_kernel_named_by_qrp"] is None


def test_the_clustering_records_the_blas_that_ran():
    x = np.random.default_rng(0).normal(size=(300, 8)).astype(np.float32)
    stats = kmeans(x, KMeansConfig(n_clusters=5, n_iter=5, n_restarts=1, device="cpu"), seed=0).stats
    expected = faiss_blas()
    assert {k: stats[k] for k in expected} == expected
    if bundled_openblas() is not None:
        assert stats["faiss_blas"].startswith("OpenBLAS ") and stats["faiss_blas_kernel"]


def test_assignments_with_the_named_kernel_are_float32_exact():
    """Wherever rounding cannot swap the two nearest centroids, the nearest is float64's; distances agree to
    float32 precision (whichever kernel faiss's BLAS chose)."""
    from qrp_core.quantize import assign

    rng = np.random.default_rng(0)
    x = rng.normal(size=(4000, 512)).astype(np.float32)
    centroids = rng.normal(size=(300, 512)).astype(np.float32)
    labels, distances = assign(x, centroids)
    exact = ((x.astype(np.float64)[:, None, :] - centroids.astype(np.float64)[None]) ** 2).sum(-1)
    two = np.sort(exact, axis=1)[:, :2]
    clear = two[:, 1] - two[:, 0] > 1e-4 * two[:, 0]
    assert clear.mean() > 0.99
    np.testing.assert_array_equal(labels[clear], exact.argmin(1)[clear])
    np.testing.assert_allclose(distances, exact.min(1), rtol=1e-5)


@pytest.mark.skipif(not os.path.exists("/proc/stat"), reason="reads /proc")
def test_a_core_busy_elsewhere_is_not_counted_free_and_faiss_threads_come_back():
    from qrp_core.blas import faiss_threads_on_free_cores, free_cores, import_faiss

    cores = len(os.sched_getaffinity(0))
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        import time

        time.sleep(0.3)
        assert free_cores(window=0.3, reuse_for=0) <= max(1, cores - 1)
    finally:
        hog.kill()
    faiss = import_faiss()
    before = faiss.omp_get_max_threads()
    with faiss_threads_on_free_cores():
        assert 1 <= faiss.omp_get_max_threads() <= before
    assert faiss.omp_get_max_threads() == before
