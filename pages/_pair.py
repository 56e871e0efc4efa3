"""The pair view that Cluster pairs and Cluster map share: why two clusters differ, and their images."""

import streamlit as st

from pages._shared import Selection, image_grid, pair_view
from qrp_core.analyses.pairs import nearest_images
from qrp_core.results import load_probe_run

PER_PAGE = 12


def draw_pair(sel: Selection, probe: str, i: int, j: int, *, groups: str, context: str) -> None:
    """θ_i − θ_j of ``probe`` as a word cloud, both clusters' images (paged) and top coefficients."""
    parts = pair_view(str(sel.cache.root), sel.study_name, sel.study_stamp, probe, i, j)
    words = parts["words"]
    st.subheader(f"Why {i} and {j} differ: θ{i} − θ{j} on {groups}")
    if parts["cloud_png"] is None:
        st.info(
            f"The probe gives clusters {i} and {j} the same coefficient for every concept they have: no concept "
            "tells them apart (a probe that kept epoch 0, the cluster frequencies alone, has no coefficients at all)."
        )
    else:
        st.image(parts["cloud_png"], width="stretch")
        st.caption(
            f"Concepts that occur in either cluster. Blue: larger for cluster {i}; red: larger for cluster {j}; "
            f"size: |difference|. Words: " + ", ".join(words["concept"].head(12))
        )
    clustering = load_probe_run(sel.cache, probe).clustering
    members = {cluster: nearest_images(sel.cache, clustering, cluster, n=None) for cluster in (i, j)}
    n_pages = max(1, -(-max(len(m) for m in members.values()) // PER_PAGE))
    page = (
        st.number_input(
            f"Image page (of {n_pages})",
            min_value=1,
            max_value=n_pages,
            value=1,
            step=1,
            key=f"pair_page-{context}-{i}-{j}",
        )
        - 1
    )
    left, right = st.columns(2)
    for column, cluster, side in ((left, i, "i"), (right, j, "j")):
        with column:
            st.markdown(f"**Cluster {cluster}** · {len(members[cluster])} images, nearest its centroid first")
            image_grid(sel.study, members[cluster][page * PER_PAGE : (page + 1) * PER_PAGE], columns=4)
            st.markdown("Top coefficients")
            st.dataframe(
                parts[f"top_{side}"].round(3), hide_index=True, width="stretch", height="content", key=f"top_{side}"
            )
