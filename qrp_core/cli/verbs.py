"""The verbs that set up, run and read a study: validate, extract, fetch, label, import-labels, demo, run,
ranking and export. Each takes the parsed arguments and returns the exit status. The engine (torch,
faiss) is imported by the verbs that compute, so that ``--help``, ``ranking``, ``export`` and
``validate`` start in about a second."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import pandas as pd

from ..cache import Cache
from ..config import DEMO_K
from ..errors import InputError
from ..features import standardisation_stats
from ..results import load_results, per_image_table, require_probe, result_rows, select_results
from ..study import Study, load_study
from .output import print_ranking, write_output
from .parser import run_config

EXPORT_SUFFIXES = (".csv", ".parquet")


def validate(args: argparse.Namespace) -> int:
    """Load every model as ``run`` would, finiteness included (chunked: features may be large memory maps);
    each model's problem is printed as an ``error:`` line and the others are still checked."""
    study = load_study(args.study)
    problems = 0
    for name, spec in study.models.items():
        try:
            if spec.has_features:
                x = study.features(name)
                standardisation_stats(x, source=spec.features)
                print(f"{name}: {x.shape[0]} x {x.shape[1]} {x.dtype} ({spec.features})")
            else:
                print(f"{name}: {int(study.cluster_ids(name).max()) + 1} given clusters ({spec.assignments})")
        except InputError as exc:
            print(f"error: {exc}", file=sys.stderr)
            problems += 1
    groups = ", ".join(f"{g} ({study.concepts.groups.count(g)})" for g in study.concepts.group_names)
    print(f"{study.n_images} images, {len(study.concepts.names)} concepts in groups: {groups}")
    if problems:
        print(f"{problems} of {len(study.models)} models have a problem (above)")
    return 2 if problems else 0


# what a source's metadata says about the weights it loaded (networks.py, checkpoints.load_backbone)
WEIGHTS_KEYS = ("weights", "weights_sha256", "checkpoint", "checkpoint_sha256", "found", "keys_matched", "left_out",
                "heads_not_in_checkpoint", "trained_method")  # fmt: skip


def extract(args: argparse.Namespace) -> int:
    from ..extract import extract as extract_features
    from ..extract import list_images
    from ..labels import read_label_names, readable_labels
    from ..networks import get_source, with_layers

    options = {}
    if args.weights is not None:
        options["weights"] = args.weights
    if args.source.startswith("efficientnet"):
        options.update(pretrained=not args.random_init, blocks=tuple(args.blocks))
    source = with_layers(get_source(args.source, **options), args.layers)
    images = list_images(args.images)
    loaded = {k: source.metadata[k] for k in WEIGHTS_KEYS if k in source.metadata}
    if loaded:
        print("weights: " + ", ".join(f"{k} {v}" for k, v in loaded.items()))
    files = extract_features(
        source, images, args.out, batch_size=args.batch_size, device=args.device, refuse_other_run=True
    )
    table = images.table()
    if "label" in table:
        names = read_label_names(args.label_names) if args.label_names else None
        table.insert(table.columns.get_loc("label"), "label_id", table["label"])
        table["label"] = readable_labels(images.labels, names, source=args.label_names or args.images)
    table.to_csv(args.out / "images.csv", index=False)
    for layer, path in files.items():
        print(f"{layer}: {path}")
    return 0


def fetch(args: argparse.Namespace) -> int:
    from ..demos.datasets import ARCHIVES
    from ..demos.datasets import fetch as fetch_archive

    folder = fetch_archive(ARCHIVES[args.dataset], args.out)
    print(f"{folder}\nnext: python -m qrp_core demo --study {args.dataset} --images {folder}")
    return 0


def import_labels(args: argparse.Namespace) -> int:
    from ..experts.runner import import_labels as long_table

    table = long_table(args.labels, group=args.group, source=args.source)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    table.to_parquet(args.out, index=False) if args.out.suffix == ".parquet" else table.to_csv(args.out, index=False)
    print(
        f"{len(table)} labels of {table['concept'].nunique()} concepts in {sorted(table['group'].unique())} "
        f"-> {args.out}"
    )
    return 0


def label(args: argparse.Namespace) -> int:
    from ..experts import get_expert
    from ..experts.runner import label_images
    from ..extract import list_images

    images = list_images(args.images)
    experts = [
        (name, {"colour": {"table": args.colour_table}, "texture": {"dtd_root": args.dtd}}.get(name, {}))
        for name in args.experts.split(",")
        if name
    ]
    experts += [
        (kind, {"weights": Path(model), "labels": Path(labels), "group": group, "source": source})
        for kind, model, labels, group, source in args.adapter
    ]
    if args.clip:
        experts.append(("clip", {"architecture": args.clip[0], "weights": Path(args.clip[1])}))
    written = []
    for name, options in experts:
        expert = get_expert(name, **options)
        written.append(label_images(expert, images, args.out))
        table = pd.read_parquet(written[-1])
        print(
            f"{expert.name}: {table['concept'].nunique()} concepts, {len(table) / len(images.ids):.2f} per image "
            f"-> {written[-1]}"
        )
    print("add to the study file: [concepts] tables = [..., " + ", ".join(f'"{p}"' for p in written) + "]")
    return 0


