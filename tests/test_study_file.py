"""Hostile study files: every key known, every value of its type, names safe as file names and arguments.

Each case edits a valid study file and must stop `validate` and `run` with exit status 2 and one line
`error: <study file or concept table>: <problem>. Fix: <fix>`, leaving the cache as it was (nothing written
outside it either).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from builders import make_small_labelled_study
from conftest import files_under
from qrp_core.cli import main


@pytest.fixture
def study_dir(tmp_path):
    return make_small_labelled_study(tmp_path / "study", "hostile", n_images=80).parent


VALID = """name = "hostile"
images = "images.csv"
base_group = "labels"

[concepts]
table = "concepts.parquet"

[models.net]
features = "features/net.npy"
"""

# (what the study file says instead of VALID, a fragment of the problem, a fragment of the fix)
CASES = {
    "traversal name": (
        VALID.replace('"hostile"', '"../../../x"'),
        "study name '../../../x' cannot name files",
        "letters, digits",
    ),
    "nested name": (VALID.replace('"hostile"', '"a/b"'), "study name 'a/b'", "starting with a letter or digit"),
    "empty name": (VALID.replace('"hostile"', '""'), "study name ''", "letters, digits"),
    "hidden name": (VALID.replace('"hostile"', '".hidden"'), "study name '.hidden'", "letters, digits"),
    "long name": (VALID.replace('"hostile"', '"' + "x" * 101 + '"'), "cannot name files", "up to 100"),
    "name a number": (VALID.replace('"hostile"', "5"), "`name` is an integer, expected a string", "write name as"),
    "models a string": (
        VALID.split("[models.net]")[0].replace('images = "images.csv"', 'images = "images.csv"\nmodels = "x"'),
        "`models` is a string, expected a table",
        "a table",
    ),
    "images a number": (VALID.replace('"images.csv"', "5"), "`images` is an integer, expected a string", "a string"),
    "features a number": (
        VALID.replace('"features/net.npy"', "3"),
        "`models.net.features` is an integer",
        "write models.net.features as a string",
    ),
    "empty tables": (
        VALID.replace('table = "concepts.parquet"', "tables = []"),
        "`concepts.tables` must be a non-empty list",
        "tables = [",
    ),
    "tables of numbers": (
        VALID.replace('table = "concepts.parquet"', "tables = [1, 2]"),
        "`concepts.tables` must be a non-empty list",
        "tables = [",
    ),
    "table and tables": (
        VALID.replace('table = "concepts.parquet"', 'table = "c.parquet"\ntables = ["c.parquet"]'),
        "needs exactly one of `table`, `tables`",
        "table =",
    ),
    "matrix without names": (
        VALID.replace('table = "concepts.parquet"', 'matrix = "c.npz"'),
        "needs exactly one of",
        "table =",
    ),
    "no concepts form": (VALID.replace('table = "concepts.parquet"', ""), "needs exactly one of", "table ="),
    "concepts a string": (
        VALID.replace('[concepts]\ntable = "concepts.parquet"', 'concepts = "c.parquet"'),
        "`concepts` is a string, expected a table",
        "a table",
    ),
    "typo base_grop": (
        VALID.replace("base_group", "base_grop"),
        "unknown key `base_grop` (did you mean `base_group`?)",
        "use the known keys of the study file",
    ),
    "typo featrues": (
        VALID.replace("features =", "featrues ="),
        "unknown key `models.net.featrues` (did you mean `features`?)",
        "use the known keys of models.net",
    ),
    "typo kee": (VALID + 'kee = "x"\n', "unknown key `models.net.kee` (did you mean `key`?)", "models.net"),
    "typo tabel": (
        VALID.replace("table =", "tabel ="),
        "unknown key `concepts.tabel` (did you mean `table`?)",
        "concepts",
    ),
    "typo concept": (
        VALID.replace("[concepts]", "[concept]"),
        "unknown key `concept` (did you mean `concepts`?)",
        "known keys",
    ),
    "unknown key": (VALID + 'colour = "red"\n', "unknown key `models.net.colour`", "known keys"),
    "empty models": (VALID.split("[models.net]")[0] + "[models]\n", "the study has no models", "[models.NAME]"),
    "model a string": (
        VALID.split("[models.net]")[0] + '[models]\nnet = "features/net.npy"\n',
        "`models.net` is a string, not a table",
        "[models.net]",
    ),
    "model name comma": (
        VALID.replace("[models.net]", '[models."a,b"]'),
        "model name 'a,b' cannot be used",
        "rename the [models.NAME] table",
    ),
    "model name slash": (VALID.replace("[models.net]", '[models."../m"]'), "model name '../m'", "rename"),
    "model name space": (VALID.replace("[models.net]", '[models." m"]'), "model name ' m'", "rename"),
    "epochs a string": (
        VALID + 'epochs = "800"\n',
        "`models.net.epochs` is a string, expected an integer",
        "an integer",
    ),
    "layer a float": (VALID + "layer = 1.5\n", "`models.net.layer` is a number, expected an integer", "integer"),
    "linear_acc a string": (
        VALID + 'linear_acc = "high"\n',
        "`models.net.linear_acc` is a string, expected a number",
        "a number",
    ),
    "linear_acc a boolean": (VALID + "linear_acc = true\n", "is a boolean, expected a number", "a number"),
    "both features and assignments": (
        VALID + 'assignments = "a.npy"\n',
        "needs exactly one of `features` and `assignments`",
        "features =",
    ),
    "neither": (
        VALID.replace('features = "features/net.npy"', 'architecture = "x"'),
        "needs exactly one of `features` and `assignments`",
        "features =",
    ),
    "base group all": (
        VALID.replace('base_group = "labels"', 'base_group = "all"'),
        "concept group name 'all' cannot be used: `all` means every group",
        "rename the group",
    ),
    "base group plus": (
        VALID.replace('base_group = "labels"', 'base_group = "a+b"'),
        "concept group name 'a+b' cannot be used in --groups",
        "rename the group",
    ),
    "not toml": ("name = [", "not valid TOML", "correct the study file's syntax"),
    "missing images": (VALID.replace('images = "images.csv"\n', ""), "missing `images`", "README"),
}


def _refused(capsys, argv) -> str:
    assert main([str(a) for a in argv]) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and ". Fix: " in lines[0], err
    assert "Traceback" not in err
    return lines[0]


@pytest.mark.parametrize("case", list(CASES))
def test_a_hostile_study_file_is_refused_with_one_line(case, study_dir, tmp_path, capsys):
    text, problem, fix = CASES[case]
    study = study_dir / "study.toml"
    study.write_text(text)
    before_outside = files_under(tmp_path)
    for argv in (["validate", study], ["run", study, "--cache", tmp_path / "cache", "--k", "2", "--seeds", "1"]):
        line = _refused(capsys, argv)
        assert line.startswith(f"error: {study}: "), line
        assert problem in line and fix in line.split(". Fix: ", 1)[1], line
    assert files_under(tmp_path) == before_outside  # no cache, no results or lock file anywhere


@pytest.mark.parametrize("group", ["a+b", "all", "x,y", "../up", ".hidden", "two words"])
def test_a_hostile_group_name_in_a_concept_table_is_refused(group, study_dir, tmp_path, capsys):
    table = pd.read_parquet(study_dir / "concepts.parquet").assign(group=group)
    table.to_parquet(study_dir / "concepts.parquet", index=False)
    line = _refused(capsys, ["run", study_dir / "study.toml", "--cache", tmp_path / "cache", "--k", "2"])
    assert line.startswith(f"error: {study_dir / 'concepts.parquet'}: concept group name {group!r} cannot be used")
    assert not (tmp_path / "cache").exists()


def test_the_valid_study_file_runs(study_dir, tmp_path, capsys):
    """The baseline every case edits is valid: the refusals are the edits' doing."""
    (study_dir / "study.toml").write_text(VALID)
    assert main(["validate", str(study_dir / "study.toml")]) == 0
    capsys.readouterr()


