"""What the verbs print or write: the ranking as a table, CSV, JSON or LaTeX, and percent-style tables."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from ..errors import InputError
from ..results import METRIC_COLUMNS, latex_table, measure_warnings, ranking

PER_SEED_COLUMNS = ["model", "k", "seed", "groups", *METRIC_COLUMNS, "probe"]
PERCENT_METRICS = ("nmi", "ami", "top1", "map")
ARTEFACT_COLUMNS = ["clustering", "split", "probe", "settings"]


def print_ranking(
    results: pd.DataFrame, *, rows: str | None = None, format: str = "table", output: Path | None = None
) -> None:
    """Mean ± std over seeds, or one row per seed (default: mean for a table or LaTeX, seeds for csv and json)."""
    per_seed = (rows or ("mean" if format in ("table", "latex") else "seeds")) == "seeds"
    if per_seed and format == "latex":
        raise InputError(
            "--format latex shows mean ± std over seeds, not one row per seed",
            fix="drop --rows seeds, or use --format csv for one row per seed",
        )
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
    for line in measure_warnings(results):
        print(f"warning: {line}", file=sys.stderr)


def _pretty(table: pd.DataFrame) -> str:
    """Percent-style mean ± std like the paper's Table 2 (MI in bits)."""
    out = table[["model", "k", "groups"]].copy()
    for metric in PERCENT_METRICS:
        out[metric] = [
            f"{100 * m:6.2f} ± {100 * s:4.2f}"
            for m, s in zip(table[f"{metric}_mean"], table[f"{metric}_std"].fillna(0))
        ]
    out["mi_bits"] = [f"{m:5.2f} ± {s:4.2f}" for m, s in zip(table["mi_bits_mean"], table["mi_bits_std"].fillna(0))]
    out["seeds"] = table["n_seeds"]
    if (table["empty_clusters"] > 0).any():  # a flag on the rows whose clusterings left clusters empty
        out["empty clusters"] = [f"{n} of {k}" if n else "" for n, k in zip(table["empty_clusters"], table["k"])]
    return out.to_string(index=False)


def _pretty_seeds(table: pd.DataFrame) -> str:
    """One row per seed, in the percent style of ``_pretty`` (mi_norm in percent too, MI in bits)."""
    out = table[PER_SEED_COLUMNS].copy()
    for metric in (*PERCENT_METRICS, "mi_norm"):
        out[metric] = [f"{100 * v:6.2f}" for v in table[metric]]
    out["mi_bits"] = [f"{v:5.2f}" for v in table["mi_bits"]]
    return out.to_string(index=False)


def percent(table: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """``table`` with the given fraction columns in percent, two decimals."""
    out = table.copy()
    for c in columns:
        out[c] = (100 * out[c]).round(2)
    return out


def write_output(path: Path, write: Callable[[Path], None]) -> None:
    """``write(path)`` after creating its folder; a path that cannot be written is an input error."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write(path)
    except OSError as exc:
        raise InputError(
            f"cannot write here ({exc.strerror or exc})",
            where=path,
            fix="choose an --output path in a folder you can write to",
        ) from None
