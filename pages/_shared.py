"""The sidebar shared by every page, the selection it holds, and cached loaders keyed by file stamps."""

from __future__ import annotations

import io
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import streamlit as st

from qrp_core import browse
from qrp_core.analyses.pairs import explain_pair
from qrp_core.cache import Cache
from qrp_core.errors import InputError
from qrp_core.results import find_probe, load_results, registry_path, result_rows, results_path
from qrp_core.study import Study

ALL_SEEDS = "all seeds"
LINK_KEYS = ("study", "models", "k", "seed", "base", "added")  # the sidebar's values that a link holds
NO_GROUP = "(none)"


def cache_root() -> Path:
    return Path(os.environ.get("QRP_CACHE", "cache"))


def _stamp(path: Path) -> float:
    return path.stat().st_mtime_ns if path.exists() else 0.0


def studies_stamp(root: Path) -> float:
    """Changes when the cache's study registry does: the key of ``studies``."""
    return _stamp(registry_path(Cache(root)))


@st.cache_data(show_spinner=False)
def studies(root: str, stamp: float) -> pd.DataFrame:
    return browse.list_studies(Cache(root))


@st.cache_resource(show_spinner=False)
def study(root: str, name: str, stamp: float) -> Study:
    return browse.open_study(Cache(root), name)


@st.cache_data(show_spinner=False)
def results(root: str, name: str, stamp: float) -> pd.DataFrame:
    return load_results(Cache(root), study(root, name, stamp))


@st.cache_data(show_spinner=False)
def concept_group_table(root: str, name: str, stamp: float) -> pd.DataFrame:
    return browse.concept_groups(study(root, name, stamp))


@st.cache_data(show_spinner=False)
def analysis_table(root: str, name: str, table: str, stamp: float) -> pd.DataFrame | None:
    return Cache(root).read_table(name, table)


@st.cache_data(show_spinner=False)
def provenance(root: str, rows: pd.DataFrame) -> pd.DataFrame:
    """Keyed by the rows' artefact keys: an artefact's manifest never changes under its key."""
    return browse.provenance(Cache(root), rows)


@st.cache_data(show_spinner=False)
def training_curve(root: str, probe: str) -> tuple[pd.DataFrame, int]:
    return browse.training_curve(Cache(root), probe)


@st.cache_data(show_spinner=False)
def pair_view(root: str, name: str, study_stamp: float, probe: str, i: int, j: int) -> dict:
    """Everything the pair view shows, the word cloud as PNG bytes; keyed by the content-addressed probe."""
    parts = explain_pair(study(root, name, study_stamp), Cache(root), probe, i, j, n=10)
    words = browse.wordcloud_words(parts["difference"], n=40)
    if words.empty:  # equal coefficients (a probe that kept epoch 0, the marginal): no word to draw
        return {**parts, "words": words, "cloud_png": None}
    png = io.BytesIO()
    browse.wordcloud_image(words).save(png, format="PNG")
    return {**parts, "words": words, "cloud_png": png.getvalue()}


@dataclass(frozen=True)
class Selection:
    """What the sidebar selects; every page reads it."""

    cache: Cache
    study_name: str
    study: Study
    study_stamp: float  # the study file's mtime: part of the keys of cached views
    results: pd.DataFrame  # every row of the study
    models: tuple[str, ...]
    k: int
    seed: int | None  # None: all seeds
    base: tuple[str, ...]
    added: str | None

    @property
    def groups(self) -> tuple[str, ...]:
        """The probe's group set: base groups plus the added group, in the study's column order."""
        chosen = set(self.base) | ({self.added} if self.added else set())
        return tuple(g for g in self.study.concepts.group_names if g in chosen)

    def table(self, name: str) -> pd.DataFrame | None:
        path = self.cache.table_path(self.study_name, name)
        return analysis_table(str(self.cache.root), self.study_name, name, _stamp(path))

    def rows(self, *, groups: tuple[str, ...] | None = None, all_k: bool = False) -> pd.DataFrame:
        """Result rows of the selected models (and K, seed, group set unless asked otherwise)."""
        return result_rows(
            self.results,
            models=self.models,
            k=None if all_k else self.k,
            seed=self.seed,
            groups="+".join(self.groups if groups is None else groups),
        )


