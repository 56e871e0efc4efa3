"""One model's whole evaluation at ImageNet scale, for a GPU machine (issue: performance at ImageNet scale).

    python bench/gpu_imagenet_scale.py                 # N=1,281,167, D=2048, K=1000, M=1,700: the paper's setting
    python bench/gpu_imagenet_scale.py --small         # N=20,000, D=128, K=100: a CPU check that it runs
    python bench/gpu_imagenet_scale.py --budget-s 400  # stop starting clusterings after 400 s

Stages, each timed and written to $OUT/bench_gpu.json as soon as it ends (when OUT is set):
1. checks: on small data, the GPU K-means, probe and metrics against the CPU ones (same seeds);
2. write: a synthetic study with planted concept structure (features streamed to a .npy file,
   concepts as a sparse matrix);
3. probe speed: epochs per second of one probe and of 11 stacked probes on 1M training rows;
4. evaluation: the engine's run, clustering by clustering (each best of 5 restarts x 100 forced
   iterations; per clustering the full probe plus 10 expert-group ablation probes, every metric),
   until all 5 are done or the budget is spent.
Peak memory is sampled throughout: resident set, and its anonymous part (file pages of the
memory-mapped features are the page cache's, shared and reclaimable).
"""

from __future__ import annotations

import argparse
import cProfile
import dataclasses
import io
import json
import os
import pstats
import resource
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from qrp_core.cache import Cache  # noqa: E402
from qrp_core.config import KMeansConfig, ProbeConfig, RunConfig  # noqa: E402
from qrp_core.features import standardisation_stats  # noqa: E402
from qrp_core.metrics import normalized_mutual_info, probe_scores  # noqa: E402
from qrp_core.pipeline import Runner  # noqa: E402
from qrp_core.probe import probe_logits, train_probes  # noqa: E402
from qrp_core.quantize import features_on_device, kmeans  # noqa: E402
from qrp_core.split import TEST, TRAIN, VAL  # noqa: E402
from qrp_core.study import load_study  # noqa: E402

GROUPS = ("objects", "scene", "material", "texture", "other")


class MemorySampler(threading.Thread):
    """Peak VmRSS / RssAnon / RssFile of this process in GiB, sampled every 0.2 s."""

    def __init__(self):
        super().__init__(daemon=True)
        self.peak = {"VmRSS": 0.0, "RssAnon": 0.0, "RssFile": 0.0}

    def run(self):
        while True:
            for line in open("/proc/self/status"):
                name = line.split(":")[0]
                if name in self.peak:
                    self.peak[name] = max(self.peak[name], int(line.split()[1]) / 2**20)
            time.sleep(0.2)


def write_synthetic(out: Path, n: int, dim: int, k: int, n_concepts: int, active: int, seed: int = 0) -> Path:
    """Features around K prototypes, streamed chunk by chunk into a .npy (never mapped, never whole
    in memory), and concepts typical of each prototype spread over five expert groups, plus
    ground-truth labels (one per prototype)."""
    rng = np.random.default_rng(seed)
    prototype = rng.integers(0, k, n)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    generator = torch.Generator(device).manual_seed(seed)
    centres = torch.randn(k, dim, generator=generator, device=device)
    (out / "features").mkdir(parents=True, exist_ok=True)
    with open(out / "features" / "model.npy", "wb") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": "<f4", "fortran_order": False, "shape": (n, dim)})
        for start in range(0, n, 65536):
            rows = torch.as_tensor(prototype[start : start + 65536], device=device)
            noise = torch.randn(len(rows), dim, generator=generator, device=device)
            f.write((centres[rows] + 0.8 * noise).cpu().numpy().tobytes())
    signature = rng.integers(0, n_concepts, size=(k, active))
    keep = rng.random((n, active)) < 0.75
    cols = np.where(keep, signature[prototype], -1)
    rows = np.repeat(np.arange(n), active)[cols.ravel() >= 0]
    matrix = sp.csr_matrix((np.ones(len(rows), bool), (rows, cols.ravel()[cols.ravel() >= 0])), shape=(n, n_concepts))
    matrix.sum_duplicates()
    sp.save_npz(out / "concepts.npz", matrix, compressed=False)
    groups = np.array(GROUPS, dtype=object)[np.arange(n_concepts) % len(GROUPS)]
    pd.DataFrame({"concept": [f"[{g}] c{c:04d}" for c, g in enumerate(groups)], "group": groups}).to_csv(
        out / "concepts.csv", index=False
    )
    pd.DataFrame({"image_id": [f"i{i:07d}" for i in range(n)], "label": [f"class{p:04d}" for p in prototype]}).to_csv(
        out / "images.csv", index=False
    )
    (out / "study.toml").write_text(
        'name = "imagenet-scale"\nimages = "images.csv"\nbase_group = "labels"\n\n'
        '[concepts]\nmatrix = "concepts.npz"\nnames = "concepts.csv"\n\n'
        '[models.model]\nfeatures = "features/model.npy"\nfamily = "synthetic"\n'
    )
    return out / "study.toml"


