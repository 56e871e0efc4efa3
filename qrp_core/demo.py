"""The embedded demo: the synthetic study measured, analysed and ready to browse (CLI ``demo`` and the app)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable

from .analyses.ablation import run_ablation
from .analyses.pairs import run_pairs
from .analyses.significance import significance_table
from .analyses.transfer import run_transfer
from .cache import Cache
from .pipeline import RunConfig, Runner
from .study import Study, load_study
from .synthetic import make_synthetic_study

DEMO_K = 30  # the demo study plants 30 shape x colour combinations
DEMO_SWEEP = (10, 60)  # extra K for the varying-K view


def build_demo(cache: Cache, config: RunConfig, *, n_images: int = 3000, out: Path | None = None,
               on_stage: Callable[[str, float], None] | None = None, show_progress: bool = True) -> Study:
    """Write the demo study and compute what every view shows: the ranking at K=30, a K sweep,
    group ablations, the pairs that colour explains, significance, and transfer to a second
    collection. ``on_stage(text, fraction_done)`` reports progress."""
    report = on_stage or (lambda text, fraction: None)
    out = out or cache.root / "demo"
    report("drawing the demo images", 0.0)
    study = load_study(make_synthetic_study(out, n_images=n_images))
    main = dataclasses.replace(config, ks=(DEMO_K,))
    stages = [
        ("clustering and probing", lambda: Runner(study, main, cache, show_progress=show_progress).run()),
        ("varying K", lambda: Runner(study, dataclasses.replace(config, ks=DEMO_SWEEP), cache,
                                     show_progress=show_progress).run()),
        ("expert-group ablations", lambda: run_ablation(study, main, cache, order=("colour", "texture", "other"),
                                                        show_progress=show_progress)),
        ("confused pairs", lambda: run_pairs(study, main, cache, base=("labels",), added="colour",
                                             show_progress=show_progress)),
        ("significance", lambda: _significance(study, cache, main)),
        ("transfer", lambda: _transfer(study, cache, out, n_images)),
    ]
    for i, (text, stage) in enumerate(stages):
        report(text, (i + 1) / (len(stages) + 1))
        stage()
    report("done", 1.0)
    return study


def _significance(study: Study, cache: Cache, config: RunConfig) -> None:
    runner = Runner(study, config, cache, show_progress=False)
    results = runner.run()
    significance_table(study, cache, results, repeats=9, n_boot=100)


def _transfer(study: Study, cache: Cache, out: Path, n_images: int) -> None:
    other = load_study(make_synthetic_study(out.parent / f"{out.name}-transfer", n_images=n_images // 2,
                                            image_seed=1))
    run_transfer(study, other, cache, k=DEMO_K, groups="+".join(study.concepts.group_names))