def _url_value(key: str, default):
    """A widget's initial value from the URL query string, so a shared link opens the same view."""
    return st.query_params.get(key, default)


def _restore(key: str, initial, valid) -> None:
    """Give a sidebar widget its value before it is drawn. Widgets of different pages are different
    widgets to Streamlit, so the value lives on under ``_<key>`` and follows the user across pages;
    ``valid(value)`` returns the value made valid for the current study, or None to use ``initial``
    (which must be valid)."""
    store = f"_{key}"
    value = st.session_state.get(store, initial)
    value = valid(value)
    st.session_state[store] = st.session_state[key] = initial if value is None else value


def _subset(values: list, options: list) -> list | None:
    """The values that are options, in order; None (use the default) where a choice names none of them,
    as after switching study. An empty choice stays empty: the user cleared it."""
    kept = [v for v in values if v in options]
    return kept if kept or not values else None


def _keep(key: str) -> None:
    st.session_state[f"_{key}"] = st.session_state[key]


def set_selection(**values) -> None:
    """Change sidebar values from a page (in a widget callback): e.g. ``set_selection(base=[...])``."""
    for key, value in values.items():
        st.session_state[f"_{key}"] = value


def ensure_entrypoint() -> None:
    """Run the app through app.py even when a fresh server's first visitor opens a page's URL.

    Streamlit treats a folder named pages/ beside the main script as an old-style multipage app
    until the main script has called st.navigation once; until then a page URL runs the page file
    alone, with the folder's menu. Calling st.navigation here ends that mode, and the rerun goes
    through app.py to the same page.
    """
    if not st.session_state.get("_entrypoint_ran"):
        st.navigation(app_pages(), position="hidden")
        st.rerun()


@st.cache_resource
def app_icon():
    """The browser tab's icon, drawn here: a Material icon name would be fetched from Google's servers,
    which an offline machine cannot reach."""
    from PIL import Image, ImageDraw

    icon = Image.new("RGBA", (64, 64))
    draw = ImageDraw.Draw(icon)
    draw.rounded_rectangle((0, 0, 63, 63), radius=14, fill="#ff4b4b")
    draw.ellipse((12, 10, 42, 40), outline="white", width=6)
    draw.line((37, 35, 52, 50), fill="white", width=8)
    return icon


def app_pages() -> dict[str, list]:
    """The app's pages by menu section (app.py's st.navigation)."""
    return {
        "Overview": [st.Page("pages/home.py", title="Home", icon=":material/home:", default=True)],
        "Measure": [
            st.Page("pages/ranking.py", title="Ranking", icon=":material/leaderboard:"),
            st.Page("pages/expert_groups.py", title="Expert groups", icon=":material/extension:"),
            st.Page("pages/varying_k.py", title="Varying K", icon=":material/show_chart:"),
            st.Page("pages/transfer.py", title="Transfer", icon=":material/swap_horiz:"),
        ],
        "Explain": [
            st.Page("pages/cluster_pairs.py", title="Cluster pairs", icon=":material/compare_arrows:"),
            st.Page("pages/cluster_browser.py", title="Cluster browser", icon=":material/grid_view:"),
            st.Page("pages/cluster_map.py", title="Cluster map", icon=":material/scatter_plot:"),
        ],
    }


