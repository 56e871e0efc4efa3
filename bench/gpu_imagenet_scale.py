"""One model's whole evaluation at ImageNet scale, for a GPU machine (issue: performance at ImageNet scale).

    python bench/gpu_imagenet_scale.py            # N=1,281,167, D=2048, K=1000, M~1,700: the paper's setting
    python bench/gpu_imagenet_scale.py --small    # N=20,000, D=128, K=100: a CPU check that it runs

Writes a synthetic study with planted concept structure (features memory-mapped on disk, written in
chunks), then runs the engine on it: 5 clusterings (each best of 5 restarts x 100 forced iterations),
and per clustering the full probe plus 10 expert-group ablation probes, with every metric. Prints each
stage's wall time and the device that ran it; writes bench_gpu.json to $OUT when set.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from qrp_core.cache import Cache  # noqa: E402
from qrp_core.pipeline import RunConfig, Runner  # noqa: E402
from qrp_core.probe import ProbeConfig  # noqa: E402
from qrp_core.quantize import KMeansConfig  # noqa: E402
from qrp_core.study import load_study  # noqa: E402
from qrp_core.synthetic import write_study  # noqa: E402

GROUPS = ("objects", "scene", "material", "texture", "other")


def write_synthetic(out: Path, n: int, dim: int, k: int, n_concepts: int, active: int, seed: int = 0) -> Path:
    """Features around K prototypes (chunked into a memory map) and concepts typical of each prototype,
    spread over five expert groups plus ground-truth labels (one per prototype)."""
    rng = np.random.default_rng(seed)
    prototype = rng.integers(0, k, n)
    centres = rng.normal(size=(k, dim)).astype(np.float32)
    (out / "features").mkdir(parents=True, exist_ok=True)
    x = np.lib.format.open_memmap(out / "features" / "model.npy", mode="w+", dtype=np.float32, shape=(n, dim))
    for start in range(0, n, 65536):
        stop = min(start + 65536, n)
        x[start:stop] = centres[prototype[start:stop]] + rng.normal(scale=0.8, size=(stop - start, dim))
    x.flush()
    del x
    signature = rng.integers(0, n_concepts, size=(k, active))
    keep = rng.random((n, active)) < 0.75
    cols = np.where(keep, signature[prototype], -1).ravel()
    rows = np.repeat(np.arange(n), active)[cols >= 0]
    cols = cols[cols >= 0]
    ids = np.array([f"i{i:07d}" for i in range(n)], dtype=object)
    names = np.array([f"[{GROUPS[c % len(GROUPS)]}] c{c:04d}" for c in range(n_concepts)], dtype=object)
    concepts = pd.DataFrame({"image_id": ids[rows], "concept": names[cols],
                             "group": np.array(GROUPS, dtype=object)[cols % len(GROUPS)]}).drop_duplicates()
    labels = np.array([f"class{p % 1000:04d}" for p in prototype], dtype=object)
    return write_study(out, "imagenet-scale", ids, concepts, {"model": out / "features" / "model.npy"},
                       {"model": {"family": "synthetic"}}, labels=labels)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", action="store_true")
    parser.add_argument("--workdir", type=Path, default=None, help="where the study and cache go (default: a temp dir)")
    args = parser.parse_args()
    n, dim, k, m, seeds, iters = ((20_000, 128, 100, 400, 2, 10) if args.small else (1_281_167, 2048, 1000, 1700, 5, 100))
    work = args.workdir or Path(tempfile.mkdtemp(prefix="qrp-gpu-bench-"))
    figures = {"n": n, "dim": dim, "k": k, "concepts": m, "seeds": seeds, "iterations": iters, "seconds": {}}
    t = time.perf_counter()
    study = load_study(write_synthetic(work / "study", n, dim, k, m, active=20))
    figures["seconds"]["write study"] = time.perf_counter() - t
    base = ("labels",)
    sets = [(*base, *GROUPS)]  # the full probe, then 10 ablation probes:
    sets += [base] + [(*base, g) for g in GROUPS]  # base alone and base + each group (Table 3)
    sets += [(*base, *GROUPS[:i]) for i in range(2, len(GROUPS))] + [GROUPS]  # prefixes (Fig. 4), no base
    assert len(set(sets)) == 11
    config = RunConfig(ks=(k,), seeds=tuple(range(seeds)), group_sets=tuple(sets),
                       kmeans=KMeansConfig(n_clusters=k, n_iter=iters, n_restarts=5), probe=ProbeConfig())
    cache = Cache(work / "cache")
    t = time.perf_counter()
    results = Runner(study, config, cache).run()
    figures["seconds"]["evaluation"] = time.perf_counter() - t
    clusterings = [cache.manifest("clusterings", key) for key in results["clustering"].unique()]
    probes = [cache.manifest("probes", key) for key in results["probe"]]
    figures["devices"] = {"kmeans": sorted({c["stats"]["device"] for c in clusterings}),
                          "probe": sorted({p["stats"]["device"] for p in probes})}
    figures["seconds"]["kmeans per clustering"] = [c["stats"]["seconds"] for c in clusterings]
    figures["seconds"]["probe epochs per probe (mean)"] = float(np.mean([p["stats"]["seconds"] / p["stats"]["epochs_run"]
                                                                          for p in probes]))
    figures["probes"] = len(probes)
    figures["peak_rss_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    full = "+".join(g for g in study.concepts.group_names if g in sets[0])
    figures["nmi_full_probe"] = results[results["groups"] == full]["nmi"].describe().to_dict()
    print(json.dumps(figures, indent=2, default=float))
    if os.environ.get("OUT"):
        Path(os.environ["OUT"], "bench_gpu.json").write_text(json.dumps(figures, indent=2, default=float))


if __name__ == "__main__":
    main()
