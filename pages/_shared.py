"""The sidebar shared by every page, the selection it holds, and cached loaders keyed by file stamps."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import streamlit as st

from qrp_core import browse
from qrp_core.cache import Cache
from qrp_core.pipeline import load_results
from qrp_core.study import Study

ALL_SEEDS = "all seeds"
NO_GROUP = "(none)"


def cache_root() -> Path:
    return Path(os.environ.get("QRP_CACHE", "cache"))


def _stamp(path: Path) -> float:
    return path.stat().st_mtime_ns if path.exists() else 0.0


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
def analysis_table(root: str, name: str, table: str, stamp: float) -> pd.DataFrame | None:
    return Cache(root).read_table(name, table)


@dataclass(frozen=True)
class Selection:
    """What the sidebar selects; every page reads it."""

    cache: Cache
    study_name: str
    study: Study
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
        path = self.cache.root / "analyses" / self.study_name / f"{name}.parquet"
        return analysis_table(str(self.cache.root), self.study_name, name, _stamp(path))

    def rows(self, *, groups: tuple[str, ...] | None = None, all_k: bool = False) -> pd.DataFrame:
        """Result rows of the selected models (and K, seed, group set unless asked otherwise)."""
        r = self.results[self.results["model"].isin(self.models)]
        if not all_k:
            r = r[r["k"] == self.k]
        if self.seed is not None:
            r = r[r["seed"] == self.seed]
        label = "+".join(self.groups if groups is None else groups)
        return r[r["groups"] == label]


def _from_url(key: str, default):
    """Initial widget value from the URL query string, so a shared link opens the same view."""
    if key in st.session_state:
        return st.session_state[key]
    return st.query_params.get(key, default)


def sidebar() -> Selection | None:
    """Draw the shared sidebar; None when the cache holds no study yet."""
    root = cache_root()
    table = studies(str(root), _stamp(root / "studies.json"))
    if table.empty:
        st.sidebar.info("No study in the cache yet: build the demo on the Home page.")
        return None
    names = table["study"].tolist()
    name = st.sidebar.selectbox("Study", names, index=names.index(_from_url("study", names[0]))
                                if _from_url("study", names[0]) in names else 0, key="study")
    stamp = _stamp(root / "results" / f"{name}.parquet")
    the_study = study(str(root), name, _stamp(Path(table.set_index("study").loc[name, "path"])))
    all_results = results(str(root), name, stamp)

    meta = browse.model_metadata(the_study).set_index("model")
    model_names = [m for m in dict.fromkeys(all_results["model"])]
    family = {m: (meta["family"].get(m) if m in meta.index else None) or "other" for m in model_names}
    model_names.sort(key=lambda m: (family[m], m))
    url_models = _from_url("models", ",".join(model_names))
    default_models = [m for m in (url_models if isinstance(url_models, list) else url_models.split(","))
                      if m in model_names] or model_names
    models = st.sidebar.multiselect("Models", model_names, default=default_models, key="models",
                                    format_func=lambda m: f"{m}  ·  {family[m]}")
    ks = sorted(int(k) for k in all_results["k"].unique())
    k_default = int(_from_url("k", ks[len(ks) // 2]))
    k = st.sidebar.selectbox("K (clusters)", ks, index=ks.index(k_default) if k_default in ks else 0, key="k")
    seeds = [ALL_SEEDS] + sorted(int(s) for s in all_results["seed"].unique())
    seed_default = _from_url("seed", ALL_SEEDS)
    seed_default = seed_default if seed_default == ALL_SEEDS else int(seed_default)
    seed = st.sidebar.selectbox("Seed", seeds, index=seeds.index(seed_default) if seed_default in seeds else 0,
                                key="seed")

    group_names = list(the_study.concepts.group_names)
    url_base = _from_url("base", ",".join(group_names))
    base_default = [g for g in (url_base if isinstance(url_base, list) else url_base.split(",")) if g in group_names]
    base = st.sidebar.multiselect("Probe on groups", group_names, default=base_default or group_names, key="base",
                                  help="the probe's concept groups; pages that compare probes add one more")
    added_options = [NO_GROUP] + [g for g in group_names if g not in base]
    added_default = _from_url("added", NO_GROUP)
    added = st.sidebar.selectbox("Added group", added_options, key="added",
                                 index=added_options.index(added_default) if added_default in added_options else 0)
    st.query_params.update({"study": name, "models": ",".join(models), "k": str(k), "seed": str(seed),
                            "base": ",".join(base), "added": added})
    return Selection(cache=Cache(root), study_name=name, study=the_study, results=all_results,
                     models=tuple(models), k=int(k), seed=None if seed == ALL_SEEDS else int(seed),
                     base=tuple(base), added=None if added == NO_GROUP else added)


def require_selection() -> Selection:
    selection = st.session_state.get("selection")
    if selection is None:
        st.info("The cache holds no study yet. Build the demo on the Home page, or run "
                "`python -m qrp_core run study.toml`.")
        st.stop()
    if not selection.models:
        st.warning("Select at least one model in the sidebar.")
        st.stop()
    return selection


def command_hint(text: str, command: str) -> None:
    st.info(text)
    st.code(command, language="bash")


def csv_download(table: pd.DataFrame, filename: str, key: str) -> None:
    st.download_button("Download CSV", table.to_csv(index=False).encode(), file_name=filename, mime="text/csv",
                       key=key)


def image_grid(the_study: Study, indices, *, columns: int = 6, caption_prefix: str = "") -> None:
    files = browse.image_files(the_study, indices)
    if not len(files):
        st.caption("no images")
        return
    if files[0] is None:
        st.caption("this study has no image paths: " + ", ".join(the_study.image_ids[list(indices)]))
        return
    cols = st.columns(columns)
    for n, (i, path) in enumerate(zip(indices, files)):
        with cols[n % columns]:
            st.image(str(path), caption=f"{caption_prefix}{the_study.image_ids[i]}", width="stretch")
