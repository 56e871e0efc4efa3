"""Expert groups (paper Fig. 4 and Table 3): what each concept group adds to the probe."""

import streamlit as st

from pages._shared import command_hint, csv_download, require_selection, set_selection, show_page
from qrp_core import figures

PLOT = {"toImageButtonOptions": {"format": "svg"}}


def draw() -> None:
    sel = require_selection()
    st.title("Expert groups")
    cumulative = sel.table("ablation-cumulative")
    if cumulative is None:
        command_hint(
            "No ablation in the cache for this study.", f"python -m qrp_core ablation {sel.study.path} --k {sel.k}"
        )
        st.stop()
    part = cumulative[cumulative["model"].isin(sel.models) & (cumulative["k"] == sel.k)]
    if sel.seed is not None:
        part = part[part["seed"] == sel.seed]
    if part.empty:
        st.info(f"The ablation has no rows for these models at K={sel.k}.")
        computed = sorted(int(k) for k in cumulative.loc[cumulative["model"].isin(sel.models), "k"].unique())
        if computed:
            st.caption("Computed at:")
            for column, k in zip(st.columns(min(6, len(computed))), computed):
                column.button(f"K={k}", key=f"ablation_k_{k}", on_click=set_selection, kwargs={"k": k})
        order = cumulative[cumulative["variant"] == "without base"].sort_values("step")["added"].unique()
        command_hint(
            "To compute it at this K, in the same group order:",
            f"python -m qrp_core ablation {sel.study.path} --k {sel.k} --models {','.join(sel.models)} "
            f"--order {','.join(order)}",
            quiet=True,
        )
        st.stop()

    n_seeds = part["seed"].nunique()
    st.caption(
        f"K={sel.k} · "
        + (f"NMI mean ± std over {n_seeds} seeds" if n_seeds > 1 else f"seed {part['seed'].iloc[0]} only")
        + " · the group sets are the ablation run's, not the sidebar's 'Probe on groups'."
    )
    st.subheader("Cumulative (Fig. 4)")
    st.caption(
        f"Each bar: a probe on the group named and all groups before it, with {sel.study.base_group} first "
        f"(top) or without it (bottom)."
    )
    figure, summary = figures.cumulative_bars(part, sel.study.base_group)
    st.plotly_chart(figure, config=PLOT, key="cumulative_chart")
    csv_download(summary, f"{sel.study_name}-ablation-cumulative.csv", "cumulative_csv")

    gain = sel.table("ablation-gain")
    st.subheader(f"Gain over {sel.study.base_group} alone (Table 3)")
    if gain is None or gain.empty:
        st.caption("Needs a base group (ground-truth labels) in the study.")
        st.stop()
    gain = gain[gain["model"].isin(sel.models) & (gain["k"] == sel.k)]
    if sel.seed is not None:
        gain = gain[gain["seed"] == sel.seed]
    heat, table = figures.gain_heatmap(gain, sel.study.base_group)
    st.plotly_chart(heat, config=PLOT, key="gain_heatmap")
    st.caption(
        "A group whose concepts say nothing about the clusters can lower the scores: the probe fits "
        "their noise in the training images, and NMI drops when hard predictions spread over more clusters. "
        "Weigh a small negative Δ against the seeds' spread (Ranking, ± std) before reading it as a property "
        "of the representation."
    )
    st.dataframe(
        table,
        hide_index=True,
        width="stretch",
        key="gain_table",
        column_config={c: st.column_config.NumberColumn(format="%.2f") for c in table.columns if c != "model"},
    )
    csv_download(table, f"{sel.study_name}-ablation-gain.csv", "gain_csv")


show_page(draw)
