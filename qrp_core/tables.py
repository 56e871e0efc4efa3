"""Reading the files a study names (tables, arrays), with one error for a missing or unreadable file."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pandas as pd

from .errors import InputError, missing_file


def read_file(path: Path, load: Callable[[Path], object], *, what: str, fix: str):
    """``load(path)``; a missing path or a folder is ``errors.missing_file``, anything ``load`` raises is
    "cannot read <what>" with ``fix``."""
    if not Path(path).is_file():
        raise missing_file(path)
    try:
        return load(path)
    except Exception as exc:  # noqa: BLE001 - every reader's failure becomes the one error users see
        raise InputError(f"cannot read {what} ({type(exc).__name__}: {exc})", where=path, fix=fix) from None


def read_table(path: Path) -> pd.DataFrame:
    """A CSV (every column as text) or Parquet table."""
    load = pd.read_parquet if path.suffix.lower() == ".parquet" else _read_csv
    return read_file(
        path, load, what="table", fix="check it is a CSV or Parquet table whole (it may be cut short); export it again"
    )


def _read_csv(path: Path) -> pd.DataFrame:
    try:  # Arrow's reader: several times faster on a million-row image table
        return pd.read_csv(path, dtype=str, keep_default_na=False, engine="pyarrow")
    except Exception:  # noqa: BLE001 - pandas' own reader, which names a malformed file's problem as users expect
        return pd.read_csv(path, dtype=str, keep_default_na=False)
