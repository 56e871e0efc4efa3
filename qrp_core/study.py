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

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from .concepts import ConceptTable, add_label_concepts, concept_files, read_concepts
from .errors import InputError, missing_file
from .features import load_features
from .study_file import MODEL_METADATA, check_group_name, read_study_file
from .tables import read_file, read_table

DEFAULT_BASE_GROUP = "labels"


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
            raise missing_file(
                spec.features,
                what="feature file",
                fix="check the path in the study file (relative paths start at its folder)",
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
    spec = read_study_file(path)
    root = path.parent
    base_group = spec.get("base_group", DEFAULT_BASE_GROUP)
    images = _read_images(root / spec["images"])
    image_ids = images["image_id"].to_numpy(dtype=object)
    labels = images["label"].astype(str).to_numpy(dtype=object) if "label" in images else None
    if labels is not None and (blank := np.flatnonzero(images["label"].astype(str).str.strip().eq(""))).size:
        raise InputError(
            f"{blank.size} image(s) have an empty `label` cell (first: {image_ids[blank[0]]!r}); they would form "
            "a class named ''",
            where=root / spec["images"],
            fix="give every image its label, or drop the label column",
        )
    paths = images["path"].astype(str).to_numpy(dtype=object) if "path" in images else None
    concepts = read_concepts(spec["concepts"], root, image_ids, study_path=path)
    for group in concepts.group_names:
        check_group_name(group, where=concept_files(spec["concepts"], root))
    if labels is not None and base_group not in concepts.group_names:
        concepts = add_label_concepts(concepts, labels, base_group)
    if concepts.matrix.nnz == 0:
        raise InputError(
            "no image has any concept: the concept tables hold no row (and the image table no label)",
            where=concept_files(spec["concepts"], root),
            fix="label the images with experts (`python -m qrp_core label`) or add a label column to the image table",
        )
    models = {}
    for name, entry in spec["models"].items():
        models[name] = ModelSpec(
            name=name,
            features=root / entry["features"] if "features" in entry else None,
            key=entry.get("key"),
            assignments=root / entry["assignments"] if "assignments" in entry else None,
            metadata={k: entry[k] for k in MODEL_METADATA if k in entry},
        )
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


def _read_images(path: Path) -> pd.DataFrame:
    images = read_table(path)
    if "image_id" not in images.columns:
        raise InputError(
            f"no `image_id` column (columns: {list(images.columns)})", where=path, fix="name the id column `image_id`"
        )
    images["image_id"] = images["image_id"].astype(str)
    if len(images) == 0:
        raise InputError("the image table is empty", where=path, fix="list the study's images")
    duplicated = images["image_id"].duplicated() if not images["image_id"].is_unique else None
    if duplicated is not None:
        raise InputError(
            f"duplicate image id {images['image_id'][duplicated].iloc[0]!r} ({int(duplicated.sum())} duplicates)",
            where=path,
            fix="give every image a unique id",
        )
    return images.reset_index(drop=True)


def load_assignments(path: Path, image_ids: np.ndarray) -> np.ndarray:
    """Cluster ids from ``.npy`` (image order) or a table with ``image_id, cluster``, as codes 0..K-1."""
    if path.suffix.lower() == ".npy":
        raw = read_file(
            path,
            lambda p: np.load(p, allow_pickle=False),
            what="assignments",
            fix="save a 1-D integer array with numpy.save",
        )
        if raw.shape != (len(image_ids),):
            raise InputError(
                f"assignments of shape {raw.shape}, expected ({len(image_ids)},)",
                where=path,
                fix="one cluster id per study image, in image-table order",
            )
    else:
        table = read_table(path)
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
