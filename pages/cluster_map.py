"""Cluster map: the K centroids of one clustering in 2-D; pick any two clusters to see why they differ."""

import plotly.express as px
import streamlit as st

from pages._pair import draw_pair
from pages._shared import chosen_probe, require_selection, show_page, study
from qrp_core.analyses.cluster_map import cluster_map
from qrp_core.analyses.pairs import pair_confusion
from qrp_core.cache import Cache
from qrp_core.results import load_probe_run

PLOT = {"toImageButtonOptions": {"format": "svg"}}


@st.cache_data(show_spinner="laying out the centroids")
def map_table(root: str, name: str, stamp: float, clustering: str):
    return cluster_map(study(root, name, stamp), Cache(root), clustering)


def chosen_pair(k: int) -> tuple[int, int] | None:
    """The pair in the URL (``pair=i,j``), if it names two different clusters of this clustering."""
    try:
        i, j = (int(v) for v in st.query_params.get("pair", "").split(","))
    except ValueError:
        return None
    return (i, j) if i != j and 0 <= i < k and 0 <= j < k else None


def draw() -> None:
    sel = require_selection()
    st.title("Cluster map")
    model = st.selectbox("Model", sel.models, key="map_model")
    probe, seed = chosen_probe(sel, model)
    groups = "+".join(sel.groups)
    run = load_probe_run(sel.cache, probe)
    table = map_table(str(sel.cache.root), sel.study_name, sel.study_stamp, run.clustering)
    st.caption(
        f"**{model}**, K={sel.k}, seed {seed}: each centroid on the first two principal axes of the K centroids; "
        "size: images in the cluster; colour: the group of its most over-represented concept. Select two "
        "clusters (click one, shift-click another, or draw a box or lasso around two) to compare them."
    )
    figure = px.scatter(
        table,
        x="x",
        y="y",
        size="size",
        color="group",
        text="cluster",
        custom_data=["cluster"],
        hover_data={"cluster": True, "size": True, "top_concepts": True, "x": False, "y": False},
        labels={"x": "principal axis 1", "y": "principal axis 2", "top_concepts": "top concepts"},
    )
    figure.update_traces(textposition="middle center", textfont_size=9)
    event = st.plotly_chart(
        figure, config=PLOT, key="map_chart", on_select="rerun", selection_mode=("points", "box", "lasso")
    )
    picked = sorted({int(point["customdata"][0]) for point in event.selection.points})
    if len(picked) == 2:
        st.query_params["pair"] = f"{picked[0]},{picked[1]}"  # a link to this page shows the same pair
    elif len(picked) > 2:
        st.warning(f"{len(picked)} clusters selected: select two.")
    pair = chosen_pair(run.n_clusters)
    if pair is None:
        st.info("Select two clusters on the map to compare them.")
        return
    i, j = pair
    st.markdown(
        f"Clusters **{i}** and **{j}**: the probe on {groups} takes {100 * pair_confusion(sel.cache, probe, i, j):.1f} % "
        "of their test images for the other."
    )
    draw_pair(sel, probe, i, j, groups=groups, context=f"map-{model}-{sel.k}-{seed}-{groups}")


show_page(draw)
