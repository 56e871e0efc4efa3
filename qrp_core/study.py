"""The study: one image collection, its representations and its concept table.

A study file (TOML) ties the parts together; paths are relative to the file's folder::

    name = "my-study"
    images = "images.csv"          # image_id, optional path, optional label
    base_group = "labels"          # group given to the ground-truth labels, if any

    [concepts]
    table = "concepts.parquet"     # long table: image_id, concept, group (Parquet or CSV)
    # or several, concatenated (e.g. one per expert): tables = ["gt.parquet", "experts/colour.parquet"]
    # or a sparse matrix and its concept list:
    # matrix = "concepts.npz"      # scipy.sparse.save_npz, (n_images, n_concepts), rows in image order
    # names = "concepts.csv"       # concept, group; one row per matrix column

    [models.mocov2]
    features = "features/mocov2.npy"
    architecture = "ResNet-50"     # optional metadata, shown by the ranking views
    family = "contrastive"
    epochs = 800
    linear_acc = 71.1
"""

from __future__ import annotations

import hashlib
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .errors import InputError
from .features import load_features

DEFAULT_BASE_GROUP = "labels"
MODEL_METADATA = ("architecture", "family", "epochs", "linear_acc", "network", "layer")


GROUND_TRUTH = "ground-truth"  # the pseudo-model whose clusters are the ground-truth labels (appendix D.1)


@dataclass(frozen=True)
class ModelSpec:
    """One representation of the study's images: features to cluster, or ready-made cluster ids.

    ``assignments`` replaces K-means with given cluster ids (a self-labelling method's own labels,
    paper Table 6): ``.npy`` of shape (n_images,) in image order, or CSV/Parquet with columns
    ``image_id, cluster``.
    """

    name: str
    features: Path | None = None
    key: str | None = None  # array name inside .npz/.safetensors/.pt containers
    assignments: Path | None = None
    metadata: dict = field(default_factory=dict)  # architecture, family, epochs, linear_acc, layer

    @property
    def has_features(self) -> bool:
        return self.features is not None

    def load(self, image_ids: np.ndarray) -> np.ndarray:
        return load_features(self.features, image_ids=image_ids, key=self.key)


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


@dataclass(frozen=True)
class Study:
    """A study: images, their concepts grouped by expert, and the models whose representations are measured.

    Made by ``load_study``; features are read only when a model is asked for.

    Attributes
    ----------
    name : str
        Names the study's results table and analyses in the cache.
    path : Path
        The study file.
    image_ids : ndarray of shape (n_images,), object (str)
    image_paths, labels : ndarray of shape (n_images,), object, or None
        Image files (relative to the study file's folder) and ground-truth labels, where the table has them.
    concepts : ConceptTable
        ``matrix``, a sparse (n_images, n_concepts) binary CSR matrix, with each concept's name and group.
    models : dict of str to ModelSpec
    base_group : str
        The group that the ground-truth labels become.

    Examples
    --------
    >>> from qrp_core.demos.synthetic import make_synthetic_study
    >>> from qrp_core.study import load_study
    >>> study = load_study(make_synthetic_study("doc-study", n_images=300, dim=8))
    >>> study.n_images, sorted(study.models)
    (300, ['combo-net', 'noise-net', 'shape-net'])
    >>> study.concepts.group_names
    ('labels', 'colour', 'other', 'texture')
    >>> study.features("combo-net").shape
    (300, 8)
    """

    name: str
    path: Path
    image_ids: np.ndarray  # (n_images,) object array of str
    image_paths: np.ndarray | None
    labels: np.ndarray | None
    concepts: ConceptTable
    models: dict[str, ModelSpec]
    base_group: str = DEFAULT_BASE_GROUP

    @property
    def n_images(self) -> int:
        return len(self.image_ids)

    def model(self, name: str, *, check_files: bool = True) -> ModelSpec:
        """The model of this name; with ``check_files``, its feature file must exist (checked when a run
        selects it, before the file is hashed for the cache keys)."""
        if name == GROUND_TRUTH and self.labels is not None and name not in self.models:
            return ModelSpec(name=GROUND_TRUTH, metadata={"family": "ground truth"})
        if name not in self.models:
            extra = f" (or {GROUND_TRUTH!r}, when the image table has labels)"
            raise InputError(
                f"unknown model {name!r}",
                where=self.path,
                fix=f"choose from {sorted(self.models)}{extra} or add a [models.{name}] table",
            )
        spec = self.models[name]
        if check_files and spec.features is not None and not spec.features.is_file():
            raise InputError(
                "feature file not found",
                where=spec.features,
                fix="check the path in the study file (relative paths start at the study file's folder)",
            )
        return spec

    def features(self, name: str) -> np.ndarray:
        return self.model(name).load(self.image_ids)

    def cluster_ids(self, name: str) -> np.ndarray:
        """Given cluster ids of a model without features, as int32 codes 0..K-1 in image order."""
        spec = self.model(name)
        if spec.name == GROUND_TRUTH and spec.assignments is None:
            return np.unique(self.labels, return_inverse=True)[1].astype(np.int32)
        return load_assignments(spec.assignments, self.image_ids)


