"""Varying K (paper appendix D.2, Fig. 6 and 7)."""

import streamlit as st

from pages._shared import command_hint, csv_download, require_selection, show_page
from qrp_core import figures
from qrp_core.analyses.curves import k_curve

PLOT = {"toImageButtonOptions": {"format": "svg"}}


def draw() -> None:
    sel = require_selection()
    st.title("Varying K")
    rows = sel.rows(all_k=True)
    curve = k_curve(rows)
    if curve["k"].nunique() < 2:
        n = sel.study.n_images  # the paper sweeps 500-3000 on ImageNet; a small study needs K of its own size
        ks = (
            [500, 1000, 1500, 2000, 2500, 3000]
            if n >= 300_000
            else sorted({max(2, round(n / d)) for d in (150, 100, 50, 25)})
        )
        command_hint(
            f"The cache holds one K for these models and groups ({'+'.join(sel.groups)}); a curve needs more.",
            f"python -m qrp_core sweep-k {sel.study.path} --k {' '.join(map(str, ks))}",
        )
        st.stop()
    n_seeds = rows.groupby(["model", "k"])["seed"].nunique().min()
    st.caption(
        f"Probe on **{'+'.join(sel.groups)}** · every K in the cache (the sidebar's K is not used here) · "
        + (f"mean ± std over {n_seeds} seeds" if n_seeds > 1 else "one seed per K: no error bars")
    )
    metric = st.radio(
        "Metric (Fig. 7)",
        list(figures.CURVE_METRICS),
        format_func=figures.CURVE_METRICS.get,
        horizontal=True,
        key="k_metric",
    )
    mutual, scores = figures.k_curves(curve, metric)
    left, right = st.columns(2)
    with left:
        st.subheader("Mutual information (Fig. 6)")
        st.plotly_chart(mutual, config=PLOT, key="mi_curve")
    with right:
        st.subheader(f"{figures.CURVE_METRICS[metric]} (Fig. 7)")
        st.plotly_chart(scores, config=PLOT, key="metric_curve")
    csv_download(curve, f"{sel.study_name}-varying-k.csv", "k_csv")


show_page(draw)
