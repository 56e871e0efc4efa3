"""A damaged cache is healed, never served: an artefact whose manifest is gone or whose files were cut short
or replaced counts as missing and is written again; damaged tables and registries are rebuilt or named in one
line with the fix; a reader never sees a table half-replaced; files get the user's umask."""

from __future__ import annotations

import json
import os
import threading

import numpy as np
import pandas as pd
import pytest

from qrp_core.cache import Cache, read_parquet_file
from qrp_core.cli import main
from qrp_core.demos.synthetic import make_synthetic_study

GRID = ["--models", "combo-net", "--k", "6", "--seeds", "1", "--iters", "5", "--restarts", "1", "--epochs", "5"]


@pytest.fixture
def ran(tmp_path, capsys):
    """A study and a cache with one run's artefacts; returns (study file, cache root, the ranking CSV)."""
    study = make_synthetic_study(tmp_path / "study", n_images=300, dim=8)
    cache = tmp_path / "cache"
    assert main(["run", str(study), "--cache", str(cache), *GRID]) == 0
    capsys.readouterr()
    return study, cache, _ranking_csv(study, cache, capsys)


def _ranking_csv(study, cache, capsys) -> pd.DataFrame:
    assert main(["ranking", str(study), "--cache", str(cache), "--format", "csv"]) == 0
    from io import StringIO

    return pd.read_csv(StringIO(capsys.readouterr().out))


def _only(cache, kind):
    (folder,) = (cache / kind).iterdir()
    return folder


def _rerun_gives_the_same(study, cache, before, capsys):
    assert main(["run", str(study), "--cache", str(cache), *GRID]) == 0
    capsys.readouterr()
    after = _ranking_csv(study, cache, capsys)
    pd.testing.assert_frame_equal(after[["model", "nmi", "mi_bits"]], before[["model", "nmi", "mi_bits"]])


@pytest.mark.parametrize("kind", ["clusterings", "splits", "probes"])
def test_an_artefact_without_its_manifest_is_written_again(kind, ran, capsys):
    study, cache, before = ran
    (_only(cache, kind) / "manifest.json").unlink()  # every rerun failed with "Directory not empty"
    _rerun_gives_the_same(study, cache, before, capsys)
    assert (_only(cache, kind) / "manifest.json").is_file()


@pytest.mark.parametrize(
    ("kind", "name"),
    [
        ("clusterings", "assignments.npy"),
        ("splits", "split.npy"),
        ("probes", "metrics.json"),
        ("probes", "predictions.npy"),
    ],
)
def test_a_truncated_artefact_file_is_written_again_not_served(kind, name, ran, capsys):
    study, cache, before = ran
    path = _only(cache, kind) / name
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    assert not Cache(cache).has(kind, _only(cache, kind).name)
    _rerun_gives_the_same(study, cache, before, capsys)
    assert Cache(cache).has(kind, _only(cache, kind).name)


def test_a_same_size_garbage_file_is_named_with_the_fix(ran, tmp_path, capsys):
    study, cache, before = ran
    split = _only(cache, "splits") / "split.npy"
    split.write_bytes(b"\x00" * split.stat().st_size)  # same size: not caught by the size check
    probe = ["export", study, "--cache", cache, "--model", "combo-net", "--k", "6", "--output", tmp_path / "x.csv"]
    assert main([str(a) for a in probe]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"error: {split}: cannot read this artefact file")
    assert line.endswith(f"Fix: delete the folder {split.parent}: the next run writes it again")


def test_a_damaged_results_table_is_named_by_ranking_and_moved_aside_by_run(ran, capsys):
    study, cache, before = ran
    (table,) = (cache / "results").glob("*.parquet")
    table.write_bytes(table.read_bytes()[:100])
    assert main(["ranking", str(study), "--cache", str(cache)]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"error: {table}: cannot read the table") and "Fix: delete it and run" in line
    assert main(["run", str(study), "--cache", str(cache), *GRID]) == 0
    assert "was damaged: moved to" in capsys.readouterr().err
    assert len(list((cache / "results").glob("*.damaged-*.parquet"))) == 1
    after = _ranking_csv(study, cache, capsys)
    pd.testing.assert_frame_equal(after[["model", "nmi"]], before[["model", "nmi"]])


@pytest.mark.parametrize("name", ["studies.json", "file-hashes.json"])
def test_damaged_registry_files_heal_on_the_next_run(name, ran, capsys):
    study, cache, before = ran
    (cache / name).write_text('{"half": ')
    _rerun_gives_the_same(study, cache, before, capsys)
    assert json.loads((cache / name).read_text())  # rewritten whole
    from qrp_core.browse import list_studies

    assert list_studies(Cache(cache))["study"].tolist() == ["synthetic-300"]


def test_a_rewritten_feature_file_with_its_mtime_restored_is_hashed_again(tmp_path):
    path = tmp_path / "x.npy"
    np.save(path, np.zeros((10, 4), np.float32))
    cache = Cache(tmp_path / "cache")
    first = cache.file_hash(path)
    stat = path.stat()
    np.save(path, np.ones((10, 4), np.float32))  # same size
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # and the old mtime
    assert path.stat().st_size == stat.st_size and path.stat().st_mtime_ns == stat.st_mtime_ns
    assert cache.file_hash(path) != first