def gpu_checks() -> dict:
    """The device's K-means, probe and metrics against the CPU's on small data, same seeds."""
    from bench.pipeline import make_study

    x, concepts = make_study(20_000, 64, 100, 400, 12, seed=1)
    config = KMeansConfig(n_clusters=100, n_iter=20, n_restarts=2)
    cpu = kmeans(x, dataclasses.replace(config, device="cpu"), seed=0)
    dev = kmeans(x, config, seed=0)
    objective = lambda r: np.array([s["objective"] for s in r.stats["restarts"]])  # noqa: E731
    out = {
        "kmeans": {
            "backend": dev.stats["backend"],
            "device": dev.stats["device"],
            "same_assignment_fraction": float((cpu.assignments == dev.assignments).mean()),
            "objective_max_rel_diff": float(np.abs(objective(cpu) / objective(dev) - 1).max()),
        }
    }
    targets = cpu.assignments
    split = np.random.default_rng(0).choice([TRAIN, VAL, TEST], size=len(targets), p=[0.64, 0.16, 0.2])
    split = split.astype(np.int8)
    probe = ProbeConfig(max_epochs=10)
    results = {}
    for device in ("cpu", "cuda" if torch.cuda.is_available() else "cpu"):
        result = train_probes(
            concepts,
            np.ones((1, concepts.shape[1]), bool),
            targets,
            split,
            100,
            dataclasses.replace(probe, device=device),
            seed=0,
        )[0]
        logits = probe_logits(result.weight, result.bias, concepts[np.flatnonzero(split == TEST)], device="cpu")
        results[device] = (result, logits)
    (a, logits_a), (b, logits_b) = results["cpu"], results[list(results)[-1]]
    truth = targets[split == TEST]
    out["probe"] = {
        "max_weight_diff": float(np.abs(a.weight - b.weight).max()),
        "nmi_cpu": normalized_mutual_info(truth, logits_a.argmax(1)),
        "nmi_device": normalized_mutual_info(truth, logits_b.argmax(1)),
    }
    on_cpu = probe_scores(truth, logits_a, np.bincount(targets, minlength=100))
    on_device = probe_scores(
        truth,
        torch.as_tensor(logits_a, device="cuda" if torch.cuda.is_available() else "cpu"),
        np.bincount(targets, minlength=100),
    )
    out["metrics_max_abs_diff"] = {m: abs(on_cpu[m] - on_device[m]) for m in ("nmi", "ami", "top1", "map", "mi_bits")}
    return out


