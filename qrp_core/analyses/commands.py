"""What each analysis verb of ``python -m qrp_core`` prints (the parser lives in ``qrp_core.cli``)."""

from __future__ import annotations

import argparse

import pandas as pd
from tqdm.auto import tqdm

from ..cache import Cache
from ..errors import InputError
from ..pipeline import RunConfig, find_probe, load_results, parse_groups
from ..study import Study, load_study
from .ablation import gain_summary, run_ablation
from .curves import k_curve, layer_curve
from .pairs import explain_pair, run_pairs
from .significance import compare_models, significance_table
from .transfer import run_transfer


def _pct(table: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    out = table.copy()
    for c in columns:
        out[c] = (100 * out[c]).round(2)
    return out


def ablation(args: argparse.Namespace, study: Study, cache: Cache, config: RunConfig) -> None:
    order = tuple(g for g in args.order.split(",") if g) if args.order else None
    tables = run_ablation(study, config, cache, order=order)
    cumulative = tables["cumulative"].groupby(["model", "k", "variant", "step", "groups"], sort=False)["nmi"]
    summary = cumulative.agg(["mean", "std"]).reset_index()
    print("Cumulative (Fig. 4): NMI % per prefix of the group order")
    print(_pct(summary, ["mean", "std"]).to_string(index=False))
    if not tables["gain"].empty:
        print("\nPer-group gain (Table 3): base-alone NMI % and ΔNMI points per added group")
        print(gain_summary(tables["gain"]).round(2).to_string(index=False))


def pairs(args: argparse.Namespace, study: Study, cache: Cache, config: RunConfig) -> None:
    base = parse_groups(args.base, study)
    table = run_pairs(study, config, cache, base=base, added=args.added)
    for (model, k, seed), part in table.groupby(["model", "k", "seed"]):
        top = part.sort_values("drop", ascending=False).head(args.top)
        print(f"\n{model} K={k} seed={seed}: pairs whose confusion drops most when {args.added!r} joins "
              f"{'+'.join(base)}")
        print(_pct(top[["i", "j", "confusion_a", "confusion_b", "drop"]], ["confusion_a", "confusion_b", "drop"])
              .to_string(index=False))
        best = top.iloc[0]
        diff = explain_pair(study, cache, best["probe_b"], int(best["i"]), int(best["j"]), n=args.top)["difference"]
        print(f"  why {int(best['i'])} vs {int(best['j'])}: theta_i - theta_j, largest first")
        print(diff.head(args.top)[["concept", "group", "difference"]].round(3).to_string(index=False))


def explain(args: argparse.Namespace, study: Study, cache: Cache) -> None:
    probe = find_probe(cache, study, args.model, args.k, args.seed, args.groups)
    i, j = args.pair
    parts = explain_pair(study, cache, probe, i, j, n=args.top)
    print(f"theta_{i} - theta_{j} (positive: speaks for {i})")
    print(parts["difference"].head(args.top)[["concept", "group", "difference"]].round(3).to_string(index=False))
    for side, cluster in (("i", i), ("j", j)):
        print(f"\ncluster {cluster}: top coefficients")
        print(parts[f"top_{side}"].round(3).to_string(index=False))
        print(f"cluster {cluster}: over-represented concepts")
        print(parts[f"over_{side}"].round(3).to_string(index=False))
        print(f"cluster {cluster}: images nearest the centroid: {', '.join(study.image_ids[parts[f'images_{side}']])}")


def sweep_k(args: argparse.Namespace, study: Study, cache: Cache, config: RunConfig) -> None:
    from ..pipeline import Runner

    results = Runner(study, config, cache).run()
    curve = k_curve(results)
    print("Varying K (Fig. 6, 7): mean over seeds")
    print(_pct(curve[["model", "groups", "k", "nmi_mean", "ami_mean", "top1_mean"]],
               ["nmi_mean", "ami_mean", "top1_mean"]).assign(mi_bits=curve["mi_bits_mean"].round(3))
          .to_string(index=False))


def layers(args: argparse.Namespace, study: Study, cache: Cache, config: RunConfig) -> None:
    from ..pipeline import Runner

    models = [m for m, spec in study.models.items() if "layer" in spec.metadata and "network" in spec.metadata]
    if not models:
        raise InputError("no model has `network` and `layer` metadata", where=study.path,
                         fix='add network = "name" and layer = <int> to each layer\'s [models.NAME] table')
    import dataclasses

    results = Runner(study, dataclasses.replace(config, models=tuple(models)), cache).run()
    curve = layer_curve(study, results)
    print(_pct(curve[["network", "layer", "model", "k", "nmi_mean", "ami_mean", "top1_mean"]],
               ["nmi_mean", "ami_mean", "top1_mean"]).to_string(index=False))


def transfer(args: argparse.Namespace, cache: Cache) -> None:
    source, target = load_study(args.source), load_study(args.target)
    table = run_transfer(source, target, cache, k=args.k, groups=args.groups)
    summary = table.groupby(["model", "k", "groups"])[
        ["source_top1", "target_top1", "target_top5", "source_nmi", "target_nmi", "target_ami"]].mean()
    print(f"Probes of {source.name} applied to {target.name} without retraining (Table 7), mean over seeds, %")
    print((100 * summary).round(2).reset_index().to_string(index=False))


def significance(args: argparse.Namespace, study: Study, cache: Cache) -> None:
    results = load_results(cache, study)
    if args.k is not None:
        results = results[results["k"] == args.k]
    if args.groups is not None:
        results = results[results["groups"] == "+".join(parse_groups(args.groups, study))]
    if args.models:
        results = results[results["model"].isin(args.models.split(","))]
    if results.empty:
        raise InputError("no results match these filters", fix="check --k, --groups and --models")
    bar = tqdm(total=len(results), desc="permutations and bootstrap")
    table = significance_table(study, cache, results, repeats=args.repeats, n_boot=args.bootstrap,
                               progress=lambda: bar.update(1))
    bar.close()
    nmi = table[table["metric"] == args.metric].groupby(["model", "k", "groups"]).agg(
        observed=("observed", "mean"), null_mean=("null_mean", "mean"), max_p=("p_value", "max"),
        ci_low=("ci_low", "mean"), ci_high=("ci_high", "mean")).reset_index()
    print(f"{args.metric}: observed vs permutation baseline ({args.repeats} shuffles), "
          f"bootstrap 95% CI ({args.bootstrap} resamples); mean over seeds, largest p over seeds")
    print(nmi.round(4).to_string(index=False))
    print("\nEach model against the next one down (Welch's t-test over seeds)")
    print(compare_models(results, metric=args.metric).round(4).to_string(index=False))
