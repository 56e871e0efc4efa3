"""The embedded demos, measured, analysed and ready to browse (CLI ``demo`` and the app's Home page)."""

from __future__ import annotations

import dataclasses
import shlex
from pathlib import Path
from typing import Callable

from tqdm.auto import tqdm

from .analyses.ablation import run_ablation
from .analyses.pairs import run_pairs
from .analyses.significance import significance_table
from .analyses.transfer import run_transfer
from .cache import Cache
from .concept_world import make_concept_world
from .config import DEMO_K, RunConfig
from .errors import InputError
from .pipeline import Runner
from .study import Study, load_study
from .synthetic import make_synthetic_study, write_study

DEMO_SWEEP = (10, 60)  # extra K for the varying-K view


def build_demo(cache: Cache, config: RunConfig, *, world: str = "concepts", n_images: int | None = None,
               out: Path | None = None, on_stage: Callable[[str, float], None] | None = None,
               show_progress: bool = True) -> Study:
    """Write a demo study and compute what every view shows: the ranking at K=30, a K sweep, group
    ablations, the pairs that colour explains, significance, and transfer to a second collection.

    ``world``: ``concepts`` (drawn images seen by EfficientNet-Lite0 and baselines, the default) or
    ``synthetic`` (planted features, seconds to build). ``on_stage(text, fraction_done)`` reports progress.
    """
    report = on_stage or (lambda text, fraction: None)
    out = out or cache.root / "demo"
    n_images = n_images or (1500 if world == "concepts" else 3000)
    if world == "concepts":
        report("drawing the images and extracting features", 0.0)
        study = load_study(make_concept_world(out, n_images=n_images, show_progress=show_progress))
        order = ("colour", "texture", "scene", "other")
    elif world == "synthetic":
        report("drawing the demo images", 0.0)
        study = load_study(make_synthetic_study(out, n_images=n_images))
        order = ("colour", "texture", "other")
    else:
        raise InputError(f"unknown demo world {world!r}", fix="use concepts or synthetic")
    main = dataclasses.replace(config, ks=(DEMO_K,))
    stages = [
        ("clustering and probing", lambda: Runner(study, main, cache, show_progress=show_progress).run()),
        ("varying K", lambda: Runner(study, dataclasses.replace(config, ks=DEMO_SWEEP), cache,
                                     show_progress=show_progress).run()),
        ("expert-group ablations", lambda: run_ablation(study, main, cache, order=order, show_progress=show_progress)),
        ("confused pairs", lambda: run_pairs(study, main, cache, base=("labels",), added="colour",
                                             show_progress=show_progress)),
        ("significance", lambda: _significance(study, cache, main, show_progress)),
        ("transfer", lambda: _transfer(study, cache, out, world, n_images, show_progress)),
    ]
    for i, (text, stage) in enumerate(stages):
        report(text, (i + 1) / (len(stages) + 1))
        stage()
    report("done", 1.0)
    return study


def app_command(cache: Cache) -> str:
    """The command that browses this cache: the app reads $QRP_CACHE (default ./cache)."""
    if cache.root.resolve() == Cache().root.resolve():
        return "streamlit run app.py"
    return f"QRP_CACHE={shlex.quote(str(cache.root))} streamlit run app.py"


def _significance(study: Study, cache: Cache, config: RunConfig, show_progress: bool) -> None:
    results = Runner(study, config, cache, show_progress=False).run()
    with tqdm(total=len(results), desc="permutations and bootstrap", disable=not show_progress) as bar:
        significance_table(study, cache, results, repeats=9, n_boot=100, progress=lambda: bar.update(1))