def test_an_empty_label_cell_is_refused(study_dir, capsys):
    images = pd.read_csv(study_dir / "images.csv", dtype=str, keep_default_na=False)
    images.loc[3, "label"] = ""
    images.to_csv(study_dir / "images.csv", index=False)
    line = _refused(capsys, ["validate", study_dir / "study.toml"])
    assert line.startswith(f"error: {study_dir / 'images.csv'}: 1 image(s) have an empty `label` cell (first: 'i003')")


def test_a_study_without_any_concept_is_refused_before_the_probe(study_dir, tmp_path, capsys):
    pd.read_parquet(study_dir / "concepts.parquet").head(0).to_parquet(study_dir / "concepts.parquet", index=False)
    pd.read_csv(study_dir / "images.csv").drop(columns="label").to_csv(study_dir / "images.csv", index=False)
    line = _refused(capsys, ["run", study_dir / "study.toml", "--cache", tmp_path / "cache", "--k", "2"])
    assert "no image has any concept" in line and not (tmp_path / "cache").exists()


def test_float16_features_of_any_usual_size_are_standardised(study_dir, capsys):
    x = np.random.default_rng(0).normal(scale=2000, size=(80, 4)).astype(np.float16)  # |x| up to ~6,000
    np.save(study_dir / "features" / "net.npy", x)
    assert main(["validate", str(study_dir / "study.toml")]) == 0  # squares overflowed float16 above 256
    assert "80 x 4 float16" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("--task-cpus", "-1"),
        ("--task-cpus", "0"),
        ("--task-memory", "-2"),
        ("--task-gpus", "-0.5"),
        ("--task-cpus", "nan"),
    ],
)
def test_a_ray_task_resource_below_zero_is_refused_by_the_parser(option, value, study_dir, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["run", str(study_dir / "study.toml"), "--executor", "ray", option, value])
    assert exit_info.value.code == 2
    assert f"argument {option}" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("edit", "named", "what"),
    [
        (('"images.csv"', '"images"'), "images", "file path is a folder"),
        (('"concepts.parquet"', '"concepts"'), "concepts", "file path is a folder"),
        (('"features/net.npy"', '"features"'), "features", "feature file path is a folder"),
        (('"images.csv"', '"nowhere.csv"'), "nowhere.csv", "file not found"),
        (('"features/net.npy"', '"features/gone.npy"'), "features/gone.npy", "feature file not found"),
    ],
)
def test_a_path_that_is_a_folder_or_missing_says_which(edit, named, what, study_dir, capsys):
    (study_dir / "images").mkdir()
    (study_dir / "concepts").mkdir()
    (study_dir / "study.toml").write_text(VALID.replace(*edit))
    line = _refused(capsys, ["validate", study_dir / "study.toml"])
    assert line.startswith(f"error: {study_dir / named}: {what}")


def test_a_study_file_path_that_is_a_folder_says_so(study_dir, capsys):
    line = _refused(capsys, ["validate", study_dir])
    assert (
        line == f"error: {study_dir}: study file path is a folder, not a file. Fix: pass the path of a study .toml file"
    )
