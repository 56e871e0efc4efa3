"""What each model of the SSL zoo encodes, measured without qrp: a check on the measure, not part of it.

    python -m bench.ssl_signatures cache/ssl/study.toml

For every model: scikit-learn K-means (K=30) on its standardised features, and the NMI of those clusters
with each drawn factor (shape, colour, texture, background, size, count); and how well a ridge regression
recovers the background's per-image tint (each image's background is its named colour plus a uniform
RGB offset in +-12, which no concept names), as cross-validated R^2. A model that clusters by the tint
clusters by something the concept battery cannot name, and qrp should rank it low.
"""

from __future__ import annotations

import argparse

import numpy as np
import pandas as pd
from PIL import Image
from sklearn.cluster import KMeans
from sklearn.linear_model import RidgeCV
from sklearn.metrics import normalized_mutual_info_score
from sklearn.model_selection import cross_val_score

from qrp_core.study import load_study

FACTORS = {
    "colour": "[Color]",
    "texture": "[Texture]",
    "background": "[Background]",
    "size": "[Size]",
    "count": "[Count]",
}


def factor_table(study) -> pd.DataFrame:
    """One column per drawn factor, one row per image, from the study's concept table and labels."""
    concepts = pd.read_parquet(study.path.parent / "concepts.parquet")
    ids = pd.Index(study.image_ids)
    table = pd.DataFrame({"shape": study.labels}, index=ids)
    for factor, prefix in FACTORS.items():
        rows = concepts[concepts["concept"].str.startswith(prefix)].set_index("image_id")["concept"]
        table[factor] = rows.reindex(ids).to_numpy()
    return table


def background_tint(study, backgrounds: np.ndarray) -> np.ndarray:
    """Each image's corner colour minus the mean corner colour of its named background."""
    corners = np.stack(
        [
            np.asarray(Image.open(study.path.parent / path).convert("RGB"))[1:4, 1:4].reshape(-1, 3).mean(0)
            for path in study.image_paths
        ]
    )
    for name in np.unique(backgrounds):
        corners[backgrounds == name] -= corners[backgrounds == name].mean(0)
    return corners


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("study", help="the ssl study file (python -m qrp_core demo --study ssl)")
    parser.add_argument("--k", type=int, default=30)
    args = parser.parse_args()
    study = load_study(args.study)
    factors = factor_table(study)
    tint = background_tint(study, factors["background"].to_numpy())
    rows = {}
    for name in study.models:
        x = study.features(name)
        x = (x - x.mean(0)) / (x.std(0) + 1e-6)
        clusters = KMeans(args.k, n_init=3, random_state=0).fit_predict(x)
        row = {f: 100 * normalized_mutual_info_score(clusters, factors[f]) for f in factors}
        ridge = RidgeCV(alphas=[0.1, 1, 10, 100])
        row["tint R2"] = cross_val_score(ridge, x, tint, cv=5, scoring="r2").mean()
        rows[name] = row
    print(f"K={args.k}; NMI (%) of K-means clusters with each factor; tint R2: cross-validated ridge")
    print(pd.DataFrame(rows).T.round(2).to_string())


if __name__ == "__main__":
    main()
