"""Write a study folder from arrays: the image table, a long concept table, one .npy per model, study.toml."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from ..cache import atomic_write_bytes
from ..study_file import MODEL_METADATA


def write_study(
    out: Path,
    name: str,
    ids: np.ndarray,
    concepts: pd.DataFrame,
    features: dict[str, np.ndarray],
    metadata: dict[str, dict],
    *,
    labels: np.ndarray | None = None,
    paths: np.ndarray | None = None,
    label_ids: np.ndarray | None = None,
) -> Path:
    """Write the files of a study (image table, long concept table, one .npy per model, study.toml).

    A feature value that is a path to a file inside ``out`` is referenced, not copied.
    """
    out = Path(out)
    (out / "features").mkdir(parents=True, exist_ok=True)
    feature_files = {}
    for model, x in features.items():
        if isinstance(x, Path):
            feature_files[model] = x.relative_to(out).as_posix()
        else:
            np.save(out / "features" / f"{model}.npy", x.astype(np.float32))
            feature_files[model] = f"features/{model}.npy"
    images = pd.DataFrame({"image_id": ids})
    if labels is not None:
        images["label"] = labels
    if label_ids is not None:  # the class folder's own id (a WordNet id) beside its readable label
        images["label_id"] = label_ids
    if paths is not None:
        images["path"] = paths
    atomic_write_bytes(out / "images.csv", images.to_csv(index=False).encode())
    atomic_write_bytes(out / "concepts.parquet", concepts.to_parquet(index=False))
    lines = [
        f'name = "{name}"',
        'images = "images.csv"',
        'base_group = "labels"',
        "",
        "[concepts]",
        'table = "concepts.parquet"',
    ]
    for model in features:
        described = {k: v for k, v in metadata.get(model, {}).items() if k in MODEL_METADATA}
        provenance = {k: v for k, v in metadata.get(model, {}).items() if k not in MODEL_METADATA}
        lines += ["", f'[models."{model}"]', f'features = "{feature_files[model]}"']
        lines += [f"{k} = {json.dumps(v)}" for k, v in described.items()]
        if provenance:  # where the features came from (weights and their sha256, a seed): kept, not interpreted
            lines += ["", f'[models."{model}".source]', *(f"{k} = {json.dumps(v)}" for k, v in provenance.items())]
    study_path = out / "study.toml"
    atomic_write_bytes(study_path, ("\n".join(lines) + "\n").encode())
    return study_path