def probe_speed(study, n_train: int, n_probes: int, epochs: int = 3) -> dict:
    """Seconds per epoch of ``n_probes`` stacked probes (all concepts each) on ``n_train`` rows."""
    n = study.n_images
    n_train = min(n_train, int(0.9 * n))
    split = np.full(n, TEST, np.int8)
    split[:n_train], split[n_train : n_train + 20_000] = TRAIN, VAL
    targets = np.random.default_rng(0).integers(0, 1000, n)
    masks = np.ones((n_probes, study.concepts.matrix.shape[1]), bool)
    t = time.perf_counter()
    result = train_probes(study.concepts.matrix, masks, targets, split, 1000, ProbeConfig(max_epochs=epochs), seed=0)
    seconds = result[0].stats["seconds"]
    return {
        "n_train": n_train,
        "n_probes": n_probes,
        "epochs": epochs,
        "device": result[0].stats["device"],
        "steps": result[0].stats["steps"],
        "graph_failure": result[0].stats["graph_failure"],
        "compile_failure": result[0].stats["compile_failure"],
        "seconds_per_epoch": seconds / epochs,
        "epochs_per_second": epochs / seconds,
        "wall_seconds": time.perf_counter() - t,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", action="store_true")
    parser.add_argument("--workdir", type=Path, default=None, help="where the study and cache go (default: a temp dir)")
    parser.add_argument("--budget-s", type=float, default=None, help="start no clustering after this many seconds")
    parser.add_argument("--skip-checks", action="store_true")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="profile the first clustering's evaluation (cProfile; top functions to $OUT/profile.txt)",
    )
    args = parser.parse_args()
    n, dim, k, m, seeds, iters = (20_000, 128, 100, 400, 2, 10) if args.small else (1_281_167, 2048, 1000, 1700, 5, 100)
    t_start = time.perf_counter()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="qrp-gpu-bench-"))
    memory = MemorySampler()
    memory.start()
    figures = {
        "n": n,
        "dim": dim,
        "k": k,
        "concepts": m,
        "seeds_planned": seeds,
        "iterations": iters,
        "torch": torch.__version__,
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "seconds": {},
    }

    def save(stage: str) -> None:
        figures["peak_memory_gib"] = {
            **memory.peak,
            "ru_maxrss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        }
        figures["elapsed_s"] = time.perf_counter() - t_start
        print(f"[{figures['elapsed_s']:7.1f} s] {stage}: {json.dumps(figures.get(stage), default=float)}", flush=True)
        if os.environ.get("OUT"):
            Path(os.environ["OUT"], "bench_gpu.json").write_text(json.dumps(figures, indent=2, default=float))

    if not args.skip_checks:
        figures["checks"] = gpu_checks()
        save("checks")
    t = time.perf_counter()
    study = load_study(write_synthetic(work / "study", n, dim, k, m, active=20))
    figures["seconds"]["write and load study"] = time.perf_counter() - t
    figures["concept_nnz_per_image"] = study.concepts.matrix.nnz / n
    save("seconds")
    figures["probe_speed"] = [probe_speed(study, 1_000_000, p) for p in (1, 11)]
    save("probe_speed")

    base = ("labels",)
    sets = [(*base, *GROUPS)]  # the full probe, then 10 ablation probes:
    sets += [base] + [(*base, g) for g in GROUPS]  # base alone and base + each group (Table 3)
    sets += [(*base, *GROUPS[:i]) for i in range(2, len(GROUPS))] + [GROUPS]  # prefixes (Fig. 4), no base
    assert len(set(sets)) == 11
    cache = Cache(work / "cache")
    runner_config = dict(
        ks=(k,),
        group_sets=tuple(sets),
        kmeans=KMeansConfig(n_clusters=k, n_iter=iters, n_restarts=5),
        probe=ProbeConfig(),
    )
    figures["clusterings"] = []
    spec = study.model("model")
    t = time.perf_counter()
    cache.file_hash(spec.features)  # the artefact keys hash the feature file once
    figures["seconds"]["sha256 of the feature file"] = time.perf_counter() - t
    t = time.perf_counter()
    # one run computes the feature statistics once for all its seeds
    standardisation = {"model": standardisation_stats(spec.load(study.image_ids), source=spec.features)}
    figures["seconds"]["feature statistics (one chunked pass)"] = time.perf_counter() - t
    t = time.perf_counter()
    # and puts the standardised features on the GPU once, where torch runs K-means and they fit
    on_device = {
        "model": features_on_device(
            spec.load(study.image_ids),
            standardisation["model"],
            sample_rows=min(n, k * KMeansConfig().max_points_per_centroid),
        )
    }
    figures["features_resident_on_device"] = on_device["model"] is not None
    figures["seconds"]["standardised features to the device"] = time.perf_counter() - t
    save("seconds")
    for seed in range(seeds):
        spent = time.perf_counter() - t_start
        if args.budget_s and figures["clusterings"] and spent + figures["clusterings"][-1]["wall_s"] > args.budget_s:
            figures["stopped"] = f"budget: {spent:.0f} s spent before seed {seed}"
            break
        t = time.perf_counter()
        runner = Runner(study, RunConfig(seeds=(seed,), **runner_config), cache, show_progress=False)
        runner.standardisation, runner.on_device = standardisation, on_device
        if args.profile and seed == 0:
            profiler = cProfile.Profile()
            results = profiler.runcall(runner.run)
            report = io.StringIO()
            pstats.Stats(profiler, stream=report).sort_stats("cumulative").print_stats(60)
            Path(os.environ.get("OUT", work), "profile.txt").write_text(report.getvalue())
        else:
            results = runner.run()
        wall = time.perf_counter() - t
        clustering = cache.manifest("clusterings", results["clustering"].iloc[0])
        probes = [cache.manifest("probes", key) for key in results["probe"]]
        full = results[results["groups"] == "+".join(g for g in study.concepts.group_names if g in sets[0])]
        figures["clusterings"].append(
            {
                "seed": seed,
                "wall_s": wall,
                "kmeans": clustering["stats"]["seconds"],
                "kmeans_backend": clustering["stats"]["backend"],
                "kmeans_device": clustering["stats"]["device"],
                "distance_products": clustering["stats"]["restarts"][0].get("distance_products"),
                "assignments_recomputed_in_float32": [
                    r.get("assignments_recomputed_in_float32") for r in clustering["stats"]["restarts"]
                ],
                "iterations_run": clustering["stats"]["iterations_run"],
                "probe_training_s": probes[0]["stats"]["seconds"],
                "probes_trained_together": probes[0]["stats"]["trained_with"],
                "probe_device": probes[0]["stats"]["device"],
                "probe_epochs": probes[0]["stats"]["epochs_run"],
                "split_metrics_and_writes_s": wall
                - sum(clustering["stats"]["seconds"].values())
                - probes[0]["stats"]["seconds"],
                "nmi_full": float(full["nmi"].iloc[0]),
                "nmi_labels_only": float(results[results["groups"] == "labels"]["nmi"].iloc[0]),
            }
        )
        save("clusterings")
    done = figures["clusterings"]
    figures["evaluation_s_per_clustering"] = float(np.mean([c["wall_s"] for c in done]))
    figures["evaluation_s_projected_5_clusterings"] = 5 * figures["evaluation_s_per_clustering"]
    save("evaluation_s_projected_5_clusterings")


if __name__ == "__main__":
    main()
