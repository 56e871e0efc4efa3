"""Expert-group ablations (paper section 4.3): cumulative prefixes (Fig. 4) and per-group gains (Table 3).

Only probes are retrained; the clusterings of the main run are reused from the cache.
"""

from __future__ import annotations

import dataclasses

import pandas as pd

from ..cache import Cache
from ..config import RunConfig
from ..errors import InputError
from ..results import METRIC_COLUMNS, groups_label
from ..study import Study

PAPER_ORDER = ("objects", "scene", "material", "texture", "other")  # after the base group, Fig. 4


def group_order(study: Study, order: tuple[str, ...] | None = None) -> tuple[str, ...]:
    """Non-base groups in the configured order; groups the order does not name follow, alphabetically."""
    present = [g for g in study.concepts.group_names if g != study.base_group]
    order = PAPER_ORDER if order is None else order
    for g in order:
        if g not in present and g != study.base_group and order is not PAPER_ORDER:
            raise InputError(
                f"group {g!r} is not in the study", where=study.path, fix=f"order the study's groups: {present}"
            )
    named = [g for g in order if g in present]
    return tuple(named + sorted(g for g in present if g not in named))


def cumulative_sets(study: Study, order: tuple[str, ...]) -> list[tuple[str, tuple[str, ...]]]:
    """(variant, groups) for each prefix of ``order``, with the base group first and without it."""
    base = study.base_group if study.base_group in study.concepts.group_names else None
    sets = []
    if base:
        sets += [("with base", (base, *order[:i])) for i in range(len(order) + 1)]
    sets += [("without base", order[:i]) for i in range(1, len(order) + 1)]
    return sets


def gain_sets(study: Study, order: tuple[str, ...]) -> list[tuple[str, ...]]:
    base = study.base_group
    if base not in study.concepts.group_names:
        raise InputError(
            f"the study has no base group {base!r}",
            where=study.path,
            fix="add a `label` column to the image table or set `base_group`",
        )
    return [(base,)] + [(base, g) for g in order]


def run_ablation(
    study: Study, config: RunConfig, cache: Cache, *, order: tuple[str, ...] | None = None, show_progress: bool = True
) -> dict[str, pd.DataFrame]:
    """Train the ablation probes (cached) and return the ``cumulative`` and ``gain`` tables.

    cumulative: one row per model, K, seed, variant and prefix step, with every metric.
    gain: one row per model, K, seed and added group: each metric's change against the base alone.
    """
    from ..pipeline import Runner  # torch and faiss load here, not when the app reads ablations

    order = group_order(study, order)
    cumulative = cumulative_sets(study, order)
    has_base = study.base_group in study.concepts.group_names
    gains = gain_sets(study, order) if has_base else []
    all_sets = tuple(dict.fromkeys([groups for _, groups in cumulative] + gains))
    results = Runner(study, dataclasses.replace(config, group_sets=all_sets), cache, show_progress=show_progress).run()
    rows = []
    for variant, groups in cumulative:
        part = results[results["groups"] == groups_label(study.concepts.canonical(groups))]
        step = len(groups) - 1 if variant == "with base" else len(groups)
        rows.append(part.assign(variant=variant, step=step, added=groups[-1]))
    cumulative_table = pd.concat(rows, ignore_index=True)

    gain_rows = []
    if has_base:
        base = results[results["groups"] == study.base_group].set_index(["model", "k", "seed"])
        for groups in gains[1:]:
            part = results[results["groups"] == groups_label(study.concepts.canonical(groups))].set_index(
                ["model", "k", "seed"]
            )
            delta = part[METRIC_COLUMNS] - base[METRIC_COLUMNS]
            delta.columns = [f"delta_{c}" for c in METRIC_COLUMNS]
            gain_rows.append(
                delta.assign(
                    added=groups[-1], base_nmi=base["nmi"], probe=part["probe"], base_probe=base["probe"]
                ).reset_index()
            )
    gain_table = pd.concat(gain_rows, ignore_index=True) if gain_rows else pd.DataFrame()
    params = {"order": list(order), "ks": list(config.ks), "seeds": list(config.seeds)}
    cache.write_table(study.name, "ablation-cumulative", cumulative_table, params, keys=["model", "k", "seed"])
    if has_base:
        cache.write_table(study.name, "ablation-gain", gain_table, params, keys=["model", "k", "seed"])
    return {"cumulative": cumulative_table, "gain": gain_table}


def cumulative_summary(cumulative: pd.DataFrame) -> pd.DataFrame:
    """Fig. 4: NMI mean and std (ddof=1) over seeds per model, K and prefix, in the group order."""
    keys = ["model", "k", "variant", "step", "added", "groups"]
    return cumulative.groupby(keys, sort=False)["nmi"].agg(["mean", "std"]).reset_index()


def gain_summary(gain: pd.DataFrame) -> pd.DataFrame:
    """Table 3: mean ΔNMI (in points) per model and added group, base-alone NMI first."""
    mean = gain.groupby(["model", "k", "added"])["delta_nmi"].mean().unstack("added") * 100
    base = gain.groupby(["model", "k"])["base_nmi"].mean() * 100
    return mean.assign(base_nmi=base).reset_index()
