"""Reading the tables a study names (CSV or Parquet), with one error for a missing or unreadable file."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from .errors import InputError, missing_file


def read_table(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise missing_file(path)
    try:
        if path.suffix.lower() == ".parquet":
            return pd.read_parquet(path)
        return pd.read_csv(path, dtype=str, keep_default_na=False)
    except Exception as exc:
        raise InputError(
            f"cannot read table ({type(exc).__name__}: {exc})",
            where=path,
            fix="the file is unreadable or truncated; export it again as CSV or Parquet",
        ) from None
