"""A study's results at one K as ONE self-contained HTML file to send to a colleague: plotly's JavaScript inlined
once, word clouds and downscaled thumbnails as data URIs, so that opening it requests nothing.

It holds the ranking (mean ± std, chance levels), the ranking bars, Fig. 3, Fig. 4, Table 3, Varying K where
computed, each model's top confused pairs with their word clouds and images, and in a collapsed section how
every number was made (the artefacts' and analyses' manifests)."""

from __future__ import annotations

import base64
import datetime as dt
import html
import io
from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd

from . import browse, figures
from .analyses.curves import k_curve
from .analyses.pairs import explain_pair, most_confused_pairs, most_informative_comparison
from .cache import Cache, sha256_file, versions
from .results import load_results, measure_warnings, results_path, select_results
from .study import Study

PAIRS_PER_MODEL = 3
IMAGES_PER_CLUSTER = 8
THUMBNAIL_SIDE = 96  # pixels: enough to recognise an image, small enough for hundreds of them
ANALYSES = ("significance", "ablation-cumulative", "ablation-gain", "pairs")  # whose manifests the report quotes
PLOT_CONFIG = {"displaylogo": False, "toImageButtonOptions": {"format": "svg"}}
STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1150px; margin: 2em auto; padding: 0 1em; color: #222; }
h1 { margin-bottom: 0.2em; } h2 { border-bottom: 1px solid #ddd; padding-bottom: 0.2em; margin-top: 2em; }
.caption { color: #666; font-size: 0.9em; } .warning { background: #fff4e5; padding: 0.5em; border-radius: 4px; }
table { border-collapse: collapse; font-size: 0.9em; margin: 0.5em 0; }
th, td { border: 1px solid #ddd; padding: 3px 8px; text-align: right; } th { background: #f4f4f4; }
td:first-child, th:first-child { text-align: left; }
.pair { display: grid; grid-template-columns: 1fr 1fr; gap: 1em; margin-bottom: 2em; }
.grid { display: flex; flex-wrap: wrap; gap: 4px; } .grid figure { margin: 0; width: 96px; text-align: center; }
.grid figcaption { font-size: 0.7em; color: #555; overflow: hidden; white-space: nowrap; text-overflow: ellipsis; }
.cloud { max-width: 100%; } pre { background: #f7f7f7; padding: 0.5em; overflow-x: auto; font-size: 0.8em; }
"""


@dataclass(frozen=True)
class PairsShown:
    """The pairs a report shows for one model: which comparison chose them, and the rows (i, j, confusion
    before and after, the probe whose coefficients explain them)."""

    model: str
    seed: int
    title: str
    rows: pd.DataFrame  # i, j, confusion (%), and confusion before / drop where a comparison chose them; probe


def _escape(text) -> str:
    return html.escape(str(text))


def _table(frame: pd.DataFrame) -> str:
    return frame.to_html(index=False, float_format=lambda v: f"{v:.2f}", na_rep="", border=0)


def _data_uri(image, format: str) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format=format, **({"quality": 80} if format == "JPEG" else {"optimize": True}))
    return f"data:image/{format.lower()};base64," + base64.b64encode(buffer.getvalue()).decode()


def _figure(figure) -> str:
    return figure.to_html(full_html=False, include_plotlyjs=False, config=PLOT_CONFIG)


def report_pairs(cache: Cache, study: Study, rows: pd.DataFrame, model: str, *, n: int = PAIRS_PER_MODEL) -> PairsShown:
    """The ``n`` pairs of ``model`` the report shows, from its lowest seed (cluster ids differ between
    clusterings): those whose confusion drops most in the comparison Cluster pairs opens on
    (``most_informative_comparison``) where ``pairs`` computed one at this K; else the pairs the probe of
    ``rows`` confuses most on test images."""
    k = int(rows["k"].iloc[0])
    pairs = cache.read_table(study.name, "pairs")
    chosen = most_informative_comparison(pairs[pairs["model"] == model], k) if pairs is not None else None
    if chosen is not None:
        base, added, _ = chosen
        part = pairs[
            (pairs["model"] == model) & (pairs["k"] == k) & (pairs["base"] == base) & (pairs["added"] == added)
        ]
        seed = int(part["seed"].min())
        top = part[part["seed"] == seed].sort_values("drop", ascending=False, kind="stable").head(n)
        shown = pd.DataFrame(
            {
                "i": top["i"].astype(int),
                "j": top["j"].astype(int),
                f"confusion, {base} (%)": 100 * top["confusion_a"],
                f"confusion, + {added} (%)": 100 * top["confusion_b"],
                "drop (points)": 100 * top["drop"],
                "probe": top["probe_b"],
            }
        )
        title = f"pairs whose confusion drops most when {added} joins {base} (θ of the probe on {base}+{added})"
        return PairsShown(model, seed, title, shown.reset_index(drop=True))
    mine = rows[rows["model"] == model]
    seed = int(mine["seed"].min())
    probe = str(mine.loc[mine["seed"] == seed, "probe"].iloc[0])
    top = most_confused_pairs(cache, probe, n)
    shown = pd.DataFrame(
        {"i": top["i"].astype(int), "j": top["j"].astype(int), "confusion (%)": 100 * top["confusion"], "probe": probe}
    )
    title = f"pairs the probe on {rows['groups'].iloc[0]} confuses most on test images"
    return PairsShown(model, seed, title, shown.reset_index(drop=True))


def _image_grid(study: Study, indices) -> str:
    files = browse.image_files(study, indices)
    if not len(files) or files[0] is None:
        return '<p class="caption">this study has no image files</p>'
    cells = []
    for index, path in zip(indices, files):
        caption = study.labels[index] if study.labels is not None else study.image_ids[index]
        image = browse.thumbnail(path, side=THUMBNAIL_SIDE)
        if image is None:
            image, caption = browse.placeholder_image(THUMBNAIL_SIDE), f"{caption} (unreadable)"
        cells.append(
            f'<figure><img src="{_data_uri(image, "JPEG")}" width="{image.width}" height="{image.height}" '
            f'alt="{_escape(caption)}"><figcaption title="{_escape(caption)}">{_escape(caption)}</figcaption></figure>'
        )
    return '<div class="grid">' + "".join(cells) + "</div>"


def _pair_section(cache: Cache, study: Study, shown: PairsShown) -> str:
    out = [
        f"<h3>{_escape(shown.model)}</h3>",
        f'<p class="caption">Seed {shown.seed}: {_escape(shown.title)}. Confusion = share of the two clusters\' test '
        "images the probe takes for the other.</p>",
        _table(shown.rows.drop(columns="probe")),
    ]
    for pair in shown.rows.itertuples(index=False):
        i, j = int(pair.i), int(pair.j)
        parts = explain_pair(study, cache, pair.probe, i, j, n=IMAGES_PER_CLUSTER)
        words = browse.wordcloud_words(parts["difference"], n=40)
        out.append(f"<h4>Clusters {i} and {j}: θ{i} − θ{j}</h4>")
        if words.empty:
            out.append('<p class="caption">The probe gives both clusters the same coefficients: no concept tells '
                       "them apart.</p>")  # fmt: skip
        else:
            cloud = browse.wordcloud_image(words, width=560, height=240)
            out.append(
                f'<img class="cloud" src="{_data_uri(cloud, "PNG")}" alt="word cloud of θ{i} − θ{j}">'
                f'<p class="caption">Blue: larger for cluster {i}; red: larger for cluster {j}; size: |difference|. '
                f"Words: {_escape(', '.join(words['concept'].head(12)))}</p>"
            )
        out.append('<div class="pair">')
        for cluster, side in ((i, "i"), (j, "j")):
            out.append(
                f"<div><b>Cluster {cluster}</b>, nearest its centroid first"
                f"{_image_grid(study, parts[f'images_{side}'])}</div>"
            )
        out.append("</div>")
    return "\n".join(out)


def _provenance(cache: Cache, study: Study, rows: pd.DataFrame) -> str:
    made = browse.provenance(cache, rows)
    out = [
        "<details><summary><b>How these numbers were made</b> (manifests of every clustering, split and probe, "
        "and of the analyses)</summary>",
        f'<p class="caption">Cache <code>{_escape(cache.root.resolve())}</code>; results '
        f"<code>{_escape(results_path(cache, study.name))}</code> (sha256 "
        f"{sha256_file(results_path(cache, study.name))[:16]}); study file <code>{_escape(study.path)}</code>.</p>",
        _table(made),
    ]
    for name in ANALYSES:
        manifest = cache.table_path(study.name, name).with_suffix(".json")
        if manifest.is_file():
            out.append(f"<h4>{_escape(name)}</h4><pre>{_escape(manifest.read_text())}</pre>")
    return "\n".join(out) + "</details>"


def build_report(
    study: Study,
    cache: Cache,
    *,
    k: int,
    groups: str = "all",
    models: list[str] | None = None,
    progress: Callable[[float, str], None] | None = None,
) -> str:
    """The HTML report of ``study`` at ``k`` for the probe on ``groups`` (``all`` or ``a+b``) and ``models``
    (default: every model with results there). ``progress(fraction, what)`` is told each step."""
    say = progress or (lambda fraction, what: None)
    results = load_results(cache, study)
    rows = select_results(results, study, k=k, groups=groups, models=models)
    models = list(dict.fromkeys(rows.sort_values("model")["model"]))
    label = rows["groups"].iloc[0]
    n_seeds = int(rows["seed"].nunique())
    several = n_seeds > 1
    table = browse.ranking_table(cache, study, rows)
    shown, chance = figures.ranking_columns(table, several=several)
    if several:  # "mean ± std" in one cell reads better on paper than two columns
        for metric in figures.METRICS.values():
            shown[metric] = [f"{m:.2f} ± {s:.2f}" for m, s in zip(shown[metric], shown.pop(f"{metric} ±"))]
    say(0.05, "ranking")

    body = [
        f"<h1>{_escape(study.name)}: quantized reverse probing at K={k}</h1>",
        f'<p class="caption">{study.n_images} images · {len(models)} models · probe on <b>{_escape(label)}</b> · '
        + (f"mean ± std (ddof=1) over {n_seeds} clusterings" if several else f"seed {rows['seed'].iloc[0]} only")
        + f" · built {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC by qrp {_escape(_version())}</p>",
        *(f'<p class="warning">{_escape(line)}</p>' for line in measure_warnings(rows)),
        "<h2>Ranking</h2>",
        _table(shown),
    ]
    if len(chance.columns) > 1:
        body += [
            "<h3>Chance levels and 95% confidence intervals</h3>",
            _table(chance),
            '<p class="caption">Chance: the same probe on concepts shuffled across images. 95% CI: bootstrap over '
            "the test images.</p>",
        ]
    else:
        body.append(
            '<p class="caption">Chance levels: not computed (<code>python -m qrp_core significance '
            f"{_escape(study.path)} --k {k}</code>).</p>"
        )
    body += [
        "<h3>NMI per model</h3>",
        _figure(figures.ranking_bars(table, "nmi", several=several, one_seed=rows["seed"].iloc[0])),
    ]
    scatter = figures.probe_scatter(table)
    if scatter is not None:
        body += ["<h2>Reverse probe vs linear-probe accuracy (Fig. 3)</h2>", _figure(scatter)]
    body += _ablation(cache, study, models, k)
    curve = k_curve(results[results["model"].isin(models)], groups=label)
    if curve["k"].nunique() > 1:
        mutual, scores = figures.k_curves(curve, "nmi")
        body += ["<h2>Varying K (Fig. 6, 7)</h2>", _figure(mutual), _figure(scores)]
    say(0.2, "figures")

    body.append("<h2>Confused cluster pairs</h2>")
    for n, model in enumerate(models):
        body.append(_pair_section(cache, study, report_pairs(cache, study, rows, model)))
        say(0.2 + 0.75 * (n + 1) / len(models), f"pairs of {model}")
    body += ["<h2>Provenance</h2>", _provenance(cache, study, rows)]
    say(1.0, "done")
    return _page(f"{study.name} · K={k} · qrp report", "\n".join(body))


def _ablation(cache: Cache, study: Study, models: list[str], k: int) -> list[str]:
    cumulative = cache.read_table(study.name, "ablation-cumulative")
    if cumulative is None:
        return []
    part = cumulative[cumulative["model"].isin(models) & (cumulative["k"] == k)]
    if part.empty:
        return []
    figure, _ = figures.cumulative_bars(part, study.base_group)
    out = ["<h2>Expert groups, cumulative (Fig. 4)</h2>", _figure(figure)]
    gain = cache.read_table(study.name, "ablation-gain")
    gain = None if gain is None else gain[gain["model"].isin(models) & (gain["k"] == k)]
    if gain is not None and not gain.empty:
        heat, table = figures.gain_heatmap(gain, study.base_group)
        out += [f"<h2>Gain over {_escape(study.base_group)} alone (Table 3)</h2>", _figure(heat), _table(table)]
    return out


def _version() -> str:
    made = versions()
    return (made.get("git_commit") or made["qrp_core"])[:8]


def _page(title: str, body: str) -> str:
    from plotly.offline import get_plotlyjs

    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{_escape(title)}</title>'
        f"<style>{STYLE}</style><script>{get_plotlyjs()}</script></head>\n<body>\n{body}\n</body></html>\n"
    )
