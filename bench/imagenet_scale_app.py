"""The app at ImageNet scale on a machine without a GPU: build a study of 1,281,167 images, then time its pages.

    python -m bench.imagenet_scale_app --out /tmp/in1k             # build: study, 5 clusterings, probes, analyses
    python -m bench.app_pages --cache /tmp/in1k/cache         # warm pages, cold start, the app's memory

The study: two synthetic models (D=256, features around 1,000 prototypes, one sharp and one blurred) written
chunk by chunk, never whole in memory; 1,700 concepts over five expert groups plus the labels (each image has
about 9 of its prototype's 12 concepts); image files shared by many rows (2 small JPEGs per prototype), so that
Cluster browser and Cluster pairs page through 1,000+ images per cluster from real files. The run: K=1,000,
5 seeds, all groups; the ablation of the sharp model (Fig. 4, Table 3) and labels -> + objects pairs, seed 0. Few K-means
iterations and probe epochs (``--iterations``, ``--epochs``) keep the build on 2 cores near 30 minutes: the
numbers are not the point, the size of every artefact the app reads is. Prints each stage's time.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from bench.kmeans_cpu import cpu_name

GROUPS = ("objects", "scene", "material", "texture", "other")
N_IMAGES = 1_281_167  # ImageNet's training set
PROTOTYPES = 1000
CHUNK = 65_536


def write_features(path: Path, prototype: np.ndarray, centres: np.ndarray, noise: float, seed: int) -> None:
    """Features ``centres[prototype] + noise * N(0, 1)`` streamed into a .npy, chunk by chunk."""
    rng = np.random.default_rng(seed)
    n, dim = len(prototype), centres.shape[1]
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": "<f4", "fortran_order": False, "shape": (n, dim)})
        for start in range(0, n, CHUNK):
            rows = prototype[start : start + CHUNK]
            chunk = centres[rows] + noise * rng.standard_normal((len(rows), dim), dtype=np.float32)
            f.write(chunk.astype(np.float32).tobytes())


def write_images(folder: Path, per_prototype: int = 2) -> None:
    """``per_prototype`` small JPEGs for each prototype: its colour and its number."""
    from PIL import Image, ImageDraw

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    for p in range(PROTOTYPES):
        colour = tuple(int(c) for c in rng.integers(40, 256, 3))
        for v in range(per_prototype):
            image = Image.new("RGB", (96, 96), colour)
            ImageDraw.Draw(image).text((8 + 30 * v, 40), f"{p}", fill=(0, 0, 0))
            image.save(folder / f"{p:04d}-{v}.jpg", quality=85)


def write_study(out: Path, n: int = N_IMAGES, dim: int = 256, n_concepts: int = 1700, active: int = 12) -> Path:
    rng = np.random.default_rng(0)
    prototype = rng.integers(0, PROTOTYPES, n)
    centres = rng.standard_normal((PROTOTYPES, dim), dtype=np.float32)
    (out / "features").mkdir(parents=True, exist_ok=True)
    write_features(out / "features" / "sharp.npy", prototype, centres, noise=0.8, seed=1)
    write_features(out / "features" / "blurred.npy", prototype, centres, noise=2.5, seed=2)
    write_images(out / "images")
    signature = rng.integers(0, n_concepts, size=(PROTOTYPES, active))
    keep = rng.random((n, active)) < 0.75
    cols = np.where(keep, signature[prototype], -1).ravel()
    rows = np.repeat(np.arange(n), active)
    matrix = sp.csr_matrix((np.ones(int((cols >= 0).sum()), bool), (rows[cols >= 0], cols[cols >= 0])), (n, n_concepts))
    matrix.sum_duplicates()
    sp.save_npz(out / "concepts.npz", matrix, compressed=False)
    groups = np.array(GROUPS, dtype=object)[np.arange(n_concepts) % len(GROUPS)]
    names = [f"[{g}] c{c:04d}" for c, g in enumerate(groups)]
    pd.DataFrame({"concept": names, "group": groups}).to_csv(out / "concepts.csv", index=False)
    variant = np.arange(n) % 2
    pd.DataFrame(
        {
            "image_id": [f"i{i:07d}" for i in range(n)],
            "label": [f"class{p:04d}" for p in prototype],
            "path": [f"images/{p:04d}-{v}.jpg" for p, v in zip(prototype, variant)],
        }
    ).to_csv(out / "images.csv", index=False)
    (out / "study.toml").write_text(
        'name = "imagenet-scale"\nimages = "images.csv"\nbase_group = "labels"\n\n'
        '[concepts]\nmatrix = "concepts.npz"\nnames = "concepts.csv"\n\n'
        '[models.sharp]\nfeatures = "features/sharp.npy"\nfamily = "synthetic"\nlinear_acc = 80.0\n\n'
        '[models.blurred]\nfeatures = "features/blurred.npy"\nfamily = "synthetic"\nlinear_acc = 40.0\n'
    )
    return out / "study.toml"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--images", type=int, default=N_IMAGES)
    parser.add_argument("--k", type=int, default=1000)
    parser.add_argument("--iterations", type=int, default=4, help="Lloyd iterations per clustering (one restart)")
    parser.add_argument("--epochs", type=int, default=2, help="probe epochs")
    args = parser.parse_args()

    from qrp_core.analyses.ablation import run_ablation
    from qrp_core.analyses.pairs import run_pairs
    from qrp_core.cache import Cache
    from qrp_core.config import KMeansConfig, ProbeConfig, RunConfig
    from qrp_core.pipeline import Runner
    from qrp_core.study import load_study

    print(f"{cpu_name()}, {len(os.sched_getaffinity(0))} cores")
    start = time.perf_counter()

    def stage(what: str) -> None:
        print(f"[{time.perf_counter() - start:7.0f} s] {what}", flush=True)

    path = args.out / "study.toml"
    if not path.is_file():
        stage(f"writing the study ({args.images:,} images)")
        write_study(args.out, n=args.images)
    stage("loading the study")
    study, cache = load_study(path), Cache(args.out / "cache")
    config = RunConfig(
        ks=(args.k,),
        kmeans=KMeansConfig(n_iter=args.iterations, n_restarts=1),
        probe=ProbeConfig(max_epochs=args.epochs),
    )
    stage("run: 2 models x 5 seeds, all groups")
    Runner(study, config, cache).run()
    one_seed = dataclasses.replace(config, seeds=(0,))
    stage("ablation of sharp, seed 0")
    run_ablation(study, dataclasses.replace(one_seed, models=("sharp",)), cache)
    stage("pairs labels -> + objects, seed 0")
    run_pairs(study, one_seed, cache, base=("labels",), added="objects")
    stage(f"built; now: python -m bench.app_pages --cache {cache.root}")


if __name__ == "__main__":
    main()
