"""Expert groups (paper Fig. 4 and Table 3): what each concept group adds to the probe."""

import plotly.express as px
import streamlit as st

from pages._shared import command_hint, csv_download, require_selection, set_selection, show_page
from qrp_core.analyses.ablation import cumulative_summary, gain_summary

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
    summary = cumulative_summary(part).drop(columns="k").sort_values(["variant", "step"])
    summary[["mean", "std"]] *= 100
    summary["variant"] = (
        summary["variant"]
        .map({"with base": f"with {sel.study.base_group}", "without base": f"without {sel.study.base_group}"})
        .fillna(summary["variant"])
    )
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
    st.plotly_chart(heat, config=PLOT, key="gain_heatmap")
    st.caption(
        "A group whose concepts say nothing about the clusters can lower the scores: the probe fits "
        "their noise in the training images, and NMI drops when hard predictions spread over more clusters. "
        "Weigh a small negative Δ against the seeds' spread (Ranking, ± std) before reading it as a property "
        "of the representation."
    )
    table = matrix.assign(**{f"{sel.study.base_group} alone (NMI %)": base}).reset_index()
    st.dataframe(
        table,
        hide_index=True,
        width="stretch",
        key="gain_table",
        column_config={c: st.column_config.NumberColumn(format="%.2f") for c in table.columns if c != "model"},
    )
    csv_download(table, f"{sel.study_name}-ablation-gain.csv", "gain_csv")


show_page(draw)
