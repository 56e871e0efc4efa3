"""Content-addressed artefacts with manifests, written atomically.

Layout: ``<root>/<kind>/<key>/`` holds the artefact's files and a ``manifest.json`` that is
written last, so a folder with a manifest is complete. The key is a hash of everything the
artefact depends on (input hashes and parameters), so a rerun reuses it and a changed input
recomputes. Every file is plain NumPy, JSON, safetensors or Parquet.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import importlib.metadata
import io
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
from filelock import FileLock

from .errors import InputError

CACHE_ENV = "QRP_CACHE"
STALE_SECONDS = 24 * 3600  # writing an artefact takes seconds: an older temporary folder lost its writer
MANIFEST = "manifest.json"
FILE_HASHES = "file-hashes.json"


def default_cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV, "cache"))


def sha256_file(path: str | Path) -> str:
    """sha256 of a file's bytes, read in 16 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 24), b""):
            h.update(block)
    return h.hexdigest()


def stable_hash(obj) -> str:
    """A short sha256 of the canonical JSON of ``obj`` (dict keys sorted)."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:24]


@functools.cache
def _installed_version(module: str) -> str | None:
    for distribution in importlib.metadata.packages_distributions().get(module, []):
        return importlib.metadata.version(distribution)
    return None


def versions() -> dict:
    """Library versions and the project's git commit, for manifests. Versions come from the installed
    packages' metadata, so writing an artefact from the app does not import torch or faiss."""
    from . import __version__

    out = {"python": platform.python_version(), "qrp_core": __version__}
    for module, name in (
        ("numpy", "numpy"),
        ("scipy", "scipy"),
        ("torch", "torch"),
        ("faiss", "faiss"),
        ("sklearn", "scikit-learn"),
    ):
        out[name] = _installed_version(module)
    try:
        out["git_commit"] = (
            subprocess.run(
                ["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=Path(__file__).parent, timeout=5
            ).stdout.strip()
            or None
        )
    except (OSError, subprocess.SubprocessError):
        out["git_commit"] = None
    return out


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


UMASK = _umask()  # files and folders get the permissions the user's umask gives (mkstemp's are 0600/0700)


def share_as_umask(path: Path, *, folder: bool = False) -> None:
    """Give ``path`` the permissions a plain ``open``/``mkdir`` would: a cache may be read by other users."""
    os.chmod(path, (0o777 if folder else 0o666) & ~UMASK)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        share_as_umask(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def locked(path: Path) -> FileLock:
    """``path``'s lock (``.<name>.lock`` beside it), held for a read-modify-write so that processes
    upserting the same table (two runs, Ray workers) do not lose each other's rows."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return FileLock(path.parent / f".{path.name}.lock")


def atomic_write_json(path: Path, obj) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n").encode())


def read_json(path: Path, default):
    """A JSON file's contents, or ``default`` when it is missing or damaged (a memo or a registry that the
    next write rebuilds)."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return default


def read_parquet_file(path: Path) -> pd.DataFrame:
    """A Parquet table read through one open of the file, so a writer replacing it meanwhile (``os.replace``)
    is never seen half-way; a damaged file is an ``InputError`` that says how to rebuild it."""
    try:
        data = path.read_bytes()
        return pd.read_parquet(io.BytesIO(data))
    except FileNotFoundError:
        raise
    except (OSError, ValueError) as exc:
        raise InputError(
            f"cannot read the table ({type(exc).__name__}: {exc})",
            where=path,
            fix="delete it and run the command that wrote it again: the artefacts behind it are cached, so it is quick",
        ) from None


def _json_default(obj):
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


class Cache:
    """Artefacts under one root folder."""

    def __init__(self, root: str | Path | None = None):
        self.root = Path(root) if root is not None else default_cache_dir()
        if self.root.exists() and not self.root.is_dir():
            raise InputError(
                "the cache path is a file, not a folder", where=self.root, fix="pass --cache a folder (or a new path)"
            )

    def path(self, kind: str, key: str) -> Path:
        return self.root / kind / key

    def has(self, kind: str, key: str) -> bool:
        """Whether the artefact is there whole: its manifest reads, and every file it lists is present with
        the size it was written with. Anything else (a deleted manifest, a truncated or replaced file)
        counts as missing, and the next run writes the artefact again."""
        return _whole(self.path(kind, key))

    def manifest(self, kind: str, key: str) -> dict:
        return self.load_json(kind, key, MANIFEST)

    def load_array(self, kind: str, key: str, name: str) -> np.ndarray:
        try:
            return np.load(self.path(kind, key) / name, allow_pickle=False)
        except (OSError, ValueError, EOFError) as exc:
            raise self._damaged(kind, key, name, exc) from None

    def load_json(self, kind: str, key: str, name: str):
        try:
            return json.loads((self.path(kind, key) / name).read_text())
        except (OSError, ValueError) as exc:
            raise self._damaged(kind, key, name, exc) from None

    def _damaged(self, kind: str, key: str, name: str, exc: Exception) -> InputError:
        return InputError(
            f"cannot read this artefact file ({type(exc).__name__}: {exc})",
            where=self.path(kind, key) / name,
            fix=f"delete the folder {self.path(kind, key)}: the next run writes it again",
        )

    def write(self, kind: str, key: str, files: dict[str, Callable[[Path], None]], manifest: dict) -> Path:
        """Write an artefact: each ``files[name](path)`` writes one file into a temporary folder,
        then the manifest, then one rename publishes the folder. Nothing half-written stays."""
        final = self.path(kind, key)
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".tmp-{key}-"))
        try:
            for name, writer in files.items():
                writer(tmp / name)
            record = {
                "kind": kind,
                "key": key,
                "created": dt.datetime.now(dt.UTC).isoformat(),
                "files": sorted(files),
                "sizes": {name: (tmp / name).stat().st_size for name in sorted(files)},
                "versions": versions(),
                **manifest,
            }
            atomic_write_json(tmp / MANIFEST, record)
            share_as_umask(tmp, folder=True)
            for name in files:
                share_as_umask(tmp / name)
            if final.exists() and not _whole(final):  # damaged (a file deleted or cut short): replace it
                shutil.rmtree(final, ignore_errors=True)
            try:
                os.rename(tmp, final)
            except OSError:  # another process published the same key first: keep theirs
                if not self.has(kind, key):
                    raise
                shutil.rmtree(tmp, ignore_errors=True)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return final

    def remove_stale_temporaries(self, max_age_s: float = STALE_SECONDS) -> list[Path]:
        """Delete the temporary folders of artefact writes whose process was killed (``.tmp-*``, not
        touched for ``max_age_s``); nothing reads them, but they take space. Returns what was removed."""
        now = time.time()
        stale = [p for p in self.root.glob("*/.tmp-*") if p.is_dir() and now - p.stat().st_mtime > max_age_s]
        for path in stale:
            shutil.rmtree(path, ignore_errors=True)
        return stale

    def write_table(self, study: str, name: str, table, params: dict, *, keys: list[str] | None = None) -> Path:
        """An analysis table of a study: ``analyses/<study>/<name>.parquet`` plus a ``.json`` manifest.

        With ``keys``, the new rows replace every stored row with the same values in the key
        columns; other rows stay (so analyses of different models accumulate). Rows carry the
        artefact keys they were computed from, so each number traces to a manifest.
        """
        path = self.table_path(study, name)
        folder = path.parent
        with locked(path):
            if keys is not None and path.is_file():
                try:
                    table = replace_rows(read_parquet_file(path), table, keys)
                except InputError as exc:  # rebuilt by the analyses that wrote it: start it again
                    print(f"warning: {exc.where} was damaged: written again with these rows only", file=sys.stderr)
            atomic_write_bytes(path, table.to_parquet(index=False))
            atomic_write_json(
                folder / f"{name}.json",
                {
                    "analysis": name,
                    "study": study,
                    "params": params,
                    "rows": len(table),
                    "created": dt.datetime.now(dt.UTC).isoformat(),
                    "versions": versions(),
                },
            )
        return path

    def read_table(self, study: str, name: str):
        path = self.table_path(study, name)
        return read_parquet_file(path) if path.is_file() else None

    def table_path(self, study: str, name: str) -> Path:
        """Where the analysis table ``name`` of a study lives: ``analyses/<study>/<name>.parquet``."""
        return self.root / "analyses" / study / f"{name}.parquet"

    def table_names(self, study: str, prefix: str = "") -> list[str]:
        """The names of the study's analysis tables that start with ``prefix``, sorted."""
        folder = self.root / "analyses" / study
        return sorted(p.stem for p in folder.glob(f"{prefix}*.parquet")) if folder.is_dir() else []

    def file_hash(self, path: str | Path) -> str:
        """sha256 of a file's bytes, remembered by (path, size, mtime) so big feature files hash once.

        New hashes stay in memory until ``save_file_hashes`` (called when a run succeeds), so a
        failed run leaves the cache folder exactly as it was.
        """
        path = Path(path).resolve()
        st = path.stat()
        memo = self._file_hashes()
        # ctime and the inode too: a user can restore a rewritten file's mtime, not its ctime
        stamp = f"{st.st_size}:{st.st_mtime_ns}:{st.st_ctime_ns}:{st.st_ino}"
        entry = memo.get(str(path))
        if entry and entry["stamp"] == stamp:
            return entry["sha256"]
        digest = sha256_file(path)
        memo[str(path)] = {"stamp": stamp, "sha256": digest}
        self._hashes_dirty = True
        return digest

    def _file_hashes(self) -> dict:
        if getattr(self, "_hashes", None) is None:
            self._hashes = read_json(self.root / FILE_HASHES, {})
            self._hashes_dirty = False
        return self._hashes

    def save_file_hashes(self) -> None:
        if getattr(self, "_hashes_dirty", False):
            path = self.root / FILE_HASHES
            with locked(path):  # another run may have remembered other files meanwhile
                self._hashes = {**read_json(path, {}), **self._hashes}
                atomic_write_json(path, self._hashes)
            self._hashes_dirty = False


def _whole(folder: Path) -> bool:
    """An artefact folder whose manifest reads and whose listed files all have their recorded sizes
    (artefacts written before sizes were recorded: all present)."""
    record = read_json(folder / MANIFEST, None)
    if not isinstance(record, dict):
        return False
    sizes = record.get("sizes") or {}
    for name in record.get("files", []):
        file = folder / name
        if not file.is_file() or (name in sizes and file.stat().st_size != sizes[name]):
            return False
    return True


def save_npy(array: np.ndarray) -> Callable[[Path], None]:
    return lambda path: np.save(path, array, allow_pickle=False)


def save_json(obj) -> Callable[[Path], None]:
    return lambda path: path.write_text(json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def replace_rows(old: pd.DataFrame, new: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """``old`` without the rows whose ``keys`` values occur in ``new``, then ``new``."""
    stale = old.set_index(keys).index.isin(new.set_index(keys).index)
    return pd.concat([old[~stale], new], ignore_index=True)
