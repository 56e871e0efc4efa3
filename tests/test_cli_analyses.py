"""Each analysis verb runs from the command line and prints what its engine function computed."""

import pytest

from qrp_core.cache import Cache
from qrp_core.cli import main
from qrp_core.demos.synthetic import make_synthetic_study

GRID = ["--k", "8", "--seeds", "2", "--iters", "10", "--restarts", "2", "--epochs", "15"]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cli-analyses-cache")


def _run(capsys, *argv):
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return captured.out


def test_ablation_pairs_explain(tiny_study_path, cache, capsys):
    out = _run(
        capsys,
        "ablation",
        tiny_study_path,
        "--cache",
        cache,
        "--models",
        "combo-net",
        "--order",
        "colour,texture,other",
        *GRID,
    )
    assert "Cumulative (Fig. 4)" in out and "labels+colour+other+texture" in out and "Per-group gain" in out
    out = _run(
        capsys,
        "pairs",
        tiny_study_path,
        "--cache",
        cache,
        "--models",
        "combo-net",
        "--added",
        "colour",
        "--top",
        "3",
        *GRID,
    )
    assert "pairs whose confusion drops most when 'colour' joins labels" in out
    assert "[Color]" in out.split("why")[1]  # the colour concepts explain the top pair
    out = _run(
        capsys,
        "explain",
        tiny_study_path,
        "--cache",
        cache,
        "--model",
        "combo-net",
        "--k",
        "8",
        "--groups",
        "labels+colour",
        "--pair",
        "0",
        "1",
        "--top",
        "3",
    )
    assert "theta_0 - theta_1" in out and "images nearest the centroid: img0-" in out
    probe = [
        "explain",
        tiny_study_path,
        "--cache",
        cache,
        "--model",
        "combo-net",
        "--k",
        "8",
        "--groups",
        "labels+colour",
    ]
    for pair in (("3", "3"), ("0", "8")):  # one cluster with itself (all zeros); an id beyond K-1
        assert main([str(a) for a in probe] + ["--pair", *pair]) == 2
        error = capsys.readouterr().err.strip()
        assert error.startswith("error: ") and "K=8" in error and "Fix: give two different cluster ids in 0..7" in error
        assert "Traceback" not in error and len(error.splitlines()) == 1


def test_analyses_default_to_what_the_cache_holds(tiny_study_path, cache, capsys):
    """`pairs` without --k and --seeds analyses the K and seeds the results hold (it trained K=1000 x 5 seeds
    of new clusterings before); `explain` without --groups shows the probe of the comparison that ranked the
    pair (it showed the probe on all groups), and asks when two comparisons ranked it."""
    test_ablation_pairs_explain(tiny_study_path, cache, capsys)  # K=8, seeds 0 and 1; pairs labels -> + colour
    pairs = Cache(cache).read_table("synthetic-600", "pairs")
    top = pairs[pairs["seed"] == 0].sort_values("drop").iloc[-1]
    explain = [
        "explain",
        tiny_study_path,
        "--cache",
        cache,
        "--model",
        "combo-net",
        "--k",
        8,
        "--pair",
        top["i"],
        top["j"],
    ]
    assert main([str(a) for a in explain]) == 0
    assert "note: the probe on labels+colour (--groups chooses another)" in capsys.readouterr().err

    clusterings = sorted(p.name for p in (cache / "clusterings").iterdir())
    common = ["--models", "combo-net", "--added", "texture", "--iters", "10", "--restarts", "2", "--epochs", "15"]
    out = _run(capsys, "pairs", tiny_study_path, "--cache", cache, *common)
    assert "combo-net K=8 seed=1" in out and "K=1000" not in out
    assert sorted(p.name for p in (cache / "clusterings").iterdir()) == clusterings  # no new clustering

    pairs = Cache(cache).read_table("synthetic-600", "pairs")
    seed0 = pairs[pairs["seed"] == 0]
    both = set.intersection(*(set(zip(part["i"], part["j"])) for _, part in seed0.groupby("added")))
    i, j = sorted(both)[0]
    explain[-2:] = [i, j]
    assert main([str(a) for a in explain]) == 2
    error = capsys.readouterr().err
    assert "compared under several group sets: ['labels+colour', 'labels+texture']" in error
    assert "Fix: choose one with --groups (labels+colour or labels+texture)" in error


def test_sweep_k_layers_significance(tiny_study_path, cache, capsys):
    out = _run(
        capsys, "sweep-k", tiny_study_path, "--cache", cache, "--models", "combo-net", *GRID[2:], "--k", "4", "8"
    )
    lines = [line for line in out.splitlines() if line.startswith("combo-net")]
    assert [line.split()[2] for line in lines] == ["4", "8"]
    out = _run(
        capsys,
        "significance",
        tiny_study_path,
        "--cache",
        cache,
        "--k",
        "8",
        "--groups",
        "all",
        "--repeats",
        "4",
        "--bootstrap",
        "20",
    )
    assert "permutation baseline (4 shuffles)" in out and "Welch" in out
    main(["layers", str(tiny_study_path), "--cache", str(cache), *GRID])
    assert "no model has `network` and `layer` metadata" in capsys.readouterr().err


def test_transfer(tmp_path, capsys):
    a = make_synthetic_study(tmp_path / "a", n_images=500, dim=16, seed=0, image_seed=0)
    b = make_synthetic_study(tmp_path / "b", n_images=400, dim=16, seed=0, image_seed=1)
    _run(capsys, "run", a, "--cache", tmp_path / "c", "--models", "combo-net", *GRID)
    # by default the probe on every group but the labels transfers (paper D.5); `run` made only "all"
    assert main(["transfer", str(a), str(b), "--cache", str(tmp_path / "c")]) == 2
    assert "no source results on groups colour+other+texture" in capsys.readouterr().err
    _run(
        capsys, "run", a, "--cache", tmp_path / "c", "--models", "combo-net", "--groups", "colour+other+texture", *GRID
    )
    out = _run(capsys, "transfer", a, b, "--cache", tmp_path / "c")
    assert "Probes of synthetic-500 applied to synthetic-400" in out and "combo-net" in out
    assert "colour+other+texture" in out and "labels" not in out
