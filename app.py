"""qrp: browse the measures, ablations and explanations of a cache. Run: streamlit run app.py"""

import streamlit as st

st.set_page_config(page_title="qrp · reverse probing", page_icon=":material/search:", layout="wide")

navigation = st.navigation({
    "Overview": [st.Page("pages/home.py", title="Home", icon=":material/home:", default=True)],
    "Measure": [st.Page("pages/ranking.py", title="Ranking", icon=":material/leaderboard:"),
                st.Page("pages/expert_groups.py", title="Expert groups", icon=":material/extension:"),
                st.Page("pages/varying_k.py", title="Varying K", icon=":material/show_chart:"),
                st.Page("pages/transfer.py", title="Transfer", icon=":material/swap_horiz:")],
    "Explain": [st.Page("pages/cluster_pairs.py", title="Cluster pairs", icon=":material/compare_arrows:"),
                st.Page("pages/cluster_browser.py", title="Cluster browser", icon=":material/grid_view:")],
})
navigation.run()  # each page draws the shared sidebar (pages/_shared.py) before its content
