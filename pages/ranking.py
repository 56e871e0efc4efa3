"""Ranking (paper Table 2, Fig. 3): mean ± std over seeds, chance levels, and the linear-probe scatter."""

import numpy as np
import plotly.express as px
import plotly.graph_objects as go
import streamlit as st

from pages._shared import command_hint, csv_download, require_selection
from qrp_core import browse
from qrp_core.analyses.significance import compare_models

METRICS = {"nmi": "NMI", "ami": "AMI", "top1": "top-1", "map": "mAP", "mi_bits": "MI (bits)"}
PLOT = {"toImageButtonOptions": {"format": "svg"}}

sel = require_selection()
st.title("Ranking")
rows = sel.rows(all_k=False)
if sel.seed is not None:
    st.caption(f"Seed {sel.seed} only: std needs several seeds (choose 'all seeds').")
groups = "+".join(sel.groups)
if rows.empty:
    command_hint(f"No results for K={sel.k} and groups {groups}.",
                 f"python -m qrp_core run {sel.study.path} --k {sel.k} --groups {groups}")
    st.stop()
st.caption(f"K={sel.k} · probe on **{groups}** · {rows['seed'].nunique()} seed(s) · mean ± std (ddof=1) over seeds")

table = browse.ranking_table(sel.cache, sel.study, rows)
shown = table[["model", "family", "architecture"]].copy()
for metric, label in METRICS.items():
    scale = 1 if metric == "mi_bits" else 100
    shown[label] = table[f"{metric}_mean"] * scale
    shown[f"{label} ±"] = table[f"{metric}_std"].fillna(0) * scale
    if f"{metric}_null_mean" in table:
        shown[f"{label} chance"] = table[f"{metric}_null_mean"] * scale
        shown[f"{label} 95% CI"] = [f"{lo * scale:.2f} – {hi * scale:.2f}"
                                    for lo, hi in zip(table[f"{metric}_ci_low"], table[f"{metric}_ci_high"])]
st.dataframe(shown, hide_index=True, width="stretch", key="ranking_table",
             column_config={c: st.column_config.NumberColumn(format="%.2f") for c in shown.columns
                            if c not in ("model", "family", "architecture") and "CI" not in c})
csv_download(table, f"{sel.study_name}-ranking-k{sel.k}.csv", "ranking_csv")

metric = st.radio("Metric", list(METRICS), format_func=METRICS.get, horizontal=True, key="ranking_metric")
scale = 1 if metric == "mi_bits" else 100
order = table.sort_values(f"{metric}_mean", ascending=False)
figure = go.Figure(go.Bar(x=order["model"], y=order[f"{metric}_mean"] * scale,
                          error_y={"type": "data", "array": order[f"{metric}_std"].fillna(0) * scale},
                          marker_color="#1f5fbf", name="mean ± std over seeds"))
if f"{metric}_null_mean" in order:
    figure.add_scatter(x=order["model"], y=order[f"{metric}_null_mean"] * scale, mode="markers",
                       marker={"symbol": "line-ew-open", "size": 28, "color": "#c62828"}, name="chance")
figure.update_layout(yaxis_title=METRICS[metric] + ("" if metric == "mi_bits" else " (%)"), height=380,
                     margin={"t": 20}, showlegend=True)
st.plotly_chart(figure, config=PLOT, key="ranking_bars")

comparison = compare_models(rows, metric=metric)
if not comparison.empty:
    st.markdown("**Neighbours in the ranking** (Welch's t-test over seeds; not distinguishable when p ≥ 0.05)")
    st.dataframe(comparison[["model", "next_model", "difference", "p_value", "distinguishable"]], hide_index=True,
                 width="stretch", key="ranking_comparison")

with_acc = table.dropna(subset=["linear_acc"]) if "linear_acc" in table else table.iloc[:0]
st.subheader("Reverse probe vs linear-probe accuracy (Fig. 3)")
if len(with_acc) >= 2:
    with_acc = with_acc.assign(linear_acc=with_acc["linear_acc"].astype(float), top1_pct=100 * with_acc["top1_mean"])
    fit = browse.linear_fit(with_acc["linear_acc"].to_numpy(), with_acc["top1_pct"].to_numpy())
    scatter = px.scatter(with_acc, x="linear_acc", y="top1_pct", text="model",
                         labels={"linear_acc": "linear classification accuracy (%)",
                                 "top1_pct": "reverse-probe top-1 (%)"})
    xs = np.linspace(with_acc["linear_acc"].min(), with_acc["linear_acc"].max(), 2)
    scatter.add_scatter(x=xs, y=fit["slope"] * xs + fit["intercept"], mode="lines", name=f"fit, r = {fit['r']:.2f}")
    scatter.update_traces(textposition="top center", selector={"mode": "markers+text"})
    st.plotly_chart(scatter, config=PLOT, key="ranking_scatter")
else:
    st.caption("Needs `linear_acc` in the study file's model metadata for at least two models.")
