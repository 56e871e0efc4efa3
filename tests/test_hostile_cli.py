"""Hostile command lines and concept tables against a valid study: each is refused with exit status 2 and an
`error:` line that names the problem (argparse's own for values the parser refuses), and nothing is written."""

from __future__ import annotations

import pandas as pd
import pytest

from builders import make_small_labelled_study
from conftest import files_under
from qrp_core.cli import main


@pytest.fixture
def study(tmp_path):
    return make_small_labelled_study(tmp_path / "s", "hostile-cli", n_images=120, seed=1)


PARSER_REFUSALS = {  # argv after the study file: the parser refuses these before any work
    "k of 1": (["run", "--k", "1"], "--k: 1 is too small"),
    "k of 0": (["run", "--k", "0"], "--k: 0 is too small"),
    "negative k": (["run", "--k", "-5"], "--k"),
    "k not a number": (["run", "--k", "many"], "--k: invalid"),
    "no seeds": (["run", "--seeds", "0"], "--seeds: 0 is too small"),
    "zero iterations": (["run", "--iters", "0"], "--iters: 0 is too small"),
    "zero epochs": (["run", "--epochs", "0"], "--epochs: 0 is too small"),
    "empty group set": (["run", "--groups", ""], "empty group set"),
    "plus only": (["run", "--groups", "+"], "empty group set"),
    "unknown device": (["run", "--device", "tpu"], "--device: invalid choice"),
    "unknown executor": (["run", "--executor", "slurm"], "--executor: invalid choice"),
    "unknown format": (["ranking", "--format", "xml"], "--format: invalid choice"),
    "unknown rows": (["ranking", "--rows", "all"], "--rows: invalid choice"),
    "negative seed": (["explain", "--model", "net", "--k", "4", "--pair", "0", "1", "--seed", "-1"], "--seed"),
    "negative pair": (["explain", "--model", "net", "--k", "4", "--pair", "-1", "1"], "--pair"),
    "one pair id": (["explain", "--model", "net", "--k", "4", "--pair", "1"], "--pair"),
    "zero repeats": (["significance", "--repeats", "0"], "--repeats: 0 is too small"),
}

ENGINE_REFUSALS = {  # argv after the study file: the engine refuses these with one line naming the file
    "unknown group": (["run", "--k", "4", "--groups", "colour+nope"], "group"),
    "unknown model": (["run", "--k", "4", "--models", "ghost"], "unknown model 'ghost'"),
    "k above a quarter": (["run", "--k", "31"], "K"),
    "added group in base": (
        ["pairs", "--k", "4", "--added", "colour", "--base", "labels+colour"],
        "already among the base groups",
    ),
    "unknown added group": (
        ["pairs", "--k", "4", "--added", "nope"],
        "no concept group 'nope' to add",
    ),  # it ran, dropping nothing
    "latex per seed": (["ranking", "--format", "latex", "--rows", "seeds"], "--format latex shows mean"),
    "export to xlsx": (["export", "--model", "net", "--k", "4", "--output", "out.xlsx"], "cannot write .xlsx"),
}


@pytest.mark.parametrize("case", list(PARSER_REFUSALS))
def test_the_parser_refuses_values_that_mean_nothing(case, study, tmp_path, capsys):
    argv, fragment = PARSER_REFUSALS[case]
    before = files_under(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        main([argv[0], str(study), "--cache", str(tmp_path / "cache"), *argv[1:]])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert fragment in err.strip().splitlines()[-1] and "Traceback" not in err
    assert files_under(tmp_path) == before


@pytest.mark.parametrize("case", list(ENGINE_REFUSALS))
def test_the_engine_refuses_a_grid_that_makes_no_sense_with_one_line(case, study, tmp_path, capsys):
    argv, fragment = ENGINE_REFUSALS[case]
    if argv[0] in ("ranking", "export"):  # these read a run's results: make one first
        assert (
            main(
                [
                    "run",
                    str(study),
                    "--cache",
                    str(tmp_path / "cache"),
                    "--k",
                    "4",
                    "--seeds",
                    "1",
                    "--iters",
                    "3",
                    "--restarts",
                    "1",
                    "--epochs",
                    "2",
                ]
            )
            == 0
        )
        capsys.readouterr()
    before = files_under(tmp_path)
    assert main([argv[0], str(study), "--cache", str(tmp_path / "cache"), *argv[1:]]) == 2
    err = capsys.readouterr().err
    (line,) = [line for line in err.splitlines() if line.startswith("error:")]
    assert fragment in line and ". Fix: " in line and "Traceback" not in err
    assert files_under(tmp_path) == before


CONCEPT_TABLES = {  # a change to the long concept table: (how, what the error says)
    "foreign image id": (lambda t: pd.concat([t, t.head(1).assign(image_id="nobody")]), "nobody"),
    "no image_id column": (lambda t: t.drop(columns="image_id"), "image_id"),
    "no group column": (lambda t: t.drop(columns="group"), "group"),
    "empty concept cell": (lambda t: t.assign(concept=[""] + list(t["concept"][1:])), "concept"),
    "a concept in two groups": (lambda t: t.assign(group=["colour", "shape"] * (len(t) // 2)), "group"),
}


@pytest.mark.parametrize("case", list(CONCEPT_TABLES))
def test_a_hostile_concept_table_is_refused(case, study, tmp_path, capsys):
    change, fragment = CONCEPT_TABLES[case]
    table = study.parent / "concepts.parquet"
    change(pd.read_parquet(table)).to_parquet(table, index=False)
    assert main(["run", str(study), "--cache", str(tmp_path / "cache"), "--k", "4"]) == 2
    err = capsys.readouterr().err
    (line,) = [line for line in err.splitlines() if line.startswith("error:")]
    assert str(table) in line and fragment in line and ". Fix: " in line
    assert not (tmp_path / "cache").exists()
