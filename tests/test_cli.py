import io
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from conftest import files_under
from qrp_core.cli import build_parser, main
from qrp_core.demos.study_files import write_study

RUN_ARGS = ["--k", "8", "--seeds", "2", "--iters", "10", "--restarts", "2", "--epochs", "15"]


@pytest.fixture(scope="module")
def cli_cache(tiny_study_path, tmp_path_factory):
    cache = tmp_path_factory.mktemp("cli-cache")
    assert main(["run", str(tiny_study_path), "--cache", str(cache), "--models", "combo-net,noise-net", *RUN_ARGS]) == 0
    return cache


def test_run_prints_the_ranking(cli_cache, tiny_study_path, capsys):
    assert main(["ranking", str(tiny_study_path), "--cache", str(cli_cache)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[:3] == ["model", "k", "groups"]
    assert out[1].startswith("combo-net") and out[2].startswith("noise-net")  # best NMI first
    assert " ± " in out[1]


def test_ranking_csv_has_one_row_per_seed(cli_cache, tiny_study_path, tmp_path):
    out = tmp_path / "ranking.csv"
    assert (
        main(["ranking", str(tiny_study_path), "--cache", str(cli_cache), "--format", "csv", "--output", str(out)]) == 0
    )
    table = pd.read_csv(out)
    columns = list(table.columns)  # the README's order: these first, the artefact keys last
    assert columns[:10] == ["model", "k", "seed", "groups", "nmi", "ami", "top1", "map", "mi_bits", "mi_norm"]
    assert columns[-4:] == ["clustering", "split", "probe", "settings"]
    assert len(table) == 4 and set(table["seed"]) == {0, 1}
    mean = pd.read_csv(pd.io.common.StringIO(_ranking_text(cli_cache, tiny_study_path, "--rows", "mean")))
    combo = table[table["model"] == "combo-net"]
    assert mean.set_index("model").loc["combo-net", "nmi_mean"] == pytest.approx(combo["nmi"].mean())
    assert mean.set_index("model").loc["combo-net", "nmi_std"] == pytest.approx(combo["nmi"].std(ddof=1))


def test_reading_verbs_import_neither_torch_nor_faiss(cli_cache, tiny_study_path, tmp_path):
    """--help, validate, ranking and export read files only: the engine stays unloaded (they start in ~1 s)."""
    verbs = [
        ["validate", str(tiny_study_path)],
        ["ranking", str(tiny_study_path), "--cache", str(cli_cache), "--format", "latex"],
        [
            "export",
            str(tiny_study_path),
            "--cache",
            str(cli_cache),
            "--model",
            "combo-net",
            "--k",
            "8",
            "--output",
            str(tmp_path / "images.csv"),
        ],
    ]
    script = f"""
import sys
from qrp_core.cli import build_parser, main
from qrp_core.demos.study_files import write_study
build_parser().format_help()
for verb in {verbs!r}:
    assert main(verb) == 0, verb
print(sorted(name for name in ("torch", "faiss") if name in sys.modules))
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "[]"
    assert len(pd.read_csv(tmp_path / "images.csv")) > 0


def test_openmp_threads_spin_briefly_unless_the_user_says_otherwise():
    """qrp_core sets libgomp's spin count before torch and faiss load (python -m bench.contention: a probe
    beside another busy process runs ~30x faster); a value the user exported is kept."""
    script = "import os, qrp_core, torch, faiss; print(os.environ['GOMP_SPINCOUNT'])"
    env = {key: value for key, value in os.environ.items() if key != "GOMP_SPINCOUNT"}
    ours = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, check=True)
    theirs = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        check=True,
        env={**env, "GOMP_SPINCOUNT": "20000"},
    )
    assert (ours.stdout.strip(), theirs.stdout.strip()) == ("1000", "20000")


def _ranking_text(cache, study, *extra):
    result = subprocess.run(
        [sys.executable, "-m", "qrp_core", "ranking", str(study), "--cache", str(cache), "--format", "csv", *extra],
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_export_per_image_assignments(cli_cache, tiny_study_path, tmp_path, suffix):
    out = tmp_path / f"images{suffix}"
    assert (
        main(
            [
                "export",
                str(tiny_study_path),
                "--cache",
                str(cli_cache),
                "--model",
                "combo-net",
                "--k",
                "8",
                "--seed",
                "1",
                "--output",
                str(out),
            ]
        )
        == 0
    )
    table = pd.read_csv(out) if suffix == ".csv" else pd.read_parquet(out)
    assert list(table.columns) == ["image_id", "split", "cluster", "predicted"]
    assert len(table) == 600 and set(table["split"]) == {"train", "val", "test"}
    assert table["cluster"].between(0, 7).all()


def test_bad_input_exits_nonzero_and_leaves_cache_unchanged(cli_cache, tiny_study_path, capsys):
    before = files_under(cli_cache)
    assert main(["run", str(tiny_study_path), "--cache", str(cli_cache), "--k", "601", "--seeds", "1"]) == 2
    err = capsys.readouterr().err
    assert "K=601 leaves too few images per cluster" in err and "Fix: choose K <= 150" in err
    assert main(["run", str(tiny_study_path), "--cache", str(cli_cache), "--models", "resnet"]) == 2
    assert "unknown model 'resnet'" in capsys.readouterr().err
    assert main(["run", str(tiny_study_path), "--cache", str(cli_cache), "--groups", "labels+scene"]) == 2
    assert "unknown concept group 'scene'" in capsys.readouterr().err
    assert files_under(cli_cache) == before


def test_every_verb_has_help():
    parser = build_parser()
    verbs = parser._subparsers._group_actions[0].choices
    assert set(verbs) == {
        "demo",
        "run",
        "ranking",
        "export",
        "validate",
        "ablation",
        "pairs",
        "explain",
        "sweep-k",
        "layers",
        "transfer",
        "significance",
        "extract",
        "label",
        "import-labels",
        "fetch",
        "train-ssl",
        "report",
    }
    for verb in verbs:
        with pytest.raises(SystemExit) as info:
            main([verb, "--help"])
        assert info.value.code == 0


def test_validate_reports_every_model(tiny_study_path, capsys):
    assert main(["validate", str(tiny_study_path)]) == 0
    out = capsys.readouterr().out
    assert "combo-net: 600 x 16 float32" in out and "groups: labels (6)" in out


def test_nan_features_exit_nonzero_and_leave_cache_unchanged(tiny_study_path, tmp_path, capsys):
    import shutil

    import numpy as np

    study = tmp_path / "study"
    shutil.copytree(tiny_study_path.parent, study)
    x = np.load(study / "features" / "noise-net.npy")
    x[42, 3] = np.inf
    np.save(study / "features" / "noise-net.npy", x)
    cache = tmp_path / "cache"
    assert main(["run", str(study / "study.toml"), "--cache", str(cache), *RUN_ARGS]) == 2
    err = capsys.readouterr().err
    assert "noise-net.npy: non-finite value (NaN or Inf) in row 42" in err
    assert files_under(cache) == []  # every model is checked before any artefact is written


def test_a_degenerate_clustering_is_flagged_in_the_table_the_csv_and_ranked_last(tmp_path, capsys):
    """Features with 3 distinct rows cannot fill K=8 clusters: the run says so and ranks the model last."""
    rng = np.random.default_rng(0)
    n = 240
    labels = rng.integers(0, 4, n)
    ids = np.array([f"i{i:04d}" for i in range(n)], dtype=object)
    features = {
        "blobs": rng.normal(size=(4, 6))[labels] * 5 + rng.normal(size=(n, 6)),
        "three-points": np.eye(3, 6)[rng.integers(0, 3, n)],
    }
    concepts = pd.DataFrame({"image_id": ids, "concept": [f"[Colour] c{v}" for v in labels % 2], "group": "colour"})
    study = write_study(tmp_path / "s", "degenerate", ids, concepts, features, {}, labels=labels.astype(str))
    grid = ["--k", "8", "--seeds", "2", "--iters", "10", "--restarts", "2", "--epochs", "10"]
    assert main(["run", str(study), "--cache", str(tmp_path / "c"), *grid]) == 0
    captured = capsys.readouterr()
    table = [line.split() for line in captured.out.splitlines()[1:]]
    assert [row[0] for row in table] == ["blobs", "three-points"]  # whatever its NMI
    assert captured.out.splitlines()[0].rstrip().endswith("empty clusters") and table[1][-3:] == ["5", "of", "8"]
    assert "warning: three-points K=8: K-means left up to 5 of 8 clusters empty" in captured.err
    assert main(["ranking", str(study), "--cache", str(tmp_path / "c"), "--format", "csv"]) == 0
    csv = pd.read_csv(io.StringIO(capsys.readouterr().out))
    assert csv.groupby("model")["n_empty_clusters"].max().to_dict() == {"blobs": 0, "three-points": 5}