def demo(args: argparse.Namespace) -> int:
    """A photo demo (the ranking at each --k), or a built world with every view computed at K=30."""
    from ..analyses.pairs import run_pairs
    from ..demos.build import app_command, build_demo
    from ..demos.photos import PHOTO_PAIRS, build_photo_study
    from ..labels import read_label_names
    from ..pipeline import Runner

    cache = Cache(args.cache)
    if args.study in ("imagenette", "cifar10"):
        if args.images is None:
            raise InputError(f"--study {args.study} needs --images", fix="pass the folder of class folders")
        args.k = args.k or [DEMO_K]
        study = build_photo_study(
            args.study,
            args.images,
            args.out or cache.root / args.study,
            weights_dir=args.weights_dir,
            dtd_root=args.dtd,
            label_names=read_label_names(args.label_names) if args.label_names else None,
        )
        config = run_config(args, study)
        print_ranking(Runner(study, config, cache).run())
        for added in PHOTO_PAIRS:  # what Cluster pairs opens on
            if added in study.concepts.group_names:
                run_pairs(study, config, cache, base=(study.base_group,), added=added)
        return 0
    if args.k is not None or args.label_names is not None:
        option = "--k" if args.k is not None else "--label-names"
        raise InputError(
            f"the {args.study} demo takes no {option}", fix=f"drop {option} (it is for --study imagenette and cifar10)"
        )
    args.k = [DEMO_K]
    started = time.perf_counter()
    study = build_demo(
        cache,
        run_config(args, None),
        world=args.study,
        n_images=args.n_images,
        out=args.out,
        on_stage=lambda text, _: print(f"demo: [{_minutes(time.perf_counter() - started)}] {text}", file=sys.stderr),
    )
    print_ranking(result_rows(load_results(cache, study), k=DEMO_K, groups="+".join(study.concepts.group_names)))
    print(
        f"\nbuilt in {_minutes(time.perf_counter() - started)} on {_cores()} CPU cores"
        f"\nbrowse it: {app_command(cache)}   (study file: {study.path})",
        file=sys.stderr,
    )
    return 0


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def _minutes(seconds: float) -> str:
    return f"{int(seconds // 60)}:{int(seconds % 60):02d}"


def run(args: argparse.Namespace) -> int:
    """In this process, or on Ray (exit 1 when a unit failed; the rest is saved)."""
    from ..executors import RayOptions, default_task_gpus, print_failures, run_on_ray
    from ..pipeline import Runner

    study, cache = load_study(args.study), Cache(args.cache)
    config = run_config(args, study)
    if args.executor == "local":
        if args.address is not None:
            raise InputError("--address is for --executor ray", fix="add --executor ray, or drop --address")
        print_ranking(Runner(study, config, cache).run())
        return 0
    gpus = default_task_gpus(args.device) if args.task_gpus is None else args.task_gpus
    options = RayOptions(
        address=args.address, task_cpus=args.task_cpus, task_gpus=gpus, task_memory_gb=args.task_memory
    )
    outcome = run_on_ray(study, config, cache, options)
    if not outcome.results.empty:
        print_ranking(outcome.results)
    print_failures(outcome.failures)
    return 1 if outcome.failures else 0


def ranking(args: argparse.Namespace) -> int:
    study, cache = load_study(args.study), Cache(args.cache)
    results = select_results(load_results(cache, study), study, k=args.k, groups=args.groups)
    print_ranking(results, rows=args.rows, format=args.format, output=args.output)
    return 0


def export(args: argparse.Namespace) -> int:
    suffix = args.output.suffix.lower()
    if suffix not in EXPORT_SUFFIXES:
        raise InputError(
            f"cannot write {suffix or 'a file without a suffix'}",
            where=args.output,
            fix=f"end --output with {' or '.join(EXPORT_SUFFIXES)}",
        )
    study, cache = load_study(args.study), Cache(args.cache)
    table = per_image_table(study, cache, probe_of(args, study, cache))
    if suffix == ".parquet":
        write_output(args.output, lambda path: table.to_parquet(path, index=False))
    else:
        write_output(args.output, lambda path: table.to_csv(path, index=False))
    print(f"wrote {len(table)} rows to {args.output}", file=sys.stderr)
    return 0


def probe_of(args: argparse.Namespace, study: Study, cache: Cache) -> str:
    """The probe key of ``--model``, ``--k``, ``--seed`` and ``--groups`` (``results.require_probe``)."""
    return require_probe(cache, study, model=args.model, k=args.k, seed=args.seed, groups=args.groups)
