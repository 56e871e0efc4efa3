"""The concept table: which concepts each image has, as a sparse binary matrix, each concept in one expert
group; read from long tables (image_id, concept, group) or a sparse matrix with its concept list."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .errors import InputError
from .tables import read_file, read_table


@dataclass(frozen=True)
class ConceptTable:
    """Sparse binary concepts, one column per concept, each concept in one expert group.

    matrix : csr_matrix of shape (n_images, n_concepts), dtype bool
    names, groups : tuple of str, length n_concepts
    """

    matrix: sp.csr_matrix
    names: tuple[str, ...]
    groups: tuple[str, ...]

    @property
    def group_names(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(self.groups))

    def canonical(self, groups) -> tuple[str, ...]:
        """The groups in the table's order, so one set of groups always has one name (``a+b``)."""
        chosen = set(groups)
        return tuple(g for g in self.group_names if g in chosen)

    def select(self, groups: tuple[str, ...] | list[str]) -> ConceptTable:
        """The columns of the given groups, in the table's column order."""
        known = self.group_names
        for g in groups:
            if g not in known:
                raise InputError(f"unknown concept group {g!r}", fix=f"choose from {list(known)}")
        column_group = np.asarray(self.groups, dtype=object)
        column_nnz = np.bincount(self.matrix.indices, weights=self.matrix.data, minlength=self.matrix.shape[1])
        for g in groups:
            if column_nnz[column_group == g].sum() == 0:
                raise InputError(
                    f"concept group {g!r} is empty: no image has any of its concepts",
                    fix="drop the group from the selection or check the labeller's output",
                )
        columns = np.flatnonzero(np.isin(column_group, list(groups)))
        return ConceptTable(
            self.matrix[:, columns].tocsr(),
            tuple(self.names[c] for c in columns),
            tuple(self.groups[c] for c in columns),
        )

    def content_hash(self) -> str:
        h = hashlib.sha256()
        m = self.matrix
        for arr in (np.asarray(m.shape, np.int64), m.indptr.astype(np.int64), m.indices.astype(np.int64)):
            h.update(arr.tobytes())
        h.update("\x00".join(self.names).encode())
        h.update("\x01".join(self.groups).encode())
        return h.hexdigest()


def read_concepts(spec: dict, root: Path, image_ids: np.ndarray, *, study_path: Path) -> ConceptTable:
    if "table" in spec or "tables" in spec:
        paths = [root / spec["table"]] if "table" in spec else [root / t for t in spec["tables"]]
        tables = [read_table(p) for p in paths]
        for table, table_path in zip(tables, paths):
            _check_filled_cells(table, table_path)
        source = paths[0] if len(paths) == 1 else ", ".join(str(p) for p in paths)
        try:
            return concepts_from_long_table(pd.concat(tables, ignore_index=True), image_ids, source=source)
        except InputError:
            for table, table_path in zip(tables, paths):  # foreign image ids: name the table that holds them
                if len(tables) > 1 and "image_id" in table.columns:
                    _check_image_ids(table["image_id"].astype(str), image_ids, table_path)
            raise
    if "matrix" in spec and "names" in spec:
        return _concepts_from_matrix(root / spec["matrix"], root / spec["names"], len(image_ids))
    raise InputError(
        "[concepts] needs `table` (or `tables`), or `matrix` and `names`",
        where=study_path,
        fix="see the study file format in the README",
    )


def concepts_from_long_table(
    table: pd.DataFrame, image_ids: np.ndarray, *, source: str | Path = "concepts"
) -> ConceptTable:
    """Build the sparse concept matrix from rows of (image_id, concept, group).

    Columns are ordered by (group, concept) so the matrix does not depend on row order;
    repeated (image, concept) rows count once.
    """
    missing = {"image_id", "concept", "group"} - set(table.columns)
    if missing:
        raise InputError(
            f"missing columns {sorted(missing)} (found {list(table.columns)})",
            where=source,
            fix="provide columns image_id, concept, group",
        )
    _check_filled_cells(table, source)
    table = table[["image_id", "concept", "group"]].astype(str)
    rows = _check_image_ids(table["image_id"], image_ids, source)
    groups_per_concept = table.groupby("concept")["group"].nunique()
    if (groups_per_concept > 1).any():
        name = groups_per_concept[groups_per_concept > 1].index[0]
        raise InputError(
            f"concept {name!r} belongs to several groups",
            where=source,
            fix="give each concept one group, or prefix names with their expert",
        )
    vocab = table.drop_duplicates("concept").sort_values(["group", "concept"])
    columns = pd.Index(vocab["concept"]).get_indexer(table["concept"])
    matrix = sp.csr_matrix(
        (np.ones(len(table), dtype=bool), (rows, columns)), shape=(len(image_ids), len(vocab)), dtype=bool
    )
    matrix.sum_duplicates()
    matrix.sort_indices()
    return ConceptTable(matrix, tuple(vocab["concept"]), tuple(vocab["group"]))


