"""Bad command-line input stops with one line `error: <file>: <problem>. Fix: <what to do>` (exit status 2)
and leaves the cache as it was; bad option values are refused by the parser (also exit status 2)."""

import shutil

import numpy as np
import pandas as pd
import pytest

from conftest import files_under
from qrp_core.cache import CACHE_ENV, Cache
from qrp_core.cli import build_parser, main
from qrp_core.config import SplitConfig
from qrp_core.demos.build import app_command
from qrp_core.results import latex_table, ranking
from qrp_core.split import min_cluster_size, stratified_split

RUN_ARGS = ["--k", "8", "--seeds", "1", "--iters", "5", "--restarts", "1", "--epochs", "5"]


@pytest.fixture(scope="module")
def cache(tiny_study_path, tmp_path_factory):
    """One seed of combo-net at K=8 on every group."""
    root = tmp_path_factory.mktemp("cli-errors-cache")
    assert main(["run", str(tiny_study_path), "--cache", str(root), "--models", "combo-net", *RUN_ARGS]) == 0
    return root


@pytest.fixture
def study_dir(tiny_study_path, tmp_path):
    out = tmp_path / "study"
    shutil.copytree(tiny_study_path.parent, out)
    return out


def _one_line_error(capsys, *fragments: str) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Fix: " in lines[0], err
    for fragment in fragments:
        assert fragment in lines[0], err
    return lines[0]


def _refused_by_parser(capsys, argv: list[str], *fragments: str) -> None:
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    for fragment in fragments:
        assert fragment in err, err


def test_validate_finds_nan_like_run(study_dir, capsys):
    x = np.load(study_dir / "features" / "noise-net.npy")
    x[17, 3] = np.nan
    np.save(study_dir / "features" / "noise-net.npy", x)
    assert main(["validate", str(study_dir / "study.toml")]) == 2
    _one_line_error(capsys, "noise-net.npy: non-finite value (NaN or Inf) in row 17")


def test_validate_checks_every_model_past_a_broken_one(study_dir, capsys):
    x = np.load(study_dir / "features" / "combo-net.npy")
    x[2, 0] = np.inf
    np.save(study_dir / "features" / "combo-net.npy", x)
    (study_dir / "features" / "noise-net.npy").unlink()
    assert main(["validate", str(study_dir / "study.toml")]) == 2
    captured = capsys.readouterr()
    errors = captured.err.strip().splitlines()
    assert len(errors) == 2 and all(line.startswith("error: ") and "Fix: " in line for line in errors), errors
    assert "combo-net.npy: non-finite value (NaN or Inf) in row 2" in errors[0]
    assert "noise-net.npy: feature file not found" in errors[1]
    assert "shape-net: 600 x 16 float32" in captured.out and "2 of 3 models have a problem" in captured.out


def test_run_with_a_missing_feature_file(study_dir, cache, capsys):
    (study_dir / "features" / "shape-net.npy").unlink()
    before = files_under(cache)
    assert main(["run", str(study_dir / "study.toml"), "--cache", str(cache), *RUN_ARGS]) == 2
    _one_line_error(capsys, "shape-net.npy: feature file not found")
    assert files_under(cache) == before


@pytest.mark.parametrize(
    "option, value, message",
    [
        ("--groups", "", "empty group set"),
        ("--groups", "+", "empty group set"),
        *[
            (option, "0", "0 is too small: give 1 or more")
            for option in ("--iters", "--restarts", "--epochs", "--seeds")
        ],
        ("--k", "1", "1 is too small: give 2 or more"),
        ("--k", "-3", "-3 is too small: give 2 or more"),
        ("--iters", "ten", "invalid positive_int value: 'ten'"),
    ],
)
def test_run_refuses_empty_groups_and_non_positive_counts(tiny_study_path, cache, capsys, option, value, message):
    before = files_under(cache)
    _refused_by_parser(
        capsys, ["run", str(tiny_study_path), "--cache", str(cache), option, value], f"argument {option}: {message}"
    )
    assert files_under(cache) == before


def test_k_too_large_for_the_split(tiny_study_path, cache, capsys):
    before = files_under(cache)
    assert main(["run", str(tiny_study_path), "--cache", str(cache), *RUN_ARGS, "--k", "151"]) == 2
    _one_line_error(
        capsys,
        "study.toml: K=151 leaves too few images per cluster for the train/validation/test split",
        "Fix: choose K <= 150",
    )
    assert files_under(cache) == before


def test_the_smallest_splittable_cluster_gives_every_split_an_image():
    size = min_cluster_size()
    assert size == 4
    for n in (size - 1, size):
        split, _ = stratified_split(np.zeros(n, dtype=np.int64), SplitConfig(), seed=0)
        assert (set(split.tolist()) == {0, 1, 2}) == (n == size)


def test_export_creates_its_folder_and_refuses_other_suffixes(tiny_study_path, cache, tmp_path, capsys):
    probe = ["export", str(tiny_study_path), "--cache", str(cache), "--model", "combo-net", "--k", "8"]
    out = tmp_path / "new" / "folder" / "images.csv"
    assert main([*probe, "--output", str(out)]) == 0
    assert len(pd.read_csv(out)) == 600 and "wrote 600 rows" in capsys.readouterr().err
    assert main([*probe, "--output", str(tmp_path / "images.xlsx")]) == 2
    _one_line_error(capsys, "images.xlsx: cannot write .xlsx", "Fix: end --output with .csv or .parquet")
    assert not (tmp_path / "images.xlsx").exists()
    (tmp_path / "a-file").write_text("")
    assert main([*probe, "--output", str(tmp_path / "a-file" / "images.csv")]) == 2
    _one_line_error(capsys, "a-file/images.csv: cannot write here")


