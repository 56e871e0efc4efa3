"""What the verbs of ``python -m qrp_core`` that read a study print or write: validate, ranking, export
and the analyses (the parser lives in ``qrp_core.cli``). The analyses that train or apply probes (torch,
faiss) are imported by their verbs, so that validate, ranking and export start without them."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Callable

import pandas as pd
from tqdm.auto import tqdm

from ..cache import Cache
from ..config import RunConfig
from ..errors import InputError
from ..features import standardisation_stats
from ..results import (METRIC_COLUMNS, compare_models, groups_label, latex_table, load_results, parse_groups,
                       per_image_table, ranking)
from ..study import Study, load_study
from .curves import k_curve, layer_curve
from .pairs import explain_pair, run_pairs


PER_SEED_COLUMNS = ["model", "k", "seed", "groups", *METRIC_COLUMNS, "probe"]
PERCENT_METRICS = ("nmi", "ami", "top1", "map")
ARTEFACT_COLUMNS = ["clustering", "split", "probe", "settings"]
EXPORT_SUFFIXES = (".csv", ".parquet")


def validate(study: Study) -> int:
    """Load every model as ``run`` would, finiteness included (chunked: features may be large memory maps);
    each model's problem is printed as an ``error:`` line and the others are still checked. Returns the
    number of problems."""
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
    return problems


def select_results(results: pd.DataFrame, study: Study, *, k: int | None = None, groups: str | None = None,
                   models: list[str] | None = None) -> pd.DataFrame:
    """The result rows of one K, group set (``all`` or ``a+b``) and models; none is an error that lists
    what there is."""
    chosen = results
    if k is not None:
        chosen = chosen[chosen["k"] == k]
    if groups is not None:
        chosen = chosen[chosen["groups"] == groups_label(parse_groups(groups, study))]
    if models:
        chosen = chosen[chosen["model"].isin(models)]
    if chosen.empty:
        asked = ", ".join(f"{name}={value}" for name, value in (("K", k), ("groups", groups), ("models", models))
                          if value is not None)
        there = [f"--k from {sorted(results['k'].unique().tolist())}",
                 f"--groups from {sorted(results['groups'].unique().tolist())} or all"]
        if models:
            there.append(f"--models from {sorted(results['model'].unique().tolist())}")
        raise InputError(f"no results for {asked}", where=study.path,
                         fix=f"choose {', '.join(there)}; or `run` the missing ones first")
    return chosen


def print_ranking(results: pd.DataFrame, *, rows: str | None = None, format: str = "table",
                  output: Path | None = None) -> None:
    """Mean ± std over seeds, or one row per seed (default: mean for a table or LaTeX, seeds for csv and json)."""
    per_seed = (rows or ("mean" if format in ("table", "latex") else "seeds")) == "seeds"
    if per_seed and format == "latex":
        raise InputError("--format latex shows mean ± std over seeds, not one row per seed",
                         fix="drop --rows seeds, or use --format csv for one row per seed")
    first = ["model", "k", "seed", "groups", *METRIC_COLUMNS]  # then the other recorded values, the artefact keys
    keys = [c for c in ARTEFACT_COLUMNS if c in results]
    table = results[first + sorted(set(results) - set(first) - set(keys)) + keys]
    table = table if per_seed else ranking(table)
    if format == "csv":
        text = table.to_csv(index=False)
    elif format == "json":
        text = table.to_json(orient="records", indent=2)
    elif format == "latex":
        text = latex_table(table)
    else:
        text = _pretty_seeds(table) if per_seed else _pretty(table)
    if output:
        write_output(output, lambda path: path.write_text(text))
        print(f"wrote {output}", file=sys.stderr)
    else:
        print(text)


def _pretty(table: pd.DataFrame) -> str:
    """Percent-style mean ± std like the paper's Table 2 (MI in bits)."""
    out = table[["model", "k", "groups"]].copy()
    for metric in PERCENT_METRICS:
        out[metric] = [f"{100 * m:6.2f} ± {100 * s:4.2f}" for m, s in
                       zip(table[f"{metric}_mean"], table[f"{metric}_std"].fillna(0))]
    out["mi_bits"] = [f"{m:5.2f} ± {s:4.2f}" for m, s in zip(table["mi_bits_mean"], table["mi_bits_std"].fillna(0))]
    out["seeds"] = table["n_seeds"]
    return out.to_string(index=False)


