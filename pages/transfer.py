"""Transfer (paper Tables 4 and 7): probes applied to another collection without retraining."""

import streamlit as st

from pages._shared import command_hint, csv_download, offer_computed_groups, require_selection, show_page
from qrp_core.results import result_rows


def draw() -> None:
    sel = require_selection()
    st.title("Transfer")
    names = sel.cache.table_names(sel.study_name, "transfer-")
    if not names:
        command_hint(
            "No transfer in the cache for this study. Table 4 style is a `run` on the other collection's "
            "study; Table 7 style applies this study's probes to it:",
            f"python -m qrp_core transfer {sel.study.path} OTHER/study.toml --k {sel.k}",
        )
        st.stop()
    name = st.selectbox(
        "Target collection", names, format_func=lambda n: n.removeprefix("transfer-"), key="transfer_target"
    )
    transferred = sel.table(name)
    groups = "+".join(sel.groups)
    table = result_rows(transferred, models=sel.models, k=sel.k, groups=groups)
    if table.empty:
        st.info(
            f"No transferred probes for these models at K={sel.k} on {groups}. By default only the probe on every "
            f"group but {sel.study.base_group} transfers, as in the paper: a probe that reads ground-truth labels "
            "would read the target's own labels."
        )
        offer_computed_groups(sel, "transfer_groups", transferred, what="Probes transferred")
        command_hint(
            "To transfer the probe on the groups selected:",
            f"python -m qrp_core transfer {sel.study.path} OTHER/study.toml --k {sel.k} --groups {groups}",
            quiet=True,
        )
        st.stop()
    labels = {
        "source_top1": "top-1, source",
        "target_top1": "top-1, target",
        "target_top5": "top-5, target",
        "source_nmi": "NMI, source",
        "target_nmi": "NMI, target",
        "target_ami": "AMI, target",
    }
    grouped = table.groupby("model")[list(labels)]
    means, stds = grouped.mean() * 100, grouped.std() * 100
    several = table["seed"].nunique() > 1
    shown = means.index.to_frame(index=False)
    for column, label in labels.items():  # one "mean ± std" cell per metric; the CSV has the numbers
        shown[label] = [f"{m:.2f} ± {s:.2f}" if several else f"{m:.2f}" for m, s in zip(means[column], stds[column])]
    st.caption(
        f"K={sel.k} · probe on **{groups}** · in % · "
        + ("mean ± std over seeds" if several else "one seed")
        + ". Source: this study's own test split. Target: every image of the other collection, assigned to "
        "this study's centroids and predicted from its concepts by this study's probe."
    )
    st.dataframe(shown, hide_index=True, width="stretch", key="transfer_table")
    csv_download(table, f"{sel.study_name}-{name}.csv", "transfer_csv")


show_page(draw)
