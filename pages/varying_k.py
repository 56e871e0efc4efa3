"""Varying K (paper appendix D.2, Fig. 6 and 7)."""

import plotly.express as px
import streamlit as st

from pages._shared import command_hint, csv_download, require_selection
from qrp_core.analyses.curves import k_curve

PLOT = {"toImageButtonOptions": {"format": "svg"}}

sel = require_selection()
st.title("Varying K")
rows = sel.rows(all_k=True)
curve = k_curve(rows)
if curve["k"].nunique() < 2:
    command_hint(f"The cache holds one K for these models and groups ({'+'.join(sel.groups)}); a curve needs more.",
                 f"python -m qrp_core sweep-k {sel.study.path} --k 500 1000 1500 2000 2500 3000")
    st.stop()
left, right = st.columns(2)
with left:
    st.subheader("Mutual information (Fig. 6)")
    st.plotly_chart(px.line(curve, x="k", y="mi_bits_mean", error_y="mi_bits_std", color="model", markers=True,
                            labels={"k": "K", "mi_bits_mean": "I(f_K; y) (bits)"}), config=PLOT, key="mi_curve")
with right:
    metric = st.radio("Metric (Fig. 7)", ["nmi", "ami", "top1"], horizontal=True, key="k_metric")
    shown = curve.assign(value=100 * curve[f"{metric}_mean"], err=100 * curve[f"{metric}_std"].fillna(0))
    st.plotly_chart(px.line(shown, x="k", y="value", error_y="err", color="model", markers=True,
                            labels={"k": "K", "value": f"{metric} (%)"}), config=PLOT, key="metric_curve")
csv_download(curve, f"{sel.study_name}-varying-k.csv", "k_csv")
