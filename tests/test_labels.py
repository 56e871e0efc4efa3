"""Class folders get readable names: WordNet ids by ImageNet's names, others by a table the user gives."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from qrp_core.cli import main
from qrp_core.errors import InputError
from qrp_core.labels import imagenet_classes, read_label_names, readable_labels


def test_wordnet_ids_become_imagenet_names_and_other_folders_stay():
    classes = imagenet_classes()
    assert len(classes) == 1000 and list(classes) == sorted(classes)
    assert classes["n01440764"] == "tench" and classes["n03888257"] == "parachute"
    assert len(set(classes.values())) == 1000  # the repeated lemmas are told apart
    assert readable_labels(["n01440764", "n03000684", "cats"]).tolist() == ["tench", "chain saw", "cats"]
    assert readable_labels(["cat", "dog"]).tolist() == ["cat", "dog"]


def test_a_names_table_must_name_every_folder(tmp_path):
    table = tmp_path / "names.csv"
    pd.DataFrame({"id": ["0", "1"], "name": ["airplane", "automobile"]}).to_csv(table, index=False)
    names = read_label_names(table)
    assert readable_labels(["1", "0", "1"], names).tolist() == ["automobile", "airplane", "automobile"]
    with pytest.raises(InputError, match=r"1 class folder\(s\) have no name \(first: '2'\)"):
        readable_labels(["0", "2"], names, source=table)
    pd.DataFrame({"id": ["0", "0"], "name": ["a", "b"]}).to_csv(tmp_path / "twice.csv", index=False)
    with pytest.raises(InputError, match="id '0' appears twice"):
        read_label_names(tmp_path / "twice.csv")
    pd.DataFrame({"class": ["0"], "label": ["a"]}).to_csv(tmp_path / "columns.csv", index=False)
    with pytest.raises(InputError, match="needs columns `id` and `name`"):
        read_label_names(tmp_path / "columns.csv")


def test_extract_writes_names_and_keeps_the_folder_id(tmp_path, capsys):
    rng = np.random.default_rng(0)
    for folder in ("n01440764", "n02102040"):
        (tmp_path / "photos" / folder).mkdir(parents=True)
        Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(tmp_path / "photos" / folder / "a.png")
    argv = ["extract", "--source", "pixels", "--images", str(tmp_path / "photos")]
    assert main([*argv, "--out", str(tmp_path / "wordnet")]) == 0
    table = pd.read_csv(tmp_path / "wordnet" / "images.csv")
    assert table["label"].tolist() == ["tench", "English springer"]
    assert table["label_id"].tolist() == ["n01440764", "n02102040"]
    pd.DataFrame({"id": ["n01440764", "n02102040"], "name": ["fish", "dog"]}).to_csv(tmp_path / "n.csv", index=False)
    assert main([*argv, "--out", str(tmp_path / "named"), "--label-names", str(tmp_path / "n.csv")]) == 0
    assert pd.read_csv(tmp_path / "named" / "images.csv")["label"].tolist() == ["fish", "dog"]
