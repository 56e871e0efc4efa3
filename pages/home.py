"""Home: what the measure is, the studies in the cache, and the demo."""

import os

import streamlit as st

from pages._shared import cache_root, concept_group_table, sidebar, studies, studies_stamp
from qrp_core.cache import Cache

selection = sidebar(stop_on_error=False)  # a study that cannot be opened is named; the page goes on
st.title("Quantized reverse probing")
st.markdown(
    "A representation is **interpretable** when the groups it forms are ones people can name. "
    "qrp clusters each model's features with K-means, labels the same images with concepts from expert "
    "models (objects, scenes, materials, textures, colours, …), and trains a linear *reverse* probe from "
    "concepts to cluster ids: the better concepts predict clusters (NMI, AMI, top-1, mAP, mutual information "
    "in bits), the more semantic the representation; the probe's coefficients say why "
    "(Laina, Asano, Vedaldi, *Measuring the Interpretability of Unsupervised Representations via Quantized "
    "Reverse Probing*, ICLR 2022)."
)
st.graphviz_chart("""
digraph {
  rankdir=LR; node [shape=box, style="rounded,filled", fillcolor="#f3f6fb", fontname="sans-serif"];
  images [label="images"]; features [label="model features\\n(standardised)"];
  clusters [label="K-means\\nclusters"]; concepts [label="expert concepts\\n(sparse, grouped)"];
  probe [label="linear reverse probe\\nconcepts → cluster"]; scores [label="NMI · AMI · top-1\\nmAP · MI bits"];
  images -> features -> clusters -> probe; images -> concepts -> probe; probe -> scores;
}
""")

root = cache_root()
table = studies(str(root), studies_stamp(root))
# a cache served read-only to colleagues (README: Showing the app) cannot be built into
writable = os.access(root if root.exists() else root.resolve().parent, os.W_OK)
read_only_help = None if writable else f"{root} is read-only to this app: build with the CLI where it is writable"
st.subheader("Studies in the cache")
if table.empty:
    st.info(f"`{root}` holds no study yet.")
else:
    st.dataframe(
        table,
        hide_index=True,
        width="stretch",
        column_config={
            "study_file_exists": st.column_config.CheckboxColumn("study file found"),
            "results": st.column_config.NumberColumn("result rows"),
            "k": "K values",
        },
    )

if selection is not None:
    st.subheader(f"Concept groups of {selection.study_name}")
    st.caption("Each expert's concepts form one group; probes and ablations choose among these groups.")
    st.dataframe(
        concept_group_table(str(root), selection.study_name, selection.study_stamp),
        hide_index=True,
        width="stretch",
        column_config={"images with any (%)": st.column_config.NumberColumn(format="%.1f")},
    )

st.subheader("The demo study")
st.markdown(
    "**Concept world**: 1,500 drawn images (one or two shapes of a colour, texture and size on a "
    "background), so every concept is known exactly. Representations: EfficientNet-Lite0's ImageNet "
    "features, the same network randomly initialised, pixels, a colour histogram, and a planted 2-D "
    "`combo-code` whose clusters are shape × colour combinations that a forward linear probe for colour "
    "misses. Building it extracts features and measures and analyses every model (about 4 minutes on 2 cores)."
)
if st.button(
    "Build the demo study",
    type="primary" if table.empty else "secondary",
    key="build_demo",
    disabled=not writable,
    help=read_only_help,
):
    from qrp_core.config import RunConfig
    from qrp_core.demos.build import build_demo  # the engine (torch, faiss) loads only to build

    bar = st.progress(0.0, text="starting")
    build_demo(
        Cache(root), RunConfig(), on_stage=lambda text, fraction: bar.progress(fraction, text=text), show_progress=False
    )
    st.cache_data.clear()
    st.session_state["_demo_built"] = True
    st.rerun()
if st.session_state.pop("_demo_built", False):
    st.success("Demo built: pick pages on the left.")

st.subheader("The SSL zoo")
st.markdown(
    "**SSL zoo**: one small network trained on other concept-world images by SimCLR (with and without colour "
    "augmentation), BYOL, SwAV, RotNet, a denoising autoencoder, shape labels, and left random, then measured on "
    "the demo's images: methods whose invariances we chose, to check that the ranking, ablations and word clouds "
    "recover them. Building it trains the eight models and measures and analyses them (about 9 minutes on 2 cores; "
    "`python -m qrp_core demo --study ssl` does the same from a terminal)."
)
if st.button("Build the SSL zoo", key="build_ssl", disabled=not writable, help=read_only_help):
    from qrp_core.config import RunConfig
    from qrp_core.demos.build import build_demo

    bar = st.progress(0.0, text="starting")
    build_demo(
        Cache(root),
        RunConfig(),
        world="ssl",
        on_stage=lambda text, fraction: bar.progress(fraction, text=text),
        show_progress=False,
    )
    st.cache_data.clear()
    st.session_state["_ssl_built"] = True
    st.rerun()
if st.session_state.pop("_ssl_built", False):
    st.success("SSL zoo built: choose study ssl in the sidebar.")
