"""Readable names for class folders: WordNet ids (``n01440764``) become ImageNet's class names (``tench``), or
a table the user gives maps ids to names. The image table keeps the folder's id beside the name."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .errors import InputError
from .tables import read_table

IMAGENET_CLASS_FILE = Path(__file__).parent / "experts" / "imagenet_classes.tsv"  # synset id, WordNet lemmas
WORDNET_ID = re.compile(r"n\d{8}")


def imagenet_classes() -> dict[str, str]:
    """The 1,000 ImageNet-1k synset ids, sorted (the classifiers' output order), each with its readable name:
    WordNet's first lemma; the two that repeat (crane the bird and the machine, maillot) carry their second
    lemma or synset id."""
    synsets, lemmas = zip(*(line.rstrip("\n").split("\t") for line in IMAGENET_CLASS_FILE.read_text().splitlines()))
    first = [lemma.split(", ")[0] for lemma in lemmas]
    repeated = {name for name, count in Counter(first).items() if count > 1}
    names = {}
    for synset, lemma, name in zip(synsets, lemmas, first):
        others = lemma.split(", ")[1:]
        names[synset] = f"{name} ({others[0] if others else synset})" if name in repeated else name
    return names


def read_label_names(path: str | Path) -> dict[str, str]:
    """An ``id,name`` table (CSV or Parquet) as a dict; ids must be unique."""
    table = read_table(Path(path))
    if not {"id", "name"} <= set(table.columns):
        raise InputError(
            f"needs columns `id` and `name` (found {list(table.columns)})",
            where=path,
            fix="write one row per class: id,name",
        )
    ids = table["id"].astype(str)
    if ids.duplicated().any():
        raise InputError(f"id {ids[ids.duplicated()].iloc[0]!r} appears twice", where=path, fix="name each class once")
    return dict(zip(ids, table["name"].astype(str)))


def readable_labels(
    labels: Sequence[str], names: dict[str, str] | None = None, *, source: str | Path = ""
) -> np.ndarray:
    """Each label's name: from ``names`` when given (every label must be in it), else ImageNet's name for a
    WordNet id, else the label itself."""
    if names is not None:
        missing = sorted(set(labels) - set(names))
        if missing:
            raise InputError(
                f"{len(missing)} class folder(s) have no name (first: {missing[0]!r})",
                where=source,
                fix="add a row id,name for each class folder",
            )
        return np.array([names[label] for label in labels], dtype=object)
    if any(WORDNET_ID.fullmatch(label) for label in set(labels)):
        wordnet = imagenet_classes()
        return np.array([wordnet.get(label, label) for label in labels], dtype=object)
    return np.array(labels, dtype=object)
