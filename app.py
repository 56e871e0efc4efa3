"""qrp: browse the measures, ablations and explanations of a cache. Run: streamlit run app.py"""

import streamlit as st

from pages._shared import app_icon, app_pages

st.set_page_config(page_title="qrp · reverse probing", page_icon=app_icon(), layout="wide")
st.session_state["_entrypoint_ran"] = True  # see pages/_shared.py: ensure_entrypoint
st.navigation(app_pages()).run()  # each page draws the shared sidebar (pages/_shared.py) below the menu
