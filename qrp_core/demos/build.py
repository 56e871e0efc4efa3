"""The embedded demos, measured, analysed and ready to browse (CLI ``demo`` and the app's Home page)."""

from __future__ import annotations

import dataclasses
import shlex
from collections.abc import Callable
from pathlib import Path

from tqdm.auto import tqdm

from ..analyses.ablation import run_ablation
from ..analyses.pairs import run_pairs
from ..analyses.significance import significance_table
from ..analyses.transfer import run_transfer
from ..cache import Cache
from ..config import DEMO_K, RunConfig
from ..errors import InputError
from ..pipeline import Runner
from ..study import Study, load_study
from .concept_world import make_concept_world
from .ssl_world import make_ssl_world
from .synthetic import make_synthetic_study

# extra K for the varying-K view; concept world's 1,500 images leave 10 or more test images per cluster up to K=30
DEMO_SWEEP = (10, 20)
SSL_TRAINING_SHARE = 0.6  # of the ssl world's build time, measured: training and extraction


def build_demo(
    cache: Cache,
    config: RunConfig,
    *,
    world: str = "concepts",
    n_images: int | None = None,
    out: Path | None = None,
    on_stage: Callable[[str, float], None] | None = None,
    show_progress: bool = True,
) -> Study:
    """Write a demo study and compute what every view shows: the ranking at K=30, a K sweep, group
    ablations, the pairs that colour explains, significance, and transfer to a second collection.

    ``world``: ``concepts`` (drawn images seen by EfficientNet-Lite0 and baselines, the default),
    ``ssl`` (the same images seen by a small backbone trained by eight self-supervised and reference
    methods: ``ssl_world.py``; no transfer) or ``synthetic`` (planted features, seconds to build). ``on_stage(text, fraction_done)`` reports progress.
    """
    report = on_stage or (lambda text, fraction: None)
    out = out or cache.root / ("ssl" if world == "ssl" else "demo")
    n_images = n_images or (3000 if world == "synthetic" else 1500)
    if world == "concepts":
        report("drawing the images and extracting features", 0.0)
        study = load_study(make_concept_world(out, n_images=n_images, show_progress=show_progress))
        order = ("colour", "texture", "scene", "other")
    elif world == "ssl":
        report("drawing the images, training the SSL zoo and extracting features", 0.0)
        study = load_study(
            make_ssl_world(
                out,
                n_images=n_images,
                show_progress=show_progress,
                on_method=lambda method, i, n: report(
                    f"training {method} and extracting its features ({i + 1}/{n})", SSL_TRAINING_SHARE * i / n
                ),
            )
        )
        order = ("colour", "texture", "scene", "other")
    elif world == "synthetic":
        report("drawing the demo images", 0.0)
        study = load_study(make_synthetic_study(out, n_images=n_images))
        order = ("colour", "texture", "other")
    else:
        raise InputError(f"unknown demo world {world!r}", fix="use concepts, ssl or synthetic")
    main = dataclasses.replace(config, ks=(DEMO_K,))
    stages = [
        ("clustering and probing", lambda: Runner(study, main, cache, show_progress=show_progress).run()),
        (
            "varying K",
            lambda: Runner(study, dataclasses.replace(config, ks=DEMO_SWEEP), cache, show_progress=show_progress).run(),
        ),
        ("expert-group ablations", lambda: run_ablation(study, main, cache, order=order, show_progress=show_progress)),
        (
            "confused pairs",
            lambda: run_pairs(study, main, cache, base=("labels",), added="colour", show_progress=show_progress),
        ),
        ("significance", lambda: _significance(study, cache, main, show_progress)),
    ]
    if world != "ssl":
        stages.append(("transfer", lambda: _transfer(study, cache, out, world, n_images, show_progress)))
    done = SSL_TRAINING_SHARE if world == "ssl" else 0.0  # of the progress bar, before the analyses
    for i, (text, stage) in enumerate(stages):
        report(text, done + (1 - done) * (i + 1) / (len(stages) + 1))
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
