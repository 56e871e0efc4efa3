"""Ranking (paper Table 2, Fig. 3): mean ± std over seeds, chance levels, and the linear-probe scatter."""

import numpy as np
import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
import streamlit as st

from pages._shared import (
    command_hint,
    csv_download,
    offer_computed_groups,
    provenance,
    require_selection,
    show_page,
    training_curve,
)
from qrp_core import browse
from qrp_core.results import compare_models, latex_table, measure_warnings

METRICS = {"nmi": "NMI", "ami": "AMI", "top1": "top-1", "map": "mAP", "mi_bits": "MI (bits)"}
PLOT = {"toImageButtonOptions": {"format": "svg"}}


def draw() -> None:
    sel = require_selection()
    st.title("Ranking")
    rows = sel.rows(all_k=False)
    groups = "+".join(sel.groups)
    if rows.empty:
        st.info(f"No results for K={sel.k} and groups {groups}.")
        offer_computed_groups(sel, "ranking_groups")
        command_hint(
            "To compute them:", f"python -m qrp_core run {sel.study.path} --k {sel.k} --groups {groups}", quiet=True
        )
        st.stop()
    n_seeds = rows["seed"].nunique()
    several = n_seeds > 1  # a std and a t-test need two clusterings or more
    st.caption(
        f"K={sel.k} · probe on **{groups}** · "
        + (
            f"{n_seeds} seeds · mean ± std (ddof=1) over seeds"
            if several
            else f"seed {rows['seed'].iloc[0]} only: no std or significance (choose 'all seeds' where several ran)"
        )
        + (f" · {rows['n_test'].mean() / sel.k:.1f} test images per cluster" if "n_test" in rows else "")
    )
    for line in measure_warnings(rows):
        st.warning(line)

    table = browse.ranking_table(sel.cache, sel.study, rows)
    shown = table[["model", "family"]].copy()  # the CSV has the architecture too
    if (table["empty_clusters"] > 0).any():
        shown["empty clusters"] = table["empty_clusters"]
    chance = table[["model"]].copy()
    for metric, label in METRICS.items():
        scale = 1 if metric == "mi_bits" else 100
        shown[label] = table[f"{metric}_mean"] * scale
        if several:
            shown[f"{label} ±"] = table[f"{metric}_std"] * scale
        if f"{metric}_null_mean" in table:
            chance[f"{label} chance"] = table[f"{metric}_null_mean"] * scale
            chance[f"{label} 95% CI"] = [
                f"{lo * scale:.2f} – {hi * scale:.2f}"
                for lo, hi in zip(table[f"{metric}_ci_low"], table[f"{metric}_ci_high"])
            ]
    numbers = {
        c: st.column_config.NumberColumn(format="%.2f", width="small" if c.endswith("±") else None)
        for c in [*shown.columns, *chance.columns]
        if c not in ("model", "family", "empty clusters") and "CI" not in c
    }
    st.dataframe(shown, hide_index=True, width="stretch", key="ranking_table", column_config=numbers)
    with st.container(horizontal=True):
        csv_download(table, f"{sel.study_name}-ranking-k{sel.k}.csv", "ranking_csv")
        st.download_button(
            "Download LaTeX",
            latex_table(table).encode(),
            mime="text/x-tex",
            file_name=f"{sel.study_name}-ranking-k{sel.k}.tex",
            key="ranking_latex",
            help="booktabs table: mean ± std in %, MI in bits, best in bold",
        )
    if len(chance.columns) > 1:
        with st.expander("Chance levels and 95% confidence intervals"):
            st.dataframe(chance, hide_index=True, width="stretch", key="ranking_chance", column_config=numbers)
            st.caption(
                "Chance: the same probe on concepts shuffled across images. 95% CI: bootstrap over the "
                "test images. MI's chance level can be below 0: the estimate H(clusters) − test "
                "cross-entropy is a lower bound, and a probe on shuffled concepts predicts test images "
                "worse than the cluster frequencies alone."
            )

    with st.expander("How these numbers were made"):
        made = provenance(str(sel.cache.root), rows[["model", "k", "seed", "clustering", "split", "probe"]])
        st.dataframe(made, hide_index=True, width="stretch", key="ranking_provenance")
        st.caption(
            f"Read from each row's manifests in `{sel.cache.root}`: `clusterings/`, `splits/` and "
            "`probes/<key>/manifest.json` (every parameter, input hash, iteration count and version; the "
            "CSV names the keys)."
        )
        shown_probe = st.selectbox(
            "Training curve of the probe of",
            range(len(made)),
            key="ranking_curve",
            format_func=lambda r: f"{made['model'][r]}, seed {made['seed'][r]}",
        )
        curve, best_epoch = training_curve(str(sel.cache.root), made["probe key"][shown_probe])
        curve = curve.rename(columns={"train_loss": "training", "val_loss": "validation"})
        losses = px.line(
            curve, x="epoch", y=["training", "validation"], labels={"value": "cross-entropy (nats)"}, height=280
        )
        kept = f"kept: epoch {best_epoch}" + (" (the marginal, before any step)" if best_epoch == 0 else "")
        losses.add_vline(x=best_epoch, line_dash="dot", annotation_text=kept)
        losses.update_layout(margin={"t": 20}, legend_title_text="")
        st.plotly_chart(losses, config=PLOT, key="ranking_losses")

    metric = st.radio("Metric", list(METRICS), format_func=METRICS.get, horizontal=True, key="ranking_metric")
    scale = 1 if metric == "mi_bits" else 100
    unit = " (bits)" if metric == "mi_bits" else " (%)"
    order = table.sort_values(f"{metric}_mean", ascending=False)
    figure = go.Figure(
        go.Bar(
            x=order["model"],
            y=order[f"{metric}_mean"] * scale,
            error_y={"type": "data", "array": order[f"{metric}_std"] * scale, "visible": several},
            marker_color="#1f5fbf",
            name="mean ± std over seeds" if several else f"seed {rows['seed'].iloc[0]}",
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
    figure.update_layout(
        yaxis_title=METRICS[metric].replace(" (bits)", "") + unit, height=380, margin={"t": 20}, showlegend=True
    )
    st.plotly_chart(figure, config=PLOT, key="ranking_bars")

    comparison = compare_models(rows, metric=metric) if several else None
    if comparison is not None and not comparison.empty:
        st.markdown("**Neighbours in the ranking** (Welch's t-test over seeds; not distinguishable when p ≥ 0.05)")
        difference = "difference (bits)" if metric == "mi_bits" else "difference (points)"
        neighbours = pd.DataFrame(
            {
                "model": comparison["model"],
                "next in the ranking": comparison["next_model"],
                difference: comparison["difference"] * scale,
                "p-value": comparison["p_value"],
                "distinguishable": comparison["distinguishable"],
            }
        )
        st.dataframe(
            neighbours,
            hide_index=True,
            width="stretch",
            key="ranking_comparison",
            column_config={
                "p-value": st.column_config.NumberColumn(format="%.2g"),
                difference: st.column_config.NumberColumn(format="%.2f"),
            },
        )

    with_acc = table.dropna(subset=["linear_acc"]) if "linear_acc" in table else table.iloc[:0]
    st.subheader("Reverse probe vs linear-probe accuracy (Fig. 3)")
    if len(with_acc) >= 2:
        with_acc = with_acc.assign(
            linear_acc=with_acc["linear_acc"].astype(float), top1_pct=100 * with_acc["top1_mean"]
        )
        fit = browse.linear_fit(with_acc["linear_acc"].to_numpy(), with_acc["top1_pct"].to_numpy())
        scatter = px.scatter(
            with_acc,
            x="linear_acc",
            y="top1_pct",
            text="model",
            labels={"linear_acc": "linear classification accuracy (%)", "top1_pct": "reverse-probe top-1 (%)"},
        )
        if len(with_acc) >= 3:  # through two points any line fits with r = ±1
            xs = np.linspace(with_acc["linear_acc"].min(), with_acc["linear_acc"].max(), 2)
            scatter.add_scatter(
                x=xs,
                y=fit["slope"] * xs + fit["intercept"],
                mode="lines",
                name=f"least-squares fit, r = {fit['r']:.2f} ({len(with_acc)} models)",
            )
        # a label goes above its point unless the nearest point along x is higher: close pairs label apart
        x, y = with_acc["linear_acc"].to_numpy(), with_acc["top1_pct"].to_numpy()
        gaps = np.abs(x[:, None] - x[None, :]) + np.diag(np.full(len(x), np.inf))
        nearest = gaps.argmin(1)
        scatter.update_traces(
            textposition=["top center" if y[i] >= y[nearest[i]] else "bottom center" for i in range(len(x))],
            selector={"mode": "markers+text"},
        )
        st.plotly_chart(scatter, config=PLOT, key="ranking_scatter")
        st.caption(
            "x: each model's `linear_acc` from the study file (its linear-classification accuracy, as "
            "reported for it); y: the reverse probe's top-1 at this K, "
            + ("mean over seeds." if several else f"seed {rows['seed'].iloc[0]}.")
        )
    else:
        st.caption("Needs `linear_acc` in the study file's model metadata for at least two of the selected models.")


show_page(draw)
