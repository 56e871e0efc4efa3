"""Cluster pairs (paper Fig. 5, 8-11): pairs a group disambiguates, and why."""

import streamlit as st

from pages._pair import draw_pair
from pages._shared import command_hint, csv_download, require_selection, set_selection, show_page
from qrp_core.analyses.pairs import TOP_PAIRS, most_informative_comparison


def draw() -> None:
    sel = require_selection(added_group=True)
    st.title("Cluster pairs")
    pairs = sel.table("pairs")
    base, added = "+".join(sel.study.concepts.canonical(sel.base)), sel.added

    def use_comparison(base_groups: str, group: str) -> None:
        set_selection(base=base_groups.split("+"), added=group)

    available = pairs[["base", "added"]].drop_duplicates().itertuples(index=False) if pairs is not None else []
    available = list(available)
    if pairs is not None and added is None and "_pairs_opened" not in st.session_state:
        # first visit: open on the computed comparison with the largest drops (the engine's choice)
        opened = st.session_state["_pairs_opened"] = most_informative_comparison(pairs, sel.k)
        if opened is not None:
            set_selection(base=opened[0].split("+"), added=opened[1])
            st.rerun()
    if pairs is None or added is None or (base, added) not in [(a.base, a.added) for a in available]:
        st.info(
            "Choose probe groups and an added group in the sidebar for which pairs were computed"
            + (", or pick one of these:" if available else ".")
        )
        for a in available:
            st.button(
                f"{a.base}  →  + {a.added}",
                on_click=use_comparison,
                args=(a.base, a.added),
                key=f"use_{a.base}_{a.added}",
            )
        if added is None:  # suggest a comparison that can run and is not computed yet
            groups = sel.study.concepts.group_names
            base = base if set(sel.base) != set(groups) else sel.study.base_group
            candidates = [g for g in groups if g not in base.split("+")] or ["GROUP"]
            computed = {(a.base, a.added) for a in available}
            added = next((g for g in candidates if (base, g) not in computed), candidates[0])
        command_hint(
            "Or compute another comparison:" if available else "To compute a comparison:",
            f"python -m qrp_core pairs {sel.study.path} --k {sel.k} --base {base} --added {added}",
            quiet=bool(available),
        )
        st.stop()

    opened = st.session_state.get("_pairs_opened")
    if opened is not None and opened[:2] == (base, added):
        st.caption(
            f"Opened on **{base} → + {added}**, of the comparisons computed at K={sel.k} the one whose "
            f"{TOP_PAIRS} largest confusion drops per clustering are largest ({100 * opened[2]:.1f} points on "
            "average); choose others in the sidebar."
        )
    model = st.selectbox("Model", sel.models, key="pairs_model")
    comparison = pairs[
        (pairs["model"] == model) & (pairs["k"] == sel.k) & (pairs["base"] == base) & (pairs["added"] == added)
    ]
    seeds = sorted(comparison["seed"].unique())
    if not seeds:
        command_hint(
            f"No pairs for {model} at K={sel.k}.",
            f"python -m qrp_core pairs {sel.study.path} --k {sel.k} --base {base} --added {added} --models {model}",
        )
        st.stop()
    seed = sel.seed if sel.seed in seeds else seeds[0]
    if sel.seed is None:
        st.caption(f"Cluster ids differ between clusterings: showing seed {seed} (pick a seed in the sidebar).")
    comparison = comparison[comparison["seed"] == seed].sort_values("drop", ascending=False, ignore_index=True)
    st.markdown(
        f"**{model}**, K={sel.k}, seed {seed}: pairs whose confusion drops most when **{added}** joins "
        f"**{base}** (confusion = share of the two clusters' test images taken for the other)."
    )
    top = comparison.head(30)
    shown = top[["i", "j", "confusion_a", "confusion_b", "drop"]].copy()
    shown[["confusion_a", "confusion_b", "drop"]] *= 100
    shown.columns = ["cluster i", "cluster j", f"confusion, {base} (%)", f"confusion, + {added} (%)", "drop (points)"]
    st.dataframe(shown.round(2), hide_index=True, width="stretch", key="pairs_table")
    csv_download(comparison, f"{sel.study_name}-pairs-{model}-k{sel.k}-s{seed}.csv", "pairs_csv")

    # keyed by what the list shows, so that another model, K, seed or comparison starts from its first pair
    context = f"{model}-{sel.k}-{seed}-{base}-{added}"
    choice = st.selectbox(
        "Pair",
        range(len(top)),
        key=f"pair_choice-{context}",
        format_func=lambda r: f"{top['i'][r]} vs {top['j'][r]}  (drop {100 * top['drop'][r]:.1f} points)",
    )
    i, j, probe = int(top["i"][choice]), int(top["j"][choice]), top["probe_b"][choice]
    draw_pair(sel, probe, i, j, groups=f"{base}+{added}", context=context)


show_page(draw)
