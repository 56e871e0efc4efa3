"""The plotly figures of the paper's tables and plots, drawn from engine tables: the app's pages and the
HTML report draw the same figure from the same numbers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.express as px
import plotly.graph_objects as go

from .analyses.ablation import cumulative_summary, gain_summary
from .browse import linear_fit

METRICS = {"nmi": "NMI", "ami": "AMI", "top1": "top-1", "map": "mAP", "mi_bits": "MI (bits)"}
CURVE_METRICS = {"nmi": "NMI", "ami": "AMI", "top1": "top-1"}


def metric_scale(metric: str) -> int:
    """Scores print in percent as in the paper, mutual information in bits."""
    return 1 if metric == "mi_bits" else 100


def ranking_columns(table: pd.DataFrame, *, several: bool) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``browse.ranking_table`` as shown: each metric's mean (and ± std where ``several`` seeds ran) in
    percent or bits; and the chance levels with their 95% intervals where the significance analysis ran."""
    shown = table[["model", "family"]].copy()  # the CSV has the architecture too
    if (table["empty_clusters"] > 0).any():
        shown["empty clusters"] = table["empty_clusters"]
    chance = table[["model"]].copy()
    for metric, label in METRICS.items():
        scale = metric_scale(metric)
        shown[label] = table[f"{metric}_mean"] * scale
        if several:
            shown[f"{label} ±"] = table[f"{metric}_std"] * scale
        if f"{metric}_null_mean" in table:
            chance[f"{label} chance"] = table[f"{metric}_null_mean"] * scale
            chance[f"{label} 95% CI"] = [
                f"{lo * scale:.2f} – {hi * scale:.2f}"
                for lo, hi in zip(table[f"{metric}_ci_low"], table[f"{metric}_ci_high"])
            ]
    return shown, chance


def ranking_bars(table: pd.DataFrame, metric: str, *, several: bool, one_seed: int | None = None) -> go.Figure:
    """One bar per model of ``browse.ranking_table``'s mean (± std where ``several`` seeds ran), best first,
    and the chance level of shuffled concepts where the significance analysis ran."""
    scale = metric_scale(metric)
    order = table.sort_values(f"{metric}_mean", ascending=False)
    figure = go.Figure(
        go.Bar(
            x=order["model"],
            y=order[f"{metric}_mean"] * scale,
            error_y={"type": "data", "array": order[f"{metric}_std"] * scale, "visible": several},
            marker_color="#1f5fbf",
            name="mean ± std over seeds" if several else f"seed {one_seed}",
        )
    )
    if f"{metric}_null_mean" in order:
        figure.add_scatter(
            x=order["model"],
            y=order[f"{metric}_null_mean"] * scale,
            mode="markers",
            marker={"symbol": "line-ew-open", "size": 36, "color": "#c62828", "line": {"width": 4}},
            name="chance (shuffled concepts)",
        )
    unit = " (bits)" if metric == "mi_bits" else " (%)"
    figure.update_layout(
        yaxis_title=METRICS[metric].replace(" (bits)", "") + unit, height=380, margin={"t": 20}, showlegend=True
    )
    return figure