def _pretty_seeds(table: pd.DataFrame) -> str:
    """One row per seed, in the percent style of ``_pretty`` (mi_norm in percent too, MI in bits)."""
    out = table[PER_SEED_COLUMNS].copy()
    for metric in (*PERCENT_METRICS, "mi_norm"):
        out[metric] = [f"{100 * v:6.2f}" for v in table[metric]]
    out["mi_bits"] = [f"{v:5.2f}" for v in table["mi_bits"]]
    return out.to_string(index=False)


def write_output(path: Path, write: Callable[[Path], None]) -> None:
    """``write(path)`` after creating its folder; a path that cannot be written is an input error."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write(path)
    except OSError as exc:
        raise InputError(f"cannot write here ({exc.strerror or exc})", where=path,
                         fix="choose an --output path in a folder you can write to") from None


def probe_for(args: argparse.Namespace, study: Study, cache: Cache) -> str:
    """The probe key of ``--model``, ``--k``, ``--seed`` and ``--groups``; when it is missing, the ``run``
    that computes it (``--seeds S`` runs seeds 0..S-1)."""
    study.model(args.model, check_files=False)  # an unknown model is named as such, not as a missing probe
    label = groups_label(parse_groups(args.groups, study))
    results = load_results(cache, study)
    row = results[(results["model"] == args.model) & (results["k"] == args.k) & (results["seed"] == args.seed)
                  & (results["groups"] == label)]
    if row.empty:
        cache_option = f" --cache {args.cache}" if args.cache is not None else ""
        raise InputError(f"no probe for model={args.model} k={args.k} seed={args.seed} groups={label}",
                         where=study.path, fix=f"run `python -m qrp_core run {study.path}{cache_option} --models "
                         f"{args.model} --k {args.k} --seeds {args.seed + 1} --groups {label}` first")
    return str(row["probe"].iloc[0])


def export(args: argparse.Namespace, study: Study, cache: Cache) -> None:
    suffix = args.output.suffix.lower()
    if suffix not in EXPORT_SUFFIXES:
        raise InputError(f"cannot write {suffix or 'a file without a suffix'}", where=args.output,
                         fix=f"end --output with {' or '.join(EXPORT_SUFFIXES)}")
    table = per_image_table(study, cache, probe_for(args, study, cache))
    if suffix == ".parquet":
        write_output(args.output, lambda path: table.to_parquet(path, index=False))
    else:
        write_output(args.output, lambda path: table.to_csv(path, index=False))
    print(f"wrote {len(table)} rows to {args.output}", file=sys.stderr)


def _pct(table: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    out = table.copy()
    for c in columns:
        out[c] = (100 * out[c]).round(2)
    return out


def ablation(args: argparse.Namespace, study: Study, cache: Cache, config: RunConfig) -> None:
    from .ablation import gain_summary, run_ablation

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
    probe = probe_for(args, study, cache)
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
    from .transfer import run_transfer

    source, target = load_study(args.source), load_study(args.target)
    table = run_transfer(source, target, cache, k=args.k, groups=args.groups)
    summary = table.groupby(["model", "k", "groups"])[
        ["source_top1", "target_top1", "target_top5", "source_nmi", "target_nmi", "target_ami"]].mean()
    print(f"Probes of {source.name} applied to {target.name} without retraining (Table 7), mean over seeds, %")
    print((100 * summary).round(2).reset_index().to_string(index=False))


def significance(args: argparse.Namespace, study: Study, cache: Cache) -> None:
    from .significance import significance_table

    models = [m for m in args.models.split(",") if m] or None
    results = select_results(load_results(cache, study), study, k=args.k, groups=args.groups, models=models)
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