def _check_image_ids(ids: pd.Series, image_ids: np.ndarray, source: str | Path) -> np.ndarray:
    """The study row of each id; every id must be in the study's image table."""
    rows = pd.Index(image_ids).get_indexer(ids)
    if (rows < 0).any():
        unknown = ids[rows < 0]
        raise InputError(
            f"{unknown.nunique()} image ids are not in the study's image table (first: {unknown.iloc[0]!r})",
            where=source,
            fix="label exactly the study's images, using the same ids",
        )
    return rows


def _check_filled_cells(table: pd.DataFrame, source: str | Path) -> None:
    """Every image_id, concept and group cell of a concept table (long, or a matrix's names) holds a name."""
    for column in ("image_id", "concept", "group"):
        if column not in table.columns:
            continue
        cells = table[column]
        empty = np.flatnonzero(cells.isna().to_numpy() | (cells.astype(str).str.strip() == "").to_numpy())
        if len(empty):
            row = int(empty[0])
            place = f"line {row + 2}" if str(source).lower().endswith(".csv") else f"row {row}"  # line 1: header
            hint = (
                " (its expert's group, such as objects, scene, material, texture or other)" if column == "group" else ""
            )
            raise InputError(
                f"empty `{column}` cell in {place} ({len(empty)} empty in all)",
                where=source,
                fix=f"fill in every row's {column}{hint}",
            )


def _concepts_from_matrix(matrix_path: Path, names_path: Path, n_images: int) -> ConceptTable:
    matrix = read_file(matrix_path, sp.load_npz, what="sparse matrix", fix="save it with scipy.sparse.save_npz")
    names = read_table(names_path)
    if not {"concept", "group"} <= set(names.columns):
        raise InputError("needs columns concept, group", where=names_path, fix="one row per matrix column")
    _check_filled_cells(names, names_path)
    if matrix.shape != (n_images, len(names)):
        raise InputError(
            f"matrix shape {matrix.shape} does not match {n_images} images × "
            f"{len(names)} concepts in {names_path.name}",
            where=matrix_path,
            fix="one row per study image (in image-table order), one column per listed concept",
        )
    if names["concept"].duplicated().any():
        raise InputError(
            f"duplicate concept {names['concept'][names['concept'].duplicated()].iloc[0]!r}",
            where=names_path,
            fix="give every concept a unique name",
        )
    matrix = sp.csr_matrix(matrix, dtype=bool)
    matrix.eliminate_zeros()
    matrix.sort_indices()
    return ConceptTable(matrix, tuple(names["concept"].astype(str)), tuple(names["group"].astype(str)))


def add_label_concepts(concepts: ConceptTable, labels: np.ndarray, base_group: str) -> ConceptTable:
    """Ground-truth labels become one-hot concepts of the base group, placed first."""
    codes, classes = pd.factorize(labels, sort=True)  # np.unique's classes and codes; hashing, not sorting 1M strings
    onehot = sp.csr_matrix(
        (np.ones(len(labels), bool), (np.arange(len(labels)), codes)), shape=(len(labels), len(classes))
    )
    matrix = sp.hstack([onehot, concepts.matrix], format="csr", dtype=bool)
    matrix.sort_indices()
    names = tuple(f"[{base_group}] {c}" for c in classes) + concepts.names
    return ConceptTable(matrix, names, (base_group,) * len(classes) + concepts.groups)


def concept_files(spec: dict, root: Path) -> str:
    """The concept files of a study file's [concepts], for messages."""
    names = [spec["table"]] if "table" in spec else spec.get("tables") or [spec["names"]]
    return ", ".join(str(root / name) for name in names)
