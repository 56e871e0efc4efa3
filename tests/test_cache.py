"""The cache: shared tables under concurrent writers (two `run`s in two terminals, Ray workers), atomic
writes, stable hashes, and artefact folders that appear only when complete."""

import hashlib
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest

import qrp_core.cache as cache_module
from qrp_core.cache import Cache, atomic_write_bytes, stable_hash
from qrp_core.results import load_results

WRITERS, UPSERTS = 4, 15
WORKER = """
import sys, types
import pandas as pd
from qrp_core.cache import Cache
from qrp_core.results import save_results
root, writer, upserts = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
cache, study = Cache(root), types.SimpleNamespace(name="s", path=root + "/study.toml")
for i in range(upserts):
    row = {"model": f"m{writer}", "k": 10, "seed": i, "groups": "all", "nmi": writer + i / 100, "settings": "x"}
    save_results(cache, study, pd.DataFrame([row]))
    cache.write_table("s", "pairs", pd.DataFrame([{"writer": writer, "i": i}]), {}, keys=["writer", "i"])
"""


def test_concurrent_upserts_lose_no_rows(tmp_path):
    """Each writer upserts its own rows one by one into the same results and analysis tables; every
    read-modify-write holds the table's lock, so all rows of all writers are there at the end."""
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, str(tmp_path), str(w), str(UPSERTS)], cwd=Path(__file__).resolve().parents[1]
        )
        for w in range(WRITERS)
    ]
    assert [w.wait(timeout=300) for w in workers] == [0] * WRITERS
    cache = Cache(tmp_path)
    results = load_results(cache, types.SimpleNamespace(name="s", path=tmp_path / "study.toml"))
    assert len(results) == WRITERS * UPSERTS
    assert sorted(zip(results["model"], results["seed"])) == sorted(
        (f"m{w}", i) for w in range(WRITERS) for i in range(UPSERTS)
    )
    assert len(cache.read_table("s", "pairs")) == WRITERS * UPSERTS
    assert all(p.name.endswith(".lock") for p in tmp_path.rglob(".*"))  # no temporary file is left


# --- atomic writes, stable hashes and artefact publication -------------------------------------


def test_atomic_write_leaves_the_old_file_when_the_replace_fails(tmp_path, monkeypatch):
    """The bytes go to a temporary file beside the target and one os.replace publishes them: where
    the replace fails, the old file is untouched and the temporary file is removed."""
    path = tmp_path / "table.parquet"
    atomic_write_bytes(path, b"old contents")
    assert path.read_bytes() == b"old contents"

    def refuse(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(cache_module.os, "replace", refuse)
    with pytest.raises(OSError, match="disk full"):
        atomic_write_bytes(path, b"new contents that must not appear")
    monkeypatch.undo()
    assert path.read_bytes() == b"old contents"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["table.parquet"]  # no .table.parquet.* left


def test_stable_hash_ignores_key_order_and_is_pinned():
    a = {"b": 1, "a": [1, 2.5, "x"], "c": {"z": None, "y": True}}
    b = {"c": {"y": True, "z": None}, "a": [1, 2.5, "x"], "b": 1}
    assert stable_hash(a) == stable_hash(b)
    canonical = b'{"a":[1,2.5,"x"],"b":1,"c":{"y":true,"z":null}}'
    assert stable_hash(b) == hashlib.sha256(canonical).hexdigest()[:24] == "f098f007b0668c88f39a47ab"
    assert stable_hash({"a": 1}) != stable_hash({"a": 2})


def _one_file(text):
    return {"data.txt": lambda p: p.write_text(text)}


def test_write_replaces_a_final_folder_that_is_not_a_whole_artefact(tmp_path):
    """A folder at the artefact's place with no manifest (deleted by hand, or left by a crash of an older
    version) is no finished artefact: the write replaces it (every rerun failed with "Directory not empty")."""
    cache = Cache(tmp_path)
    final = cache.path("clusters", "k1")
    final.mkdir(parents=True)
    (final / "junk.bin").write_bytes(b"half written")
    assert not cache.has("clusters", "k1")
    cache.write("clusters", "k1", _one_file("new"), {"note": "mine"})
    assert cache.has("clusters", "k1") and cache.manifest("clusters", "k1")["note"] == "mine"
    assert sorted(p.name for p in final.iterdir()) == ["data.txt", "manifest.json"]
    assert [p.name for p in final.parent.iterdir()] == ["k1"]  # the temporary folder is gone


def test_write_keeps_an_artefact_another_writer_published_first(tmp_path):
    cache = Cache(tmp_path)
    first = cache.write("clusters", "k1", _one_file("theirs"), {"note": "theirs"})
    again = cache.write("clusters", "k1", _one_file("mine"), {"note": "mine"})
    assert again == first == cache.path("clusters", "k1")
    assert (first / "data.txt").read_text() == "theirs"
    assert cache.manifest("clusters", "k1")["note"] == "theirs"
    assert [p.name for p in first.parent.iterdir()] == ["k1"]  # the loser's temporary folder is gone


def test_artefact_folder_appears_only_when_complete(tmp_path):
    """While the files are written nothing exists at the artefact's path (readers test the folder)."""
    cache = Cache(tmp_path)
    seen = []

    def writer(path):
        seen.append(cache.path("clusters", "k1").exists())
        path.write_text("x")

    cache.write("clusters", "k1", {"a.txt": writer, "b.txt": writer}, {})
    assert seen == [False, False]
    assert cache.has("clusters", "k1") and cache.load_json("clusters", "k1", "manifest.json")["files"] == [
        "a.txt",
        "b.txt",
    ]


CRASHING_WRITER = """
import os, sys
from qrp_core.cache import Cache
def first(path):
    path.write_text("part one")
def second(path):
    path.write_text("par")
    os._exit(1)  # killed mid-write: no exception handler runs
Cache(sys.argv[1]).write("clusters", "k1", {"a.txt": first, "b.txt": second}, {})
"""


def test_a_writer_killed_mid_way_leaves_no_artefact_folder(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-c", CRASHING_WRITER, str(tmp_path)],
        check=False,
        cwd=Path(__file__).resolve().parents[1],
        timeout=120,
    )
    assert proc.returncode == 1
    cache = Cache(tmp_path)
    assert not cache.path("clusters", "k1").exists()
    assert not cache.has("clusters", "k1")
    leftovers = list((tmp_path / "clusters").iterdir())
    assert len(leftovers) == 1 and leftovers[0].name.startswith(".tmp-k1-")  # a temporary, for cleanup
    os.utime(leftovers[0], (0, 0))
    assert cache.remove_stale_temporaries() == leftovers
