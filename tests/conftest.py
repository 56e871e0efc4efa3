"""A tiny synthetic study and a cache with its results, built once per test session."""

from __future__ import annotations

import importlib
import os

import pytest

from qrp_core.cache import Cache
from qrp_core.config import KMeansConfig, ProbeConfig, RunConfig
from qrp_core.demos.synthetic import make_synthetic_study
from qrp_core.pipeline import Runner
from qrp_core.study import load_study


def optional_library(name: str, reason: str):
    """``name`` imported, or the test skipped; where QRP_REQUIRE_OPTIONAL is set (.ci/run's second
    environment) a missing library is a failure, so those tests cannot pass by skipping."""
    if os.environ.get("QRP_REQUIRE_OPTIONAL"):
        return importlib.import_module(name)
    return pytest.importorskip(name, reason=reason)


def files_under(root) -> list:
    """Every path below ``root`` (a cache), to show that a refused command left it as it was."""
    return sorted(p.relative_to(root) for p in root.rglob("*")) if root.exists() else []


TINY_RUN = RunConfig(
    ks=(8,), seeds=(0, 1), kmeans=KMeansConfig(n_iter=10, n_restarts=2), probe=ProbeConfig(max_epochs=15)
)


@pytest.fixture(scope="session")
def tiny_study_path(tmp_path_factory):
    return make_synthetic_study(tmp_path_factory.mktemp("study"), n_images=600, dim=16, seed=0)


@pytest.fixture(scope="session")
def tiny_study(tiny_study_path):
    return load_study(tiny_study_path)


@pytest.fixture(scope="session")
def tiny_cache(tiny_study, tmp_path_factory):
    """A cache holding TINY_RUN's results for the tiny study, and the results table."""
    cache = Cache(tmp_path_factory.mktemp("cache"))
    results = Runner(tiny_study, TINY_RUN, cache, show_progress=False).run()
    return cache, results


@pytest.fixture(scope="session")
def demo_cache(tmp_path_factory):
    """A small demo (every view has content) in its own cache folder, for the app's tests."""
    from qrp_core.demos.build import build_demo

    root = tmp_path_factory.mktemp("demo-cache")
    config = RunConfig(seeds=(0, 1), kmeans=KMeansConfig(n_iter=10, n_restarts=2), probe=ProbeConfig(max_epochs=15))
    study = build_demo(Cache(root), config, world="synthetic", n_images=600, show_progress=False)
    return root, study
