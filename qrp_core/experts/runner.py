"""Run experts over an image collection (batched, resumable, cached) and import labels made elsewhere."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from ..cache import atomic_write_bytes, atomic_write_json
from ..errors import InputError
from ..extract import ImageList, read_images
from .base import Expert


def label_images(
    expert: Expert,
    images: ImageList,
    out: str | Path,
    *,
    batch_size: int = 256,
    show_progress: bool = True,
    stop_after: int | None = None,
) -> Path:
    """Write ``out/<expert>.parquet``, a long table (image_id, concept, group), and ``out/<expert>.json``
    recording the expert, its version and thresholds and the image set. Work is kept per batch in
    ``out/.<expert>-parts/``, so an interrupted run resumes; a finished one with the same inputs is reused."""
    out = Path(out)
    table_path, record_path = out / f"{expert.name}.parquet", out / f"{expert.name}.json"
    record = {
        **expert.describe(),
        "image_size": expert.image_size,
        "n_images": len(images.ids),
        "images_sha256": images.fingerprint(),
    }
    if table_path.is_file() and record_path.is_file() and json.loads(record_path.read_text()) == record:
        return table_path
    parts = out / f".{expert.name}-parts"
    stamp = parts / "record.json"
    if parts.is_dir() and (not stamp.is_file() or json.loads(stamp.read_text()) != record):
        shutil.rmtree(parts)  # left by another expert version or image set
    parts.mkdir(parents=True, exist_ok=True)
    atomic_write_json(stamp, record)
    n_batches = (len(images.ids) + batch_size - 1) // batch_size
    names = np.array(expert.concept_names, dtype=object)
    new = 0
    for b in tqdm(range(n_batches), desc=f"label {expert.name}", disable=not show_progress):
        part = parts / f"part-{b:05d}.parquet"
        if part.is_file():
            continue
        if stop_after is not None and new >= stop_after:
            return table_path
        chosen = slice(b * batch_size, (b + 1) * batch_size)
        active = expert.predict(read_images(images.paths[chosen], expert.image_size))
        ids = np.repeat(np.array(images.ids[chosen], dtype=object), [len(a) for a in active])
        concepts = names[np.concatenate([np.asarray(a, dtype=np.int64) for a in active])] if len(ids) else []
        atomic_write_bytes(
            part,
            pd.DataFrame({"image_id": ids, "concept": concepts, "group": expert.group})
            .astype(str)
            .to_parquet(index=False),
        )
        new += 1
    table = pd.concat([pd.read_parquet(parts / f"part-{b:05d}.parquet") for b in range(n_batches)], ignore_index=True)
    atomic_write_bytes(table_path, table.to_parquet(index=False))
    atomic_write_json(record_path, record)
    shutil.rmtree(parts)
    return table_path


def import_labels(path: str | Path, *, group: str | None = None, source: str | None = None) -> pd.DataFrame:
    """Labels made elsewhere, as a long table (image_id, concept, group).

    Accepts a long table (columns image_id, concept, group) or a wide one (image_id plus one 0/1
    column per concept; ``group`` names their group, ``source`` prefixes names as ``[source] name``).
    """
    path = Path(path)
    try:
        table = pd.read_parquet(path) if path.suffix.lower() == ".parquet" else pd.read_csv(path)
    except Exception as exc:
        raise InputError(
            f"cannot read labels ({type(exc).__name__}: {exc})", where=path, fix="export the labels as CSV or Parquet"
        ) from None
    if "image_id" not in table.columns:
        raise InputError("no image_id column", where=path, fix="name the id column image_id")
    if {"concept", "group"} <= set(table.columns):
        return table[["image_id", "concept", "group"]].astype(str)
    if group is None:
        raise InputError(
            "a wide table (one column per concept) needs the concepts' group",
            where=path,
            fix="pass --group NAME (objects, scene, material, texture, other, ...)",
        )
    values = table.drop(columns="image_id")
    bad = [c for c in values.columns if not set(pd.unique(values[c].dropna())) <= {0, 1}]
    if bad:
        raise InputError(f"columns {bad[:3]} are not binary (0/1)", where=path, fix="threshold the scores first")
    rows, cols = np.nonzero(values.fillna(0).to_numpy().astype(bool))
    concepts = np.array([f"[{source}] {c}" if source else str(c) for c in values.columns], dtype=object)
    return pd.DataFrame(
        {"image_id": table["image_id"].astype(str).to_numpy()[rows], "concept": concepts[cols], "group": group}
    )
