"""Cluster browser: any cluster's images, its over-represented concepts and its probe coefficients."""

import streamlit as st

from pages._shared import chosen_probe, image_grid, require_selection, show_page
from qrp_core.analyses.pairs import nearest_images, over_represented, top_concepts
from qrp_core.results import load_probe, load_probe_run

PER_PAGE = 18


def draw() -> None:
    sel = require_selection()
    st.title("Cluster browser")
    model = st.selectbox("Model", sel.models, key="browser_model")
    probe, seed = chosen_probe(sel, model)
    run = load_probe_run(sel.cache, probe)
    clustering, k = run.clustering, run.n_clusters
    if sel.seed is None:
        st.caption(f"Cluster ids differ between clusterings: showing seed {seed} (pick a seed in the sidebar).")
    cluster = int(
        st.number_input(
            f"Cluster (0 – {k - 1}), seed {seed}", min_value=0, max_value=k - 1, value=0, key="browser_cluster"
        )
    )
    other = st.number_input(
        "Compare with cluster", min_value=0, max_value=k - 1, value=(cluster + 1) % k, key="browser_other"
    )
    if st.button(f"Compare {cluster} with {other}", key="browser_compare", disabled=other == cluster):
        st.switch_page("pages/cluster_map.py", query_params={"pair": f"{cluster},{other}", "seed": str(seed)})
    members = nearest_images(sel.cache, clustering, cluster, n=None)
    st.markdown(f"**{len(members)} images**, nearest the centroid first")
    pages = max((len(members) + PER_PAGE - 1) // PER_PAGE, 1)
    page = int(st.number_input(f"Page (of {pages})", min_value=1, max_value=pages, value=1, key="browser_page")) - 1
    image_grid(sel.study, members[page * PER_PAGE : (page + 1) * PER_PAGE], columns=6)
    left, right = st.columns(2)
    with left:
        st.markdown("**Over-represented concepts** (vs the whole collection)")
        over = over_represented(sel.study, sel.cache, clustering, cluster, n=12)
        over[["in_cluster", "overall"]] *= 100
        st.dataframe(
            over,
            hide_index=True,
            width="stretch",
            height="content",
            key="browser_over",
            column_config={
                "in_cluster": st.column_config.NumberColumn(
                    "in cluster (%)", format="%.1f", help="share of the cluster's images with the concept"
                ),
                "overall": st.column_config.NumberColumn(
                    "overall (%)", format="%.1f", help="share of all images with the concept"
                ),
                "lift": st.column_config.NumberColumn("lift (×)", format="%.2f", help="in cluster / overall"),
                "score": st.column_config.NumberColumn(format="%.3f", help="in cluster × log(lift): the ranking"),
            },
        )
    with right:
        st.markdown(f"**Probe coefficients** ({'+'.join(sel.groups)})")
        st.dataframe(
            top_concepts(load_probe(sel.cache, probe), cluster, n=12).round(3),
            hide_index=True,
            width="stretch",
            height="content",
            key="browser_coefficients",
        )


show_page(draw)
