"""Transfer (paper Tables 4 and 7): probes applied to another collection without retraining."""

import streamlit as st

from pages._shared import command_hint, csv_download, require_selection

sel = require_selection()
st.title("Transfer")
folder = sel.cache.root / "analyses" / sel.study_name
names = sorted(p.stem for p in folder.glob("transfer-*.parquet")) if folder.is_dir() else []
if not names:
    command_hint("No transfer in the cache for this study. Table 4 style is a `run` on the other collection's "
                 "study; Table 7 style applies this study's probes to it:",
                 f"python -m qrp_core transfer {sel.study.path} OTHER/study.toml --k {sel.k}")
    st.stop()
name = st.selectbox("Target collection", names, format_func=lambda n: n.removeprefix("transfer-"),
                    key="transfer_target")
table = sel.table(name)
groups = "+".join(sel.groups)
table = table[table["model"].isin(sel.models) & (table["k"] == sel.k) & (table["groups"] == groups)]
if table.empty:
    command_hint(f"No transferred probes for these models at K={sel.k} on {groups}.",
                 f"python -m qrp_core transfer {sel.study.path} OTHER/study.toml --k {sel.k} --groups {groups}")
    st.stop()
columns = ["source_top1", "target_top1", "target_top5", "source_nmi", "target_nmi", "target_ami"]
summary = (table.groupby(["model", "groups"])[columns].agg(["mean", "std"]) * 100).round(2)
summary.columns = [f"{c} {s}" for c, s in summary.columns]
st.caption("Source: this study's own test split. Target: every image of the other collection, assigned to this "
           "study's centroids and predicted from its concepts by this study's probe (%, mean and std over seeds).")
st.dataframe(summary.reset_index(), hide_index=True, width="stretch", key="transfer_table")
csv_download(table, f"{sel.study_name}-{name}.csv", "transfer_csv")