def test_export_checks_the_model_and_suggests_a_run_that_computes_the_seed(tiny_study_path, cache, tmp_path, capsys):
    probe = ["export", str(tiny_study_path), "--cache", str(cache), "--k", "8", "--output", str(tmp_path / "x.csv")]
    assert main([*probe, "--model", "nosuch"]) == 2
    _one_line_error(capsys, f"{tiny_study_path}: unknown model 'nosuch'")
    assert main([*probe, "--model", "combo-net", "--seed", "7"]) == 2
    line = _one_line_error(capsys, f"{tiny_study_path}: no probe for model=combo-net k=8 seed=7")
    assert f"--cache {cache} --models combo-net --k 8 --seeds 8 --groups " in line


def test_export_needs_no_feature_file(tiny_study_path, cache, study_dir, tmp_path):
    (study_dir / "features" / "combo-net.npy").unlink()  # a copy of the study: same name, same results
    assert (
        main(
            [
                "export",
                str(study_dir / "study.toml"),
                "--cache",
                str(cache),
                "--model",
                "combo-net",
                "--k",
                "8",
                "--output",
                str(tmp_path / "x.csv"),
            ]
        )
        == 0
    )


def test_ranking_accepts_all_and_lists_what_exists(tiny_study_path, cache, capsys):
    assert main(["ranking", str(tiny_study_path), "--cache", str(cache), "--groups", "all"]) == 0
    assert "combo-net" in capsys.readouterr().out
    assert main(["ranking", str(tiny_study_path), "--cache", str(cache), "--k", "9", "--groups", "labels"]) == 2
    _one_line_error(
        capsys,
        f"{tiny_study_path}: no results for K=9, groups=labels",
        "Fix: choose --k from [8], --groups from ['labels+colour+other+texture'] or all",
    )


def test_ranking_per_seed_rows_in_percent(tiny_study_path, cache, capsys):
    assert main(["ranking", str(tiny_study_path), "--cache", str(cache), "--rows", "seeds"]) == 0
    out = capsys.readouterr().out
    assert "e-0" not in out and "e+0" not in out
    header, row = out.splitlines()[:2]
    nmi = pd.read_parquet(cache / "results" / "synthetic-600.parquet")["nmi"].iloc[0]
    assert row.split()[header.split().index("nmi")] == f"{100 * nmi:.2f}"


def test_ranking_as_latex_is_the_engines_table(tiny_study_path, cache, capsys):
    assert main(["ranking", str(tiny_study_path), "--cache", str(cache), "--format", "latex"]) == 0
    results = pd.read_parquet(cache / "results" / "synthetic-600.parquet")
    assert capsys.readouterr().out == latex_table(ranking(results)) + "\n"
    assert main(["ranking", str(tiny_study_path), "--cache", str(cache), "--format", "latex", "--rows", "seeds"]) == 2
    _one_line_error(capsys, "--format latex shows mean ± std over seeds, not one row per seed. Fix: drop --rows seeds")


def test_demo_refuses_k_and_groups_it_would_ignore_and_names_a_custom_cache(tmp_path, monkeypatch, capsys):
    assert main(["demo", "--study", "synthetic", "--k", "12", "--cache", str(tmp_path / "cache")]) == 2
    _one_line_error(capsys, "the synthetic demo takes no --k. Fix: drop --k")
    assert not (tmp_path / "cache").exists()
    _refused_by_parser(capsys, ["demo", "--study", "synthetic", "--groups", "labels"], "unrecognized arguments")
    monkeypatch.delenv(CACHE_ENV, raising=False)
    assert app_command(Cache()) == "streamlit run app.py"
    assert app_command(Cache(tmp_path / "my cache")) == f"QRP_CACHE='{tmp_path / 'my cache'}' streamlit run app.py"


def test_help_shows_defaults_and_only_options_that_mean_something():
    verbs = build_parser()._subparsers._group_actions[0].choices
    run_help, sweep_help = (" ".join(verbs[verb].format_help().split()) for verb in ("run", "sweep-k"))
    for line in (
        "--k K [K ...] number(s) of clusters K (default: [1000])",
        "--seeds SEEDS number of clusterings (seeds 0..S-1) (default: 5)",
        "--iters ITERS K-means iterations (default: 100)",
        "--restarts RESTARTS K-means restarts (best kept) (default: 5)",
        "--epochs EPOCHS probe epochs; the learning rate is divided by 10 after 60% and again after 80% of them "
        "(the paper's 60 and 80 of 100), and the epoch of lowest validation loss is kept (default: 100)",
    ):
        assert line in run_help
    assert "(default: [500, 1000, 1500, 2000, 2500, 3000])" in sweep_help
    for verb in ("explain", "export"):
        actions = {a.dest: a for a in verbs[verb]._actions}
        assert all(actions[dest].help for dest in ("model", "k", "seed", "groups"))
    assert verbs["explain"]._option_string_actions["--pair"].help
    for verb in ("pairs", "ablation"):
        assert "--groups" not in verbs[verb]._option_string_actions
        help_text = " ".join(verbs[verb].format_help().split())
        assert "(default: every K the results hold for these models; 1000 where none)" in help_text
        assert "(default: as many as the results hold at these K; 5 where none)" in help_text