def test_a_reader_never_sees_a_table_half_replaced(tmp_path):
    from qrp_core.cache import atomic_write_bytes

    path = tmp_path / "t.parquet"
    tables = [pd.DataFrame({"x": np.arange(n * 1000)}).to_parquet(index=False) for n in (1, 50)]
    atomic_write_bytes(path, tables[0])
    stop, errors = threading.Event(), []

    def write():
        i = 0
        while not stop.is_set():
            atomic_write_bytes(path, tables[i % 2])
            i += 1

    writer = threading.Thread(target=write)
    writer.start()
    try:
        for _ in range(300):
            try:
                assert len(read_parquet_file(path)) in (1000, 50_000)
            except Exception as exc:  # noqa: BLE001 - any failure is the finding
                errors.append(exc)
    finally:
        stop.set()
        writer.join()
    assert not errors, errors[:3]


def test_cache_files_get_the_users_umask(ran):
    _, cache, _ = ran
    expected_file, expected_dir = 0o666 & ~_umask(), 0o777 & ~_umask()
    for path in [
        *cache.rglob("*.npy"),
        *cache.rglob("manifest.json"),
        *(cache / "results").glob("*.parquet"),
        cache / "studies.json",
    ]:
        assert path.stat().st_mode & 0o777 == expected_file, path
    for folder in (_only(cache, "clusterings"), _only(cache, "probes")):
        assert folder.stat().st_mode & 0o777 == expected_dir, folder


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_a_cache_path_that_is_a_file_is_refused(tmp_path, capsys):
    study = make_synthetic_study(tmp_path / "study", n_images=300, dim=8)
    (tmp_path / "cache").write_text("not a folder")
    for verb in ("run", "ranking"):
        assert main([verb, str(study), "--cache", str(tmp_path / "cache")]) == 2
        (line,) = capsys.readouterr().err.strip().splitlines()
        assert (
            line
            == f"error: {tmp_path / 'cache'}: the cache path is a file, not a folder. Fix: pass --cache a folder (or a new path)"
        )


@pytest.mark.parametrize(
    ("code", "fix"), [(28, "free disk space"), (13, "a folder you can write to"), (30, "a writable disk")]
)
def test_a_refused_write_is_one_line_and_leaves_the_cache_as_it_was(code, fix, ran, monkeypatch, capsys):
    import qrp_core.cache as cache_module
    from conftest import files_under

    study, cache, _ = ran
    before = files_under(cache)

    def refuse(path, *args, **kwargs):
        raise OSError(code, os.strerror(code), str(path))

    monkeypatch.setattr(cache_module, "atomic_write_json", refuse)  # every artefact's manifest is written so
    assert main(["run", str(study), "--cache", str(cache), *GRID[:-6], "--iters", "6"]) == 2
    err = capsys.readouterr().err
    (line,) = [line for line in err.splitlines() if line.startswith("error:")]  # beside the progress bars
    assert "Traceback" not in err
    assert line.startswith(f"error: {cache}/clusterings/.tmp-") and os.strerror(code) in line and fix in line
    assert files_under(cache) == before


def test_an_input_error_survives_pickling_as_a_ray_task_sends_it():
    import pickle

    from qrp_core.errors import InputError

    error = pickle.loads(pickle.dumps(InputError("cut short", fix="delete it", where="a/b.npy")))
    assert isinstance(error, InputError) and str(error) == "a/b.npy: cut short. Fix: delete it"
    assert (error.problem, error.fix, error.where) == ("cut short", "delete it", "a/b.npy")


def test_reading_verbs_write_nothing_into_the_cache(ran, tmp_path, monkeypatch, capsys):
    """A read-only cache (another user's, a mounted share) serves ranking, export and validate: every way of
    writing into it raises here, as the operating system would."""
    import builtins
    from pathlib import Path

    study, cache, _ = ran
    root = str(cache)

    def refused(path) -> bool:
        return str(path).startswith(root)

    real_open, real_mkdir, real_replace = builtins.open, Path.mkdir, os.replace

    def guarded_open(file, mode="r", *args, **kwargs):
        if refused(file) and any(c in mode for c in "wax+"):
            raise PermissionError(13, "Permission denied", str(file))
        return real_open(file, mode, *args, **kwargs)

    def guarded_mkdir(self, *args, **kwargs):
        if refused(self) and not self.is_dir():
            raise PermissionError(13, "Permission denied", str(self))
        return real_mkdir(self, *args, **kwargs)

    def guarded_replace(src, dst, *args, **kwargs):
        if refused(dst):
            raise PermissionError(13, "Permission denied", str(dst))
        return real_replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", guarded_open)
    monkeypatch.setattr(Path, "mkdir", guarded_mkdir)
    monkeypatch.setattr(os, "replace", guarded_replace)
    assert main(["ranking", str(study), "--cache", root]) == 0
    assert main(["ranking", str(study), "--cache", root, "--format", "csv", "--output", str(tmp_path / "r.csv")]) == 0
    out = tmp_path / "images.parquet"
    assert main(["export", str(study), "--cache", root, "--model", "combo-net", "--k", "6", "--output", str(out)]) == 0
    assert main(["validate", str(study)]) == 0
    assert "Traceback" not in capsys.readouterr().err
