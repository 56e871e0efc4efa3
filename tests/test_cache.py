"""The cache's shared tables under concurrent writers (two `run`s in two terminals, Ray workers)."""

import subprocess
import sys
import types
from pathlib import Path

from qrp_core.cache import Cache
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
    workers = [subprocess.Popen([sys.executable, "-c", WORKER, str(tmp_path), str(w), str(UPSERTS)],
                                cwd=Path(__file__).resolve().parents[1]) for w in range(WRITERS)]
    assert [w.wait(timeout=300) for w in workers] == [0] * WRITERS
    cache = Cache(tmp_path)
    results = load_results(cache, types.SimpleNamespace(name="s", path=tmp_path / "study.toml"))
    assert len(results) == WRITERS * UPSERTS
    assert sorted(zip(results["model"], results["seed"])) == sorted((f"m{w}", i) for w in range(WRITERS)
                                                                   for i in range(UPSERTS))
    assert len(cache.read_table("s", "pairs")) == WRITERS * UPSERTS
    assert all(p.name.endswith(".lock") for p in tmp_path.rglob(".*"))  # no temporary file is left