def sidebar(*, added_group: bool = False, stop_on_error: bool = True) -> Selection | None:
    """Draw the shared sidebar; None when the cache holds no study yet. ``added_group``: a page that
    compares probes (Cluster pairs) also offers a group to add to the probe's groups; on other pages
    the added group is kept for that page but not applied. A study that cannot be opened is named in an
    error; the page stops there unless ``stop_on_error`` is False (Home), which then gets None."""
    ensure_entrypoint()
    linked = None if st.session_state.get("_link_read") else {k: st.query_params.get(k) for k in LINK_KEYS}
    st.session_state["_link_read"] = True
    root = cache_root()
    table = studies(str(root), studies_stamp(root))
    if table.empty:
        st.sidebar.info("No study in the cache yet: build the demo on the Home page.")
        return None
    names = table["study"].tolist()
    _restore("study", _url_value("study", names[0]), lambda v: v if v in names else names[0])
    name = st.sidebar.selectbox("Study", names, key="study", on_change=_keep, args=("study",))
    study_stamp = _stamp(Path(table.set_index("study").loc[name, "path"]))
    try:
        the_study = study(str(root), name, study_stamp)
        all_results = results(str(root), name, _stamp(results_path(Cache(root), name)))
    except InputError as exc:  # a study file moved, edited or written by an older version: say so, keep the others
        st.error(f"Study **{name}** cannot be opened: {exc}")
        others = [n for n in names if n != name]
        st.caption(("Choose another study in the sidebar: " + ", ".join(others) + ".") if others else "")
        if stop_on_error:
            st.stop()
        return None

    meta = browse.model_metadata(the_study).set_index("model")
    model_names = list(dict.fromkeys(all_results["model"]))
    family = {m: (meta["family"].get(m) if m in meta.index else None) or "other" for m in model_names}
    model_names.sort(key=lambda m: (family[m], m))
    _restore(
        "models",
        _subset(_url_value("models", "").split(","), model_names) or model_names,
        lambda v: _subset(v, model_names),
    )
    models = st.sidebar.multiselect(
        "Models",
        model_names,
        key="models",
        on_change=_keep,
        args=("models",),
        help="grouped by family: "
        + "; ".join(
            f"{f}: {', '.join(m for m in model_names if family[m] == f)}" for f in dict.fromkeys(family.values())
        ),
    )
    ks = sorted(int(k) for k in all_results["k"].unique())
    rows_per_k = all_results["k"].value_counts()
    main_k = int(max(ks, key=lambda k: (rows_per_k[k], -abs(ks.index(k) - len(ks) // 2))))  # the K most analysed
    _restore(
        "k",
        _url_value("k", str(main_k)),
        lambda v: int(v) if str(v).isdigit() and int(v) in ks else main_k,
    )
    k = st.sidebar.selectbox("K (clusters)", ks, key="k", on_change=_keep, args=("k",))
    seeds = [ALL_SEEDS] + sorted(int(s) for s in all_results["seed"].unique())
    _restore(
        "seed", _url_value("seed", ALL_SEEDS), lambda v: int(v) if str(v).isdigit() and int(v) in seeds else ALL_SEEDS
    )
    seed = st.sidebar.selectbox("Seed", seeds, key="seed", on_change=_keep, args=("seed",))

    group_names = list(the_study.concepts.group_names)
    _restore(
        "base",
        _subset(_url_value("base", "").split(","), group_names) or group_names,
        lambda v: _subset(v, group_names),
    )
    base = st.sidebar.multiselect(
        "Probe on groups",
        group_names,
        key="base",
        on_change=_keep,
        args=("base",),
        help="the probe's concept groups; Cluster pairs compares them with one group added",
    )
    params = {"study": name, "models": ",".join(models), "k": str(k), "seed": str(seed), "base": ",".join(base)}
    added = NO_GROUP
    if added_group:
        added_options = [NO_GROUP] + [g for g in group_names if g not in base]
        _restore("added", _url_value("added", NO_GROUP), lambda v: v if v in added_options else NO_GROUP)
        added = st.sidebar.selectbox("Added group", added_options, key="added", on_change=_keep, args=("added",))
        params["added"] = added
    st.query_params.update(params)
    if linked:  # a shared link's values that this cache does not have were replaced: say which, once
        ignored = [f"{k}={v}" for k, v in linked.items() if v is not None and k in params and v != params[k]]
        if ignored:
            st.sidebar.warning(f"From the link, not in this cache: {', '.join(ignored)}. Showing the defaults instead.")
    return Selection(
        cache=Cache(root),
        study_name=name,
        study=the_study,
        study_stamp=study_stamp,
        results=all_results,
        models=tuple(models),
        k=int(k),
        seed=None if seed == ALL_SEEDS else int(seed),
        base=tuple(base),
        added=None if added == NO_GROUP else added,
    )


def show_page(draw: Callable[[], None]) -> None:
    """Run a page's ``draw``; a damaged artefact or table it reads (``InputError``) is shown with its file and
    fix instead of a traceback."""
    try:
        draw()
    except InputError as exc:
        st.error(f"This page cannot be drawn: {exc}")


def require_selection(*, added_group: bool = False) -> Selection:
    """Draw the sidebar (``sidebar``) and return its selection; stop the page with a hint when there is none."""
    selection = sidebar(added_group=added_group)
    if selection is None:
        st.info(
            "The cache holds no study yet. Build the demo on the Home page, or run `python -m qrp_core run study.toml`."
        )
        st.stop()
    if not selection.models or not selection.base:
        st.warning(
            "Select at least one model in the sidebar."
            if not selection.models
            else "Select at least one concept group (Probe on groups) in the sidebar."
        )
        st.stop()
    return selection


def offer_computed_groups(
    sel: Selection, key: str, table: pd.DataFrame | None = None, *, what: str = "Probes computed"
) -> None:
    """Buttons for the probe group sets in ``table`` (default: the results) at the selected K and models,
    where the selected set has none; a button makes its set the sidebar's probe groups."""
    table = sel.results if table is None else table
    at_k = table[(table["k"] == sel.k) & table["model"].isin(sel.models)]
    group_sets = sorted(at_k["groups"].unique(), key=lambda g: (-g.count("+"), g))
    if group_sets:
        st.caption(f"{what} at K={sel.k}:")
        columns = st.columns(min(4, len(group_sets)))
        for n, groups in enumerate(group_sets):
            columns[n % len(columns)].button(
                groups,
                key=f"{key}_{groups}",
                on_click=set_selection,
                kwargs={"base": groups.split("+"), "added": NO_GROUP},
            )


def command_hint(text: str, command: str, *, quiet: bool = False) -> None:
    """``text`` (an info box, or a caption where the page already said what is missing) above ``command``."""
    (st.caption if quiet else st.info)(text)
    st.code(command, language="bash")


def chosen_probe(sel: Selection, model: str) -> tuple[str, int]:
    """The probe of ``model`` at the sidebar's K, groups and seed (the first seed when all are chosen) and
    that seed; where there is none the page stops with the command that trains it."""
    groups = "+".join(sel.groups)
    rows = result_rows(sel.results, models=[model], k=sel.k, groups=groups)
    if rows.empty:
        command_hint(
            f"No probe of {model} at K={sel.k} on {groups}.",
            f"python -m qrp_core run {sel.study.path} --models {model} --k {sel.k} --groups {groups}",
        )
        st.stop()
    seeds = sorted(rows["seed"])
    seed = sel.seed if sel.seed in seeds else seeds[0]
    return find_probe(rows, model, sel.k, seed, sel.groups), seed


def csv_download(table: pd.DataFrame, filename: str, key: str) -> None:
    st.download_button("Download CSV", table.to_csv(index=False).encode(), file_name=filename, mime="text/csv", key=key)


def image_grid(the_study: Study, indices, *, columns: int = 6) -> None:
    """The images in a grid, each captioned with its ground-truth label, or its id where the study has no labels."""
    files = browse.image_files(the_study, indices)
    if not len(files):
        st.caption("no images")
        return
    if files[0] is None:
        st.caption("this study has no image paths: " + ", ".join(the_study.image_ids[list(indices)]))
        return
    cols = st.columns(columns)
    unreadable = []
    for n, (i, path) in enumerate(zip(indices, files)):
        with cols[n % columns]:
            caption = the_study.labels[i] if the_study.labels is not None else the_study.image_ids[i]
            image = browse.thumbnail(path)
            if image is None:  # moved, deleted or not an image: a placeholder, and a note below the grid
                unreadable.append(str(path))
                st.image(browse.placeholder_image(), caption=f"{caption} (unreadable)", width="stretch")
            else:
                st.image(image, caption=str(caption), width="stretch")
    if unreadable:
        st.caption(
            f"{len(unreadable)} image file(s) could not be read (missing, moved or not images), e.g. "
            f"`{unreadable[0]}`: the image table's paths start at the study file's folder."
        )