def load_study(path: str | Path) -> Study:
    """Read and validate a study file and everything it names except the features.

    Features are validated when a model is loaded (``Study.features``), so a study of many
    large models opens in a moment.

    Parameters
    ----------
    path : str or Path
        A study .toml file (README: Measuring your own models); its relative paths start at its folder.

    Returns
    -------
    Study

    Raises
    ------
    InputError
        A missing or unreadable file, ids that disagree, an empty or unknown group, ...: the message names
        the file, the problem and the fix.

    Examples
    --------
    >>> from qrp_core.demos.synthetic import make_synthetic_study
    >>> from qrp_core.study import load_study
    >>> study = load_study(make_synthetic_study("doc-load", n_images=300, dim=8))
    >>> study.name, study.concepts.matrix.shape
    ('synthetic-300', (300, 27))
    >>> load_study("no-such-study.toml")
    Traceback (most recent call last):
    ...
    qrp_core.errors.InputError: no-such-study.toml: study file not found. Fix: pass the path of a study .toml file
    """
    path = Path(path)
    if not path.is_file():
        raise InputError("study file not found", where=path, fix="pass the path of a study .toml file")
    try:
        spec = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"not valid TOML ({exc})", where=path, fix="correct the study file's syntax") from None
    root = path.parent
    for required in ("images", "concepts", "models"):
        if required not in spec:
            raise InputError(f"missing `{required}`", where=path, fix="see the study file format in the README")
    base_group = spec.get("base_group", DEFAULT_BASE_GROUP)
    images = _read_images(root / spec["images"])
    image_ids = images["image_id"].to_numpy(dtype=object)
    labels = images["label"].astype(str).to_numpy(dtype=object) if "label" in images else None
    paths = images["path"].astype(str).to_numpy(dtype=object) if "path" in images else None
    concepts = _read_concepts(spec["concepts"], root, image_ids, study_path=path)
    if labels is not None and base_group not in concepts.group_names:
        concepts = _add_label_concepts(concepts, labels, base_group)
    models = {}
    for name, entry in spec["models"].items():
        if ("features" in entry) == ("assignments" in entry):
            raise InputError(
                f"model {name!r} needs exactly one of `features` and `assignments`",
                where=path,
                fix=f'add features = "path/to/{name}.npy" under [models.{name}]',
            )
        models[name] = ModelSpec(
            name=name,
            features=root / entry["features"] if "features" in entry else None,
            key=entry.get("key"),
            assignments=root / entry["assignments"] if "assignments" in entry else None,
            metadata={k: entry[k] for k in MODEL_METADATA if k in entry},
        )
    if not models:
        raise InputError("the study has no models", where=path, fix="add at least one [models.NAME] table")
    return Study(
        name=spec.get("name", path.stem),
        path=path,
        image_ids=image_ids,
        image_paths=paths,
        labels=labels,
        concepts=concepts,
        models=models,
        base_group=base_group,
    )


