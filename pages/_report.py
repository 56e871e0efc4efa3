"""The Ranking page's report: built with a progress bar on request, kept for the session, then downloaded."""

import streamlit as st

from pages._shared import Selection, _stamp
from qrp_core.report import ANALYSES, build_report
from qrp_core.results import results_path


def report_download(sel: Selection) -> None:
    """A "Build report" button for the sidebar's study, K, models and groups; once built (or when this session
    built the same report from the same results and analyses), "Download report" saves the HTML file."""
    stamps = [_stamp(results_path(sel.cache, sel.study_name))]
    stamps += [_stamp(sel.cache.table_path(sel.study_name, name)) for name in ANALYSES]
    scope = (str(sel.cache.root), sel.study_name, sel.k, "+".join(sel.groups), sel.models, tuple(stamps))
    built = st.session_state.get("_report")
    if built is None or built[0] != scope:
        if not st.button(
            "Build report",
            key="report_build",
            help="One HTML file of this K, these models and groups (ranking, figures, confused pairs with word "
            "clouds and images, provenance) that opens offline in any browser",
        ):
            return
        bar = st.progress(0.0, text="report")
        page = build_report(
            sel.study,
            sel.cache,
            k=sel.k,
            groups="+".join(sel.groups),
            models=list(sel.models),
            progress=lambda fraction, what: bar.progress(fraction, text=what),
        )
        st.session_state["_report"] = (scope, page.encode())
        st.rerun()  # drawn again with the download in place of the build button
    st.download_button(
        "Download report",
        built[1],
        file_name=f"{sel.study_name}-report-k{sel.k}.html",
        mime="text/html",
        key="report_download",
        help=f"{len(built[1]) / 1e6:.1f} MB, self-contained: it requests nothing when opened",
    )