def _transfer(study: Study, cache: Cache, out: Path, world: str, n_images: int, show_progress: bool) -> None:
    target = out.parent / f"{out.name}-transfer"
    if world == "concepts":
        path = make_concept_world(target, n_images=n_images // 3, image_seed=1, show_progress=show_progress)
    else:
        path = make_synthetic_study(target, n_images=n_images // 2, image_seed=1)
    run_transfer(study, load_study(path), cache, k=DEMO_K)


# --- demo studies of real photos -----------------------------------------------------------------
IMAGENETTE_CLASSES = {"n01440764": "tench", "n02102040": "English springer", "n02979186": "cassette player",
                      "n03000684": "chain saw", "n03028079": "church", "n03394916": "French horn",
                      "n03417042": "garbage truck", "n03425413": "gas pump", "n03445777": "golf ball",
                      "n03888257": "parachute"}
# plus "texture" when a DTD folder is given (it trains on it); CIFAR's 32-px images hold no readable text or faces
PHOTO_EXPERTS = {"imagenette": ("imagenet", "haar", "text", "colour", "style"), "cifar10": ("imagenet", "colour", "style")}
# extraction jobs (one pass of a network each) and the representations they give:
# job -> (source, options); representation -> (job, layer, metadata)
PHOTO_JOBS = {
    "imagenette": {"lite0": ("efficientnet-lite0", {"blocks": (3, 7, 11)}), "lite1": ("efficientnet-lite1", {}),
                   "lite2": ("efficientnet-lite2", {}), "lite0-random": ("efficientnet-lite0", {"pretrained": False}),
                   "pixels": ("pixels", {"side": 16})},
    "cifar10": {**{f"resnet{d}": (f"cifar-resnet{d}", {"weights": f"resnet{d}"}) for d in (20, 32, 44, 56)},
                "resnet20-random": ("cifar-resnet20", {}), "pixels": ("pixels", {"side": 16, "image_size": 32})},
}
PHOTO_MODELS = {
    "imagenette": {
        **{f"lite{v}": (f"lite{v}", "final", {"network": f"lite{v}", "layer": 16}) for v in (0, 1, 2)},
        **{f"lite0-block{b}": ("lite0", f"block{b}", {"network": "lite0", "layer": b}) for b in (3, 7, 11)},
        "lite0-random": ("lite0-random", "final", {}), "pixels": ("pixels", "final", {}),
    },
    "cifar10": {job: (job, "final", {}) for job in PHOTO_JOBS["cifar10"]},
}


def build_photo_study(name: str, images_root: Path, out: Path, *, weights_dir: Path | None = None,
                      dtd_root: Path | None = None, show_progress: bool = True) -> Study:
    """A study of a folder of class folders (Imagenette, CIFAR-10): thumbnails, the ground-truth labels
    as the base group, the concepts of the offline experts in ``PHOTO_EXPERTS``, and the features of
    every representation in ``PHOTO_MODELS[name]``, extracted once per network and resumably."""
    import numpy as np
    import pandas as pd
    from PIL import Image

    from .extract import extract, list_images
    from .networks import get_source

    images = list_images(images_root)
    thumbs = out / "thumbs"
    thumbs.mkdir(parents=True, exist_ok=True)
    paths = np.array([f"thumbs/{i.replace('/', '__').rsplit('.', 1)[0]}.jpg" for i in images.ids], dtype=object)
    for source_path, thumb in zip(images.paths, paths):
        if not (out / thumb).is_file():
            with Image.open(source_path) as image:
                image.convert("RGB").resize((64, 64), Image.BILINEAR).save(out / thumb, quality=85)
    files, sources = {}, {}
    for job, (source_name, options) in PHOTO_JOBS[name].items():
        options = dict(options)
        if "weights" in options:
            matches = sorted((weights_dir or Path()).glob(f"{options['weights']}-*.th"))
            if not matches:
                raise InputError(f"no {options['weights']} weights", where=weights_dir or Path(),
                                 fix="pass --weights-dir with the CIFAR ResNet .th files")
            options["weights"] = matches[0]
        sources[job] = get_source(source_name, **options)
        files[job] = extract(sources[job], images, out / "features", prefix=f"{job}--", show_progress=show_progress)
    features = {model: files[job][layer] for model, (job, layer, _) in PHOTO_MODELS[name].items()}
    metadata = {model: {**sources[job].metadata, **meta} for model, (job, _, meta) in PHOTO_MODELS[name].items()}
    from .experts import get_expert
    from .experts.runner import label_images

    experts = [get_expert(e) for e in PHOTO_EXPERTS[name]]
    if dtd_root is not None:
        experts.append(get_expert("texture", dtd_root=dtd_root))
    concepts = pd.concat([pd.read_parquet(label_images(expert, images, out / "experts", show_progress=show_progress))
                          for expert in experts], ignore_index=True)
    labels = np.array([IMAGENETTE_CLASSES.get(label, label) for label in images.labels], dtype=object)
    return load_study(write_study(out, name, np.array(images.ids, dtype=object), concepts, features, metadata,
                                  labels=labels, paths=paths))
