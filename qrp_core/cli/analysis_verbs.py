"""The verbs of the analyses: ablation, pairs, explain, sweep-k, layers, transfer, significance. Each reads
its arguments, calls the analysis with typed values, and prints its tables (percent, as the paper)."""

from __future__ import annotations

import argparse
import sys

from tqdm.auto import tqdm

from ..analyses.pairs import explain_pair, pair_groups
from ..cache import Cache, read_parquet_file
from ..results import compare_models, load_results, parse_groups, result_rows, results_path, select_results
from ..study import Study, load_study
from .output import percent
from .parser import run_config
from .verbs import probe_of


def grid_from_cache(args: argparse.Namespace, study: Study, cache: Cache) -> None:
    """Fill ``--k`` and ``--seeds`` that were not given with what the study's results hold for the chosen
    models (every K; seeds 0..S-1 as far as they go at those K), so an analysis of a ``run`` trains no new
    clustering; the paper's K=1000 and 5 seeds where the results hold none."""
    if args.k is not None and args.seeds is not None:
        return
    path = results_path(cache, study.name)
    models = [m for m in args.models.split(",") if m] or None
    held = result_rows(read_parquet_file(path), models=models) if path.is_file() else None
    if args.k is None:
        args.k = sorted(int(k) for k in held["k"].unique()) if held is not None and len(held) else [1000]
    if args.seeds is None:
        at_k = held[held["k"].isin(args.k)] if held is not None else []
        args.seeds = int(at_k["seed"].max()) + 1 if len(at_k) else 5
    print(
        f"note: K={' '.join(map(str, args.k))} and seeds 0..{args.seeds - 1}, as the results hold "
        "(--k and --seeds choose others)",
        file=sys.stderr,
    )


def ablation(args: argparse.Namespace) -> int:
    from ..analyses.ablation import cumulative_summary, gain_summary, run_ablation

    study, cache = load_study(args.study), Cache(args.cache)
    grid_from_cache(args, study, cache)
    order = tuple(g for g in args.order.split(",") if g) if args.order else None
    tables = run_ablation(study, run_config(args, study), cache, order=order)
    summary = cumulative_summary(tables["cumulative"]).drop(columns="added")
    print("Cumulative (Fig. 4): NMI % per prefix of the group order")
    print(percent(summary, ["mean", "std"]).to_string(index=False))
    if not tables["gain"].empty:
        print("\nPer-group gain (Table 3): base-alone NMI % and ΔNMI points per added group")
        print(gain_summary(tables["gain"]).round(2).to_string(index=False))
    return 0


def pairs(args: argparse.Namespace) -> int:
    from ..analyses.pairs import run_pairs

    study, cache = load_study(args.study), Cache(args.cache)
    grid_from_cache(args, study, cache)
    base = parse_groups(args.base, study)
    table = run_pairs(study, run_config(args, study), cache, base=base, added=args.added)
    for (model, k, seed), part in table.groupby(["model", "k", "seed"]):
        top = part.sort_values("drop", ascending=False).head(args.top)
        print(
            f"\n{model} K={k} seed={seed}: pairs whose confusion drops most when {args.added!r} joins {'+'.join(base)}"
        )
        print(
            percent(
                top[["i", "j", "confusion_a", "confusion_b", "drop"]], ["confusion_a", "confusion_b", "drop"]
            ).to_string(index=False)
        )
        best = top.iloc[0]
        diff = explain_pair(study, cache, best["probe_b"], int(best["i"]), int(best["j"]), n=args.top)["difference"]
        print(f"  why {int(best['i'])} vs {int(best['j'])}: theta_i - theta_j, largest first")
        print(diff.head(args.top)[["concept", "group", "difference"]].round(3).to_string(index=False))
    return 0


def explain(args: argparse.Namespace) -> int:
    study, cache = load_study(args.study), Cache(args.cache)
    i, j = args.pair
    if args.groups is None:
        args.groups = pair_groups(cache, study, model=args.model, k=args.k, seed=args.seed, i=i, j=j)
        print(f"note: the probe on {args.groups} (--groups chooses another)", file=sys.stderr)
    probe = probe_of(args, study, cache)
    parts = explain_pair(study, cache, probe, i, j, n=args.top)
    print(f"theta_{i} - theta_{j} (positive: speaks for {i})")
    print(parts["difference"].head(args.top)[["concept", "group", "difference"]].round(3).to_string(index=False))
    for side, cluster in (("i", i), ("j", j)):
        print(f"\ncluster {cluster}: top coefficients")
        print(parts[f"top_{side}"].round(3).to_string(index=False))
        print(f"cluster {cluster}: over-represented concepts")
        print(parts[f"over_{side}"].round(3).to_string(index=False))
        print(f"cluster {cluster}: images nearest the centroid: {', '.join(study.image_ids[parts[f'images_{side}']])}")
    return 0


def sweep_k(args: argparse.Namespace) -> int:
    from ..analyses.curves import run_k_curve

    study = load_study(args.study)
    curve = run_k_curve(study, run_config(args, study), Cache(args.cache))
    print("Varying K (Fig. 6, 7): mean over seeds")
    print(
        percent(
            curve[["model", "groups", "k", "nmi_mean", "ami_mean", "top1_mean"]], ["nmi_mean", "ami_mean", "top1_mean"]
        )
        .assign(mi_bits=curve["mi_bits_mean"].round(3))
        .to_string(index=False)
    )
    return 0


def layers(args: argparse.Namespace) -> int:
    from ..analyses.curves import run_layer_curve

    study = load_study(args.study)
    curve = run_layer_curve(study, run_config(args, study), Cache(args.cache))
    print(
        percent(
            curve[["network", "layer", "model", "k", "nmi_mean", "ami_mean", "top1_mean"]],
            ["nmi_mean", "ami_mean", "top1_mean"],
        ).to_string(index=False)
    )
    return 0


def transfer(args: argparse.Namespace) -> int:
    from ..analyses.transfer import run_transfer, transfer_summary

    source, target = load_study(args.source), load_study(args.target)
    table = run_transfer(source, target, Cache(args.cache), k=args.k, groups=args.groups)
    summary = transfer_summary(table).set_index(["model", "k", "groups"])
    print(f"Probes of {source.name} applied to {target.name} without retraining (Table 7), mean over seeds, %")
    print((100 * summary).round(2).reset_index().to_string(index=False))
    return 0


def significance(args: argparse.Namespace) -> int:
    from ..analyses.significance import significance_summary, significance_table

    study, cache = load_study(args.study), Cache(args.cache)
    models = [m for m in args.models.split(",") if m] or None
    results = select_results(load_results(cache, study), study, k=args.k, groups=args.groups, models=models)
    with tqdm(total=len(results), desc="permutations and bootstrap") as bar:
        table = significance_table(
            study, cache, results, repeats=args.repeats, n_boot=args.bootstrap, progress=lambda: bar.update(1)
        )
    print(
        f"{args.metric}: observed vs permutation baseline ({args.repeats} shuffles), "
        f"bootstrap 95% CI ({args.bootstrap} resamples); mean over seeds, largest p over seeds"
    )
    print(significance_summary(table, args.metric).round(4).to_string(index=False))
    print("\nEach model against the next one down (Welch's t-test over seeds)")
    print(compare_models(results, metric=args.metric).round(4).to_string(index=False))
    return 0