def probe_scatter(table: pd.DataFrame) -> go.Figure | None:
    """Fig. 3: reverse-probe top-1 against each model's ``linear_acc``, with the least-squares line from three
    models on (through two points any line fits with r = ±1); None with fewer than two such models."""
    with_acc = table.dropna(subset=["linear_acc"]) if "linear_acc" in table else table.iloc[:0]
    if len(with_acc) < 2:
        return None
    with_acc = with_acc.assign(linear_acc=with_acc["linear_acc"].astype(float), top1_pct=100 * with_acc["top1_mean"])
    scatter = px.scatter(
        with_acc,
        x="linear_acc",
        y="top1_pct",
        text="model",
        labels={"linear_acc": "linear classification accuracy (%)", "top1_pct": "reverse-probe top-1 (%)"},
    )
    x, y = with_acc["linear_acc"].to_numpy(), with_acc["top1_pct"].to_numpy()
    if len(with_acc) >= 3:
        fit = linear_fit(x, y)
        xs = np.linspace(x.min(), x.max(), 2)
        scatter.add_scatter(
            x=xs,
            y=fit["slope"] * xs + fit["intercept"],
            mode="lines",
            name=f"least-squares fit, r = {fit['r']:.2f} ({len(with_acc)} models)",
        )
    # a label goes above its point unless the nearest point along x is higher: close pairs label apart
    gaps = np.abs(x[:, None] - x[None, :]) + np.diag(np.full(len(x), np.inf))
    nearest = gaps.argmin(1)
    scatter.update_traces(
        textposition=["top center" if y[i] >= y[nearest[i]] else "bottom center" for i in range(len(x))],
        selector={"mode": "markers+text"},
    )
    return scatter


def cumulative_bars(cumulative: pd.DataFrame, base_group: str) -> tuple[go.Figure, pd.DataFrame]:
    """Fig. 4 from the ablation's cumulative rows of one K: NMI (%) of each prefix of the group order, with
    the base group first (top) or without it (bottom); and the plotted table."""
    summary = cumulative_summary(cumulative).drop(columns="k").sort_values(["variant", "step"])
    summary[["mean", "std"]] *= 100
    names = {"with base": f"with {base_group}", "without base": f"without {base_group}"}
    summary["variant"] = summary["variant"].map(names).fillna(summary["variant"])
    # models as in the Ranking: best NMI of any probe here first
    model_order = list(summary.groupby("model")["mean"].max().sort_values(ascending=False).index)
    figure = px.bar(
        summary,
        x="model",
        y="mean",
        error_y="std",
        color="added",
        barmode="group",
        facet_row="variant",
        category_orders={"added": list(dict.fromkeys(summary["added"])), "model": model_order},
        hover_data=["groups"],
        labels={"mean": "NMI (%)", "added": "last group added"},
        height=520,
    )
    figure.for_each_annotation(lambda a: a.update(text=a.text.split("=")[-1]))  # "variant=with labels" -> "with labels"
    return figure, summary


def gain_heatmap(gain: pd.DataFrame, base_group: str) -> tuple[go.Figure, pd.DataFrame]:
    """Table 3 from the ablation's gain rows of one K: ΔNMI (points) per model and added group as a heatmap,
    and the table with the base group's NMI alone."""
    table = gain_summary(gain).drop(columns="k").set_index("model")
    matrix, base = table.drop(columns="base_nmi"), table["base_nmi"]
    heat = px.imshow(
        matrix,
        text_auto=".2f",
        color_continuous_scale="RdBu",
        color_continuous_midpoint=0,
        labels={"x": "added group", "y": "model", "color": "ΔNMI (points)"},
        aspect="auto",
    )
    table = matrix.assign(**{f"{base_group} alone (NMI %)": base}).reset_index()
    return heat, table.rename_axis(columns=None)


def _against_k(frame: pd.DataFrame, y: str, error: str, label: str) -> go.Figure:
    return px.line(
        frame,
        x="k",
        y=y,
        error_y=error,
        color="model",
        markers=True,
        color_discrete_sequence=px.colors.qualitative.Set1,
        labels={"k": "K", y: label},
    )


def k_curves(curve: pd.DataFrame, metric: str) -> tuple[go.Figure, go.Figure]:
    """Fig. 6 (mutual information against K) and Fig. 7 (``metric`` against K) from ``analyses.curves.k_curve``."""
    mutual = _against_k(curve, "mi_bits_mean", "mi_bits_std", "MI I(f_K; y) (bits)")
    shown = curve.assign(value=100 * curve[f"{metric}_mean"], err=100 * curve[f"{metric}_std"])
    return mutual, _against_k(shown, "value", "err", f"{CURVE_METRICS[metric]} (%)")
