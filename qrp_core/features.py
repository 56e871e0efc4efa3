"""Representation loaders: an (n_images, dim) float array per model, memory-mapped when possible.

Supported files: ``.npy`` (memory-mapped, never read whole), ``.npz``, ``.safetensors``,
``.pt`` and Parquet. Rows follow the study's image order, except for Parquet files with an
``image_id`` column, which are re-ordered by id.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .config import FEATURE_ROWS_PER_BLOCK
from .errors import InputError, missing_file

FEATURE_SUFFIXES = (".npy", ".npz", ".safetensors", ".pt", ".parquet")
# Names tried, in order, when a container file holds several arrays.
CONTAINER_KEYS = ("features", "feats", "x", "embeddings")


def load_features(path: Path, *, image_ids: np.ndarray, key: str | None = None) -> np.ndarray:
    """Load and validate one representation.

    Parameters
    ----------
    path : Path
        The feature file.
    image_ids : ndarray of shape (n_images,), dtype object
        The study's image ids; the returned rows follow this order.
    key : str, optional
        The array's name inside a ``.npz``, ``.safetensors`` or ``.pt`` container.

    Returns
    -------
    features : ndarray of shape (n_images, dim), floating dtype
        A read-only memory map for ``.npy`` files, an in-memory array otherwise.
    """
    path = Path(path)
    if not path.is_file():
        raise missing_file(
            path, what="feature file", fix="check the path in the study file (relative paths start at its folder)"
        )
    suffix = path.suffix.lower()
    if suffix not in FEATURE_SUFFIXES:
        raise InputError(
            f"unsupported feature format {suffix!r}",
            where=path,
            fix=f"save the features as one of {', '.join(FEATURE_SUFFIXES)}",
        )
    try:
        if suffix == ".parquet":
            x = _load_parquet(path, image_ids)
        elif suffix == ".npy":
            x = np.load(path, mmap_mode="r", allow_pickle=False)
        elif suffix == ".npz":
            with np.load(path, allow_pickle=False) as z:
                x = z[_pick_key(path, list(z.keys()), key)]
        elif suffix == ".safetensors":
            from safetensors.numpy import load_file

            tensors = load_file(str(path))
            x = tensors[_pick_key(path, list(tensors), key)]
        else:
            x = _load_torch(path, key)
    except InputError:
        raise
    except Exception as exc:  # truncated, corrupt or foreign files surface here
        raise InputError(
            f"cannot read features ({type(exc).__name__}: {exc})",
            where=path,
            fix="the file is unreadable or truncated; export it again",
        ) from exc
    return _check_array(x, path, n_images=len(image_ids))


def _pick_key(path: Path, keys: list[str], key: str | None) -> str:
    if key is not None:
        if key not in keys:
            raise InputError(
                f"no array named {key!r}; the file holds {keys}",
                where=path,
                fix="set `key` in the study file to one of those names",
            )
        return key
    if len(keys) == 1:
        return keys[0]
    for name in CONTAINER_KEYS:
        if name in keys:
            return name
    raise InputError(
        f"several arrays {keys} and none is named {CONTAINER_KEYS[0]!r}",
        where=path,
        fix="set `key` in the study file to the array that holds the features",
    )


def _load_torch(path: Path, key: str | None) -> np.ndarray:
    import torch

    obj = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(obj, dict):
        obj = obj[_pick_key(path, list(obj), key)]
    if not isinstance(obj, torch.Tensor):
        raise InputError(
            f"expected a tensor, found {type(obj).__name__}",
            where=path,
            fix="save a single (n_images, dim) tensor, or a dict of tensors with `key` set",
        )
    if obj.dtype == torch.bfloat16:
        obj = obj.float()
    return obj.numpy()


def _load_parquet(path: Path, image_ids: np.ndarray) -> np.ndarray:
    import pandas as pd

    frame = pd.read_parquet(path)
    if "image_id" in frame.columns:
        frame = frame.set_index(frame["image_id"].astype(str)).drop(columns="image_id")
        if frame.index.has_duplicates:
            dup = frame.index[frame.index.duplicated()][0]
            raise InputError(
                f"image id {dup!r} appears more than once", where=path, fix="keep one feature row per image"
            )
        missing = ~pd.Index(image_ids).isin(frame.index)
        if missing.any():
            raise InputError(
                f"{missing.sum()} study images have no feature row (first: {image_ids[missing][0]!r})",
                where=path,
                fix="extract features for every image in the study's image table",
            )
        frame = frame.loc[list(image_ids)]
    if len(frame.columns) == 1 and pd.api.types.is_object_dtype(frame.dtypes.iloc[0]):  # one list column
        return np.stack(frame.iloc[:, 0].to_numpy())
    bad = [c for c, t in frame.dtypes.items() if not np.issubdtype(t, np.number)]
    if bad:
        raise InputError(
            f"non-numeric feature columns {bad[:5]}",
            where=path,
            fix="keep `image_id` plus one numeric column per feature dimension",
        )
    return frame.to_numpy()


def _check_array(x: np.ndarray, path: Path, *, n_images: int) -> np.ndarray:
    if x.ndim != 2:
        raise InputError(
            f"features must be 2-D (n_images, dim), got shape {x.shape}",
            where=path,
            fix="flatten or pool each image's features into one vector",
        )
    if not np.issubdtype(x.dtype, np.floating):
        raise InputError(
            f"features must be floating point, got dtype {x.dtype}",
            where=path,
            fix="save the features as float32 (e.g. `x.astype(np.float32)`)",
        )
    if x.shape[0] != n_images:
        raise InputError(
            f"{x.shape[0]} feature rows but the study has {n_images} images",
            where=path,
            fix="extract one row per image, in the order of the study's image table",
        )
    if x.shape[1] == 0:
        raise InputError("features have zero dimensions", where=path, fix="extract non-empty features")
    return x


def standardisation_stats(
    x: np.ndarray, *, source: str | Path, chunk_rows: int = FEATURE_ROWS_PER_BLOCK
) -> tuple[np.ndarray, np.ndarray, int]:
    """Per-dimension mean and std in one chunked pass, checking every value is finite.

    Parameters
    ----------
    x : ndarray of shape (n_images, dim)
        Features, possibly memory-mapped; read chunk by chunk.

    Returns
    -------
    mean, std : ndarray of shape (dim,), float64
        ``std`` is 1 where a dimension is constant, so standardising maps it to 0. A dimension is
        constant where its std is at most 1e-6 times its |mean| or the largest std of any dimension:
        relative to the features' own scale, whatever it is.
    n_constant : int
        Number of constant dimensions.

    Raises
    ------
    InputError
        A non-finite value, or every dimension constant (nothing to cluster), naming ``source``.
    """
    n, d = x.shape
    total = np.zeros(d, dtype=np.float64)
    total_sq = np.zeros(d, dtype=np.float64)
    work = np.result_type(x.dtype, np.float32)  # float16 would overflow when squared (|x| > 256)
    shift = read_rows(x, 0, 1)[0].astype(work)  # sums of shifted values keep the variance accurate
    for start in range(0, n, chunk_rows):
        raw = read_rows(x, start, start + chunk_rows)
        chunk = raw.astype(work, copy=False) - shift
        chunk_sum = chunk.sum(axis=0, dtype=np.float64)
        chunk_sq = np.square(chunk).sum(axis=0, dtype=np.float64)
        if not (np.isfinite(chunk_sum).all() and np.isfinite(chunk_sq).all()):
            _raise_non_finite(raw, start, source)
        total += chunk_sum
        total_sq += chunk_sq
    mean_shifted = total / n
    var = np.maximum(total_sq / n - np.square(mean_shifted), 0.0)
    std = np.sqrt(var)
    mean = mean_shifted + shift.astype(np.float64)
    # constant: a spread below a millionth of the dimension's own magnitude or of the largest spread of
    # the representation, so features of any scale (a random network's 1e-9) keep their varying dimensions
    constant = std <= 1e-6 * np.maximum(np.abs(mean), std.max())
    if constant.all():
        raise InputError(
            f"all {d} feature dimensions are constant over the {n} images",
            where=source,
            fix="check the extraction: a representation must differ between images to be clustered",
        )
    std[constant] = 1.0
    return mean, std, int(constant.sum())


def read_rows(x: np.ndarray, start: int, stop: int) -> np.ndarray:
    """Rows ``start:stop`` of ``x`` as an in-memory array.

    A memory map is read through a short-lived map of just those rows, so the pages read
    leave this process's resident set when the chunk is done (a 1.28M x 2048 float32 file
    is 10.5 GB: mapped whole and read through, it would all count as resident).
    """
    stop = min(stop, len(x))
    window = _row_window(x, start, stop)
    return np.array(x[start:stop] if window is None else window)


def take_rows(x: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """``x[rows]`` for sorted row indices, read like ``read_rows`` when ``x`` is a memory map."""
    rows = np.asarray(rows, dtype=np.int64)
    if len(rows) and rows[-1] - rows[0] + 1 == len(rows):  # a contiguous range: slice, don't gather
        return read_rows(x, int(rows[0]), int(rows[-1]) + 1)
    window = _row_window(x, int(rows[0]), int(rows[-1]) + 1) if len(rows) else None
    return np.array(x[rows] if window is None else window[rows - rows[0]])


def standardised_rows(
    x: np.ndarray,
    mean: np.ndarray,
    std: np.ndarray,
    rows: np.ndarray | None = None,
    *,
    chunk_rows: int = FEATURE_ROWS_PER_BLOCK,
) -> np.ndarray:
    """``standardise(x[rows])`` (all rows when None; sorted indices) built chunk by chunk, so the raw
    rows are never held whole beside the result."""
    rows = np.arange(len(x)) if rows is None else np.asarray(rows, dtype=np.int64)
    out = np.empty((len(rows), x.shape[1]), dtype=np.float32)
    for start in range(0, len(rows), chunk_rows):
        out[start : start + chunk_rows] = standardise(take_rows(x, rows[start : start + chunk_rows]), mean, std)
    return out


def _row_window(x: np.ndarray, start: int, stop: int) -> np.memmap | None:
    """A fresh read-only map of rows ``start:stop`` of a C-ordered memory map (None otherwise);
    it is unmapped as soon as the caller drops it."""
    if not isinstance(x, np.memmap) or x.filename is None or not x.flags.c_contiguous or stop <= start:
        return None
    return np.memmap(
        x.filename, dtype=x.dtype, mode="r", offset=x.offset + start * x.strides[0], shape=(stop - start, *x.shape[1:])
    )


def _raise_non_finite(chunk: np.ndarray, start: int, source) -> None:
    bad = np.argwhere(~np.isfinite(chunk))
    if len(bad):
        raise InputError(
            f"non-finite value (NaN or Inf) in row {start + int(bad[0, 0])}",
            where=source,
            fix="re-extract the features, or drop or impute the broken rows",
        )
    raise InputError(
        f"values too large to square in float (rows {start}..{start + len(chunk) - 1})",
        where=source,
        fix="check the feature extraction; rescale the features",
    )


def standardise(chunk: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """Zero mean, unit std per dimension, as contiguous float32 (what faiss takes)."""
    out = np.subtract(chunk, mean.astype(np.float32), dtype=np.float32)
    out *= (1.0 / std).astype(np.float32)
    return np.ascontiguousarray(out)
