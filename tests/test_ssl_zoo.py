"""The SSL zoo on a reduced budget: the signatures that held at full budget (docs/ssl-zoo.md) hold in direction.

Four methods train for 80 steps on 2,048 drawn images and are measured on 600 others at K=10 over
three seeds; only directions are asserted, each one that the full build also shows and that held for two
training seeds at this budget (rotnet's labels-only NMI above random's, which the full build shows, did not).
"""

from __future__ import annotations

import pytest

from qrp_core.cache import Cache
from qrp_core.config import KMeansConfig, ProbeConfig, RunConfig
from qrp_core.demos.ssl_world import ZooBudget, make_ssl_world
from qrp_core.pipeline import Runner
from qrp_core.study import load_study

METHODS = ("supervised", "rotnet", "random", "simclr")
BUDGET = ZooBudget(n_train=2048, epochs=5, batch_size=128)


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    root = tmp_path_factory.mktemp("ssl")
    study = load_study(make_ssl_world(root / "ssl", n_images=600, budget=BUDGET, methods=METHODS, show_progress=False))
    config = RunConfig(
        ks=(10,),
        seeds=(0, 1, 2),
        group_sets=(("labels",), ("labels", "colour"), ("labels", "scene")),
        kmeans=KMeansConfig(n_iter=20, n_restarts=2),
        probe=ProbeConfig(max_epochs=30),
    )
    results = Runner(study, config, Cache(root / "cache"), show_progress=False).run()
    nmi = results.groupby(["model", "groups"])["nmi"].mean().unstack("groups") * 100
    return study, root, nmi


def test_the_study_records_each_method(zoo):
    study, root, _ = zoo
    assert list(study.models) == list(METHODS)
    families = {name: model.metadata["family"] for name, model in study.models.items()}
    assert families == {
        "supervised": "supervised",
        "rotnet": "pretext",
        "random": "random init",
        "simclr": "contrastive",
    }
    assert study.models["random"].metadata["epochs"] == 0 and study.models["simclr"].metadata["epochs"] == 5
    assert not any(p.name.startswith("scene2-") for p in (root / "ssl" / "images").glob("*.jpg"))  # never evaluated
    assert len(list((root / "ssl" / "train" / "images").rglob("scene2-*.jpg"))) == 2048


def test_shape_trained_models_cluster_by_shape(zoo):
    study, _, nmi = zoo
    labels_only = nmi["labels"]
    assert labels_only["supervised"] > labels_only.drop("supervised").max()
    accuracy = {name: model.metadata["linear_acc"] for name, model in study.models.items()}
    assert accuracy["supervised"] == max(accuracy.values())


def test_colour_and_background_explain_untrained_features_more_than_shape_trained_ones(zoo):
    _, _, nmi = zoo
    gain = {group: nmi[f"labels+{group}"] - nmi["labels"] for group in ("colour", "scene")}
    for group in ("colour", "scene"):
        assert gain[group]["random"] > gain[group]["supervised"], group
    assert gain["colour"]["rotnet"] < gain["colour"]["simclr"]
    assert gain["scene"]["rotnet"] < gain["scene"]["random"]


def test_a_second_build_reuses_every_checkpoint_and_feature_file(zoo):
    _, root, _ = zoo
    written = sorted((root / "ssl" / "checkpoints").rglob("*.pt")) + sorted((root / "ssl" / "features").glob("*.npy"))
    before = {path: path.stat().st_mtime_ns for path in written}
    make_ssl_world(root / "ssl", n_images=600, budget=BUDGET, methods=METHODS, show_progress=False)
    assert len(written) == 2 * len(METHODS) - 1 + len(METHODS)  # random has no training state
    assert {path: path.stat().st_mtime_ns for path in written} == before


def test_demo_ssl_computes_every_view_but_transfer(tmp_path, monkeypatch, capsys):
    import functools

    from qrp_core.cli import main
    from qrp_core.demos import build

    small = functools.partial(
        make_ssl_world, budget=ZooBudget(n_train=256, epochs=1, batch_size=128), methods=("supervised", "random")
    )
    monkeypatch.setattr(build, "make_ssl_world", small)
    argv = ["demo", "--study", "ssl", "--cache", str(tmp_path), "--n-images", "300", "--seeds", "2"]
    assert main([*argv, "--iters", "5", "--restarts", "1", "--epochs", "5"]) == 0
    captured = capsys.readouterr()
    assert "] training supervised and extracting its features (1/2)" in captured.err
    assert "built in " in captured.err and "supervised" in captured.out and "random" in captured.out
    tables = {p.stem for p in (tmp_path / "analyses" / "ssl").glob("*.parquet")}
    assert {"ablation-gain", "ablation-cumulative", "pairs", "significance"} <= tables
    assert not any("transfer" in t for t in tables) and (tmp_path / "ssl" / "study.toml").is_file()
