"""Ranking (paper Table 2, Fig. 3): mean ± std over seeds, chance levels, and the linear-probe scatter."""

import pandas as pd
import plotly.express as px
import streamlit as st

from pages._report import report_download
from pages._shared import (
    command_hint,
    csv_download,
    offer_computed_groups,
    provenance,
    require_selection,
    show_page,
    training_curve,
)
from qrp_core import browse, figures
from qrp_core.results import compare_models, latex_table, measure_warnings

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
    shown, chance = figures.ranking_columns(table, several=several)
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
        report_download(sel)
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

    metric = st.radio(
        "Metric", list(figures.METRICS), format_func=figures.METRICS.get, horizontal=True, key="ranking_metric"
    )
    scale = figures.metric_scale(metric)
    figure = figures.ranking_bars(table, metric, several=several, one_seed=rows["seed"].iloc[0])
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

    st.subheader("Reverse probe vs linear-probe accuracy (Fig. 3)")
    scatter = figures.probe_scatter(table)
    if scatter is not None:
        st.plotly_chart(scatter, config=PLOT, key="ranking_scatter")
        st.caption(
            "x: each model's `linear_acc` from the study file (its linear-classification accuracy, as "
            "reported for it); y: the reverse probe's top-1 at this K, "
            + ("mean over seeds." if several else f"seed {rows['seed'].iloc[0]}.")
        )
    else:
        st.caption("Needs `linear_acc` in the study file's model metadata for at least two of the selected models.")


show_page(draw)