def _read_table(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise InputError("file not found", where=path, fix="check the path in the study file")
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


def _read_images(path: Path) -> pd.DataFrame:
    images = _read_table(path)
    if "image_id" not in images.columns:
        raise InputError(
            f"no `image_id` column (columns: {list(images.columns)})", where=path, fix="name the id column `image_id`"
        )
    images["image_id"] = images["image_id"].astype(str)
    if len(images) == 0:
        raise InputError("the image table is empty", where=path, fix="list the study's images")
    duplicated = images["image_id"].duplicated()
    if duplicated.any():
        raise InputError(
            f"duplicate image id {images['image_id'][duplicated].iloc[0]!r} ({int(duplicated.sum())} duplicates)",
            where=path,
            fix="give every image a unique id",
        )
    return images.reset_index(drop=True)


def _read_concepts(spec: dict, root: Path, image_ids: np.ndarray, *, study_path: Path) -> ConceptTable:
    if "table" in spec or "tables" in spec:
        paths = [root / spec["table"]] if "table" in spec else [root / t for t in spec["tables"]]
        tables = [_read_table(p) for p in paths]
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
    try:
        matrix = sp.load_npz(matrix_path)
    except FileNotFoundError:
        raise InputError("file not found", where=matrix_path, fix="check the path in the study file") from None
    except Exception as exc:
        raise InputError(
            f"cannot read sparse matrix ({type(exc).__name__}: {exc})",
            where=matrix_path,
            fix="save it with scipy.sparse.save_npz",
        ) from None
    names = _read_table(names_path)
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


def _add_label_concepts(concepts: ConceptTable, labels: np.ndarray, base_group: str) -> ConceptTable:
    """Ground-truth labels become one-hot concepts of the base group, placed first."""
    classes, codes = np.unique(labels, return_inverse=True)
    onehot = sp.csr_matrix(
        (np.ones(len(labels), bool), (np.arange(len(labels)), codes)), shape=(len(labels), len(classes))
    )
    matrix = sp.hstack([onehot, concepts.matrix], format="csr", dtype=bool)
    matrix.sort_indices()
    names = tuple(f"[{base_group}] {c}" for c in classes) + concepts.names
    return ConceptTable(matrix, names, (base_group,) * len(classes) + concepts.groups)


def load_assignments(path: Path, image_ids: np.ndarray) -> np.ndarray:
    """Cluster ids from ``.npy`` (image order) or a table with ``image_id, cluster``, as codes 0..K-1."""
    if path.suffix.lower() == ".npy":
        try:
            raw = np.load(path, allow_pickle=False)
        except FileNotFoundError:
            raise InputError("file not found", where=path, fix="check the path in the study file") from None
        except Exception as exc:
            raise InputError(
                f"cannot read assignments ({type(exc).__name__}: {exc})",
                where=path,
                fix="save a 1-D integer array with numpy.save",
            ) from None
        if raw.shape != (len(image_ids),):
            raise InputError(
                f"assignments of shape {raw.shape}, expected ({len(image_ids)},)",
                where=path,
                fix="one cluster id per study image, in image-table order",
            )
    else:
        table = _read_table(path)
        if not {"image_id", "cluster"} <= set(table.columns):
            raise InputError(
                f"needs columns image_id, cluster (found {list(table.columns)})",
                where=path,
                fix="one row per image with its cluster id",
            )
        table = table.set_index(table["image_id"].astype(str))
        missing = ~pd.Index(image_ids).isin(table.index)
        if missing.any():
            raise InputError(
                f"{int(missing.sum())} study images have no cluster (first: {image_ids[missing][0]!r})",
                where=path,
                fix="assign every study image to a cluster",
            )
        raw = table.loc[list(image_ids), "cluster"].astype(str).to_numpy()
    return np.unique(raw, return_inverse=True)[1].astype(np.int32)
