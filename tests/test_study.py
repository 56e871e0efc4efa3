import shutil

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch
from safetensors.numpy import save_file

from qrp_core.concepts import concepts_from_long_table
from qrp_core.errors import InputError
from qrp_core.features import load_features
from qrp_core.study import load_study


@pytest.fixture
def study_dir(tiny_study_path, tmp_path):
    """A private copy of the tiny study that a test may break."""
    out = tmp_path / "study"
    shutil.copytree(tiny_study_path.parent, out)
    return out


def test_study_loads_with_labels_as_base_group(tiny_study):
    s = tiny_study
    assert s.n_images == 600 and list(s.models) == ["combo-net", "shape-net", "noise-net"]
    assert s.concepts.group_names[0] == "labels"
    assert set(s.concepts.group_names) == {"labels", "colour", "texture", "other"}
    assert s.concepts.matrix.shape == (600, len(s.concepts.names))
    labels = s.concepts.select(("labels",))
    assert (np.asarray(labels.matrix.sum(axis=1)).ravel() == 1).all()  # one label per image
    first = labels.names[labels.matrix[0].indices[0]]
    assert first == f"[labels] {s.labels[0]}"
    assert s.features("combo-net").shape == (600, 16)
    assert isinstance(s.features("combo-net"), np.memmap)  # .npy is memory-mapped, not read


def test_every_feature_format_loads_the_same_array(tiny_study, tmp_path):
    x = np.array(tiny_study.features("shape-net"))
    ids = tiny_study.image_ids
    np.savez(tmp_path / "f.npz", features=x, other=np.zeros(3))
    save_file({"features": x}, str(tmp_path / "f.safetensors"))
    torch.save({"features": torch.from_numpy(x)}, tmp_path / "f.pt")
    shuffled = np.random.default_rng(0).permutation(len(ids))  # Parquet rows are matched by image id
    frame = pd.DataFrame(x[shuffled], columns=[f"f{i}" for i in range(x.shape[1])])
    frame.insert(0, "image_id", ids[shuffled])
    frame.to_parquet(tmp_path / "f.parquet")
    for name in ("f.npz", "f.safetensors", "f.pt", "f.parquet"):
        np.testing.assert_array_equal(load_features(tmp_path / name, image_ids=ids), x, err_msg=name)


def test_long_table_order_and_sparse_matrix_give_the_same_concepts(tiny_study, study_dir):
    table = pd.read_parquet(study_dir / "concepts.parquet")
    shuffled = table.sample(frac=1.0, random_state=0)
    a = concepts_from_long_table(table, tiny_study.image_ids)
    b = concepts_from_long_table(pd.concat([shuffled, shuffled.head(10)]), tiny_study.image_ids)  # repeats
    assert a.names == b.names and (a.matrix != b.matrix).nnz == 0
    assert a.content_hash() == b.content_hash()
    table.to_csv(study_dir / "concepts.csv", index=False)
    sp.save_npz(study_dir / "concepts.npz", a.matrix)
    pd.DataFrame({"concept": a.names, "group": a.groups}).to_csv(study_dir / "names.csv", index=False)
    text = (study_dir / "study.toml").read_text()
    (study_dir / "csv.toml").write_text(text.replace("concepts.parquet", "concepts.csv"))
    (study_dir / "npz.toml").write_text(
        text.replace('table = "concepts.parquet"', 'matrix = "concepts.npz"\nnames = "names.csv"')
    )
    for variant in ("csv.toml", "npz.toml"):
        assert load_study(study_dir / variant).concepts.content_hash() == tiny_study.concepts.content_hash()


def _expect(study_path, pattern, model=None):
    with pytest.raises(InputError, match=pattern) as info:
        study = load_study(study_path)
        study.features(model or "combo-net")
    assert "Fix: " in str(info.value)


def test_feature_rows_disagreeing_with_images(study_dir):
    np.save(study_dir / "features" / "combo-net.npy", np.zeros((599, 16), np.float32))
    _expect(study_dir / "study.toml", r"combo-net.npy: 599 feature rows but the study has 600 images")


def test_unknown_image_ids_in_concepts(study_dir):
    table = pd.read_parquet(study_dir / "concepts.parquet")
    table.loc[0, "image_id"] = "nope"
    table.to_parquet(study_dir / "concepts.parquet")
    _expect(study_dir / "study.toml", r"concepts.parquet: 1 image ids are not in the study's image table .*'nope'")


def test_unknown_image_ids_are_blamed_on_the_table_that_holds_them(study_dir):
    table = pd.read_parquet(study_dir / "concepts.parquet")
    colour = table["group"] == "colour"
    table[~colour].to_parquet(study_dir / "rest.parquet")
    foreign = table[colour].copy()
    foreign.iloc[3, foreign.columns.get_loc("image_id")] = "elsewhere"
    foreign.to_parquet(study_dir / "colour.parquet")
    toml = study_dir / "study.toml"
    toml.write_text(
        toml.read_text().replace('table = "concepts.parquet"', 'tables = ["rest.parquet", "colour.parquet"]')
    )
    with pytest.raises(InputError, match="1 image ids are not in the study's image table") as info:
        load_study(toml)
    assert str(info.value).startswith(f"{study_dir / 'colour.parquet'}:"), str(info.value)


def test_duplicate_image_ids(study_dir):
    images = pd.read_csv(study_dir / "images.csv")
    images.loc[1, "image_id"] = images.loc[0, "image_id"]
    images.to_csv(study_dir / "images.csv", index=False)
    _expect(study_dir / "study.toml", r"images.csv: duplicate image id 'img0-000000'")


def test_truncated_feature_file(study_dir):
    path = study_dir / "features" / "combo-net.npy"
    path.write_bytes(path.read_bytes()[:1000])
    _expect(study_dir / "study.toml", r"combo-net.npy: cannot read features .*unreadable or truncated")


def test_truncated_concept_table(study_dir):
    path = study_dir / "concepts.parquet"
    path.write_bytes(path.read_bytes()[:200])
    _expect(study_dir / "study.toml", r"concepts.parquet: cannot read table")


def test_wrong_dtype(study_dir):
    np.save(study_dir / "features" / "combo-net.npy", np.zeros((600, 16), np.int64))
    _expect(study_dir / "study.toml", r"combo-net.npy: features must be floating point, got dtype int64")


def test_unknown_model(study_dir):
    _expect(study_dir / "study.toml", r"study.toml: unknown model 'resnet'\. Fix: .*combo-net", model="resnet")


def test_empty_and_unknown_groups(tiny_study):
    with pytest.raises(InputError, match="unknown concept group 'scene'"):
        tiny_study.concepts.select(("labels", "scene"))
    table = concepts_from_long_table(
        pd.DataFrame({"image_id": ["a", "b"], "concept": ["x", "y"], "group": "g"}),
        np.array(["a", "b", "c"], dtype=object),
    )
    empty = type(table)(table.matrix.multiply(0).tocsr(), table.names, table.groups)
    with pytest.raises(InputError, match="concept group 'g' is empty"):
        empty.select(("g",))


def test_concept_in_two_groups(tiny_study):
    table = pd.DataFrame({"image_id": ["img0-000000", "img0-000001"], "concept": ["x", "x"], "group": ["a", "b"]})
    with pytest.raises(InputError, match="concept 'x' belongs to several groups"):
        concepts_from_long_table(table, tiny_study.image_ids, source="c.csv")


@pytest.mark.parametrize("suffix, place", [(".csv", "line 7"), (".parquet", "row 5")])
def test_an_empty_group_cell_is_named_with_its_file_and_row(study_dir, suffix, place):
    table = pd.read_parquet(study_dir / "concepts.parquet")
    table.loc[5, "group"] = "" if suffix == ".csv" else None
    getattr(table, "to_csv" if suffix == ".csv" else "to_parquet")(study_dir / f"broken{suffix}", index=False)
    text = (study_dir / "study.toml").read_text().replace("concepts.parquet", f"broken{suffix}")
    (study_dir / "study.toml").write_text(text)
    _expect(
        study_dir / "study.toml",
        rf"broken\{suffix}: empty `group` cell in {place} \(1 empty in all\)\. "
        r"Fix: fill in every row's group",
    )


def test_a_missing_feature_file_is_reported_when_the_model_is_chosen(study_dir):
    (study_dir / "features" / "shape-net.npy").unlink()
    study = load_study(study_dir / "study.toml")  # the other models stay usable
    assert study.model("combo-net").features.name == "combo-net.npy"
    with pytest.raises(InputError, match=r"shape-net.npy: feature file not found\. Fix: "):
        study.model("shape-net")


def test_missing_study_keys_and_bad_toml(tmp_path):
    (tmp_path / "a.toml").write_text('name = "x"\n')
    with pytest.raises(InputError, match=r"a.toml: missing `images`"):
        load_study(tmp_path / "a.toml")
    (tmp_path / "b.toml").write_text("name = \n")
    with pytest.raises(InputError, match=r"b.toml: not valid TOML"):
        load_study(tmp_path / "b.toml")


def test_concept_groups_summary_equals_a_dense_count(tiny_study):
    from qrp_core.browse import concept_groups

    table = concept_groups(tiny_study).set_index("group")
    dense = tiny_study.concepts.matrix.toarray() != 0
    groups = np.asarray(tiny_study.concepts.groups)
    for group in tiny_study.concepts.group_names:
        columns = np.flatnonzero(groups == group)
        assert table.loc[group, "concepts"] == len(columns)
        assert table.loc[group, "images with any (%)"] == pytest.approx(100 * dense[:, columns].any(1).mean())
        most = columns[np.argmax(dense[:, columns].sum(0))]
        assert table.loc[group, "most frequent"].split(", ")[0] == tiny_study.concepts.names[most].split("] ", 1)[-1]


def test_long_table_columns_are_ordered_by_group_then_concept_and_repeats_count_once():
    ids = np.array(["a", "b", "c"], dtype=object)
    table = pd.DataFrame(
        {
            "image_id": ["a", "b", "a", "c", "a", "b"],
            "concept": ["zeta", "beta", "alpha", "zeta", "zeta", "beta"],
            "group": ["alpha", "omega", "alpha", "alpha", "alpha", "omega"],
        }
    )
    concepts = concepts_from_long_table(table, ids)
    assert concepts.names == ("alpha", "zeta", "beta") and concepts.groups == ("alpha", "alpha", "omega")
    assert concepts.group_names == ("alpha", "omega")
    np.testing.assert_array_equal(concepts.matrix.toarray(), [[1, 1, 0], [0, 0, 1], [0, 1, 0]])
    assert concepts.matrix.nnz == 4 and concepts.matrix.dtype == bool
    assert concepts.canonical(["omega", "alpha"]) == ("alpha", "omega")
    selected = concepts.select(("omega", "alpha"))
    assert selected.names == concepts.names  # both groups, in the table's column order


def _small_study(root, *, concepts, base_group=None, models=""):
    """A three-image study with labels, the given long concept table and a 2-D feature file."""
    root.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"image_id": ["i0", "i1", "i2"], "label": ["dog", "cat", "dog"]}).to_csv(
        root / "images.csv", index=False
    )
    concepts.to_csv(root / "concepts.csv", index=False)
    np.save(root / "f.npy", np.arange(6, dtype=np.float32).reshape(3, 2))
    head = f'base_group = "{base_group}"\n' if base_group else ""
    (root / "study.toml").write_text(
        f'name = "small"\nimages = "images.csv"\n{head}[concepts]\n'
        f'table = "concepts.csv"\n[models.m]\nfeatures = "f.npy"\n{models}'
    )
    return root / "study.toml"


def test_labels_become_the_base_group_named_in_the_study_file(tmp_path):
    concepts = pd.DataFrame({"image_id": ["i0", "i2"], "concept": ["red", "blue"], "group": ["colour", "colour"]})
    study = load_study(_small_study(tmp_path / "a", concepts=concepts, base_group="shapes"))
    assert study.base_group == "shapes"
    assert study.concepts.group_names == ("shapes", "colour")  # the labels first, whatever their name
    assert study.concepts.canonical(["colour", "shapes"]) == ("shapes", "colour")
    assert study.concepts.names == ("[shapes] cat", "[shapes] dog", "blue", "red")
    np.testing.assert_array_equal(study.concepts.matrix.toarray(), [[0, 1, 0, 1], [1, 0, 0, 0], [0, 1, 1, 0]])
    # where the concept table already has the base group, the labels are not added a second time
    given = pd.concat([concepts, pd.DataFrame({"image_id": ["i1"], "concept": ["[labels] own"], "group": ["labels"]})])
    study = load_study(_small_study(tmp_path / "b", concepts=given))
    assert study.concepts.names == ("blue", "red", "[labels] own")
    assert study.concepts.group_names == ("colour", "labels")


def test_given_cluster_ids_are_matched_by_image_id_and_coded_from_zero(tmp_path):
    concepts = pd.DataFrame({"image_id": ["i0"], "concept": ["red"], "group": ["colour"]})
    models = '[models.table]\nassignments = "clusters.csv"\n[models.array]\nassignments = "clusters.npy"\n'
    path = _small_study(tmp_path, concepts=concepts, models=models)
    pd.DataFrame({"image_id": ["i2", "i0", "i1"], "cluster": ["zebra", "ant", "zebra"]}).to_csv(
        tmp_path / "clusters.csv", index=False
    )
    np.save(tmp_path / "clusters.npy", np.array([9, 5, 9]))
    study = load_study(path)
    np.testing.assert_array_equal(study.cluster_ids("table"), [0, 1, 1])  # i0: ant, i1 and i2: zebra
    np.testing.assert_array_equal(study.cluster_ids("array"), [1, 0, 1])  # ids 5, 9 -> codes 0, 1
    assert study.cluster_ids("array").dtype == np.int32


def test_container_files_pick_the_features_array_by_name(tiny_study, tmp_path):
    x = np.array(tiny_study.features("shape-net"))
    ids = tiny_study.image_ids
    np.savez(tmp_path / "two.npz", a_mean=x.mean(0), embeddings=x)
    np.testing.assert_array_equal(load_features(tmp_path / "two.npz", image_ids=ids), x)
    np.testing.assert_array_equal(load_features(tmp_path / "two.npz", image_ids=ids, key="embeddings"), x)
    with pytest.raises(InputError, match=r"no array named 'feats'; the file holds \['a_mean', 'embeddings'\]"):
        load_features(tmp_path / "two.npz", image_ids=ids, key="feats")
    np.savez(tmp_path / "anon.npz", b=x, c=x)
    with pytest.raises(InputError, match=r"several arrays \['b', 'c'\] and none is named 'features'"):
        load_features(tmp_path / "anon.npz", image_ids=ids)
    torch.save({"extra": torch.zeros(3), "feats": torch.from_numpy(x).bfloat16()}, tmp_path / "bf16.pt")
    loaded = load_features(tmp_path / "bf16.pt", image_ids=ids)
    assert loaded.dtype == np.float32
    np.testing.assert_array_equal(loaded, torch.from_numpy(x).bfloat16().float().numpy())


def test_parquet_features_are_matched_by_image_id(tiny_study, tmp_path):
    x = np.array(tiny_study.features("shape-net"))
    ids = tiny_study.image_ids
    order = np.random.default_rng(1).permutation(len(ids))
    pd.DataFrame({"image_id": ids[order], "features": list(x[order])}).to_parquet(tmp_path / "list.parquet")
    np.testing.assert_array_equal(load_features(tmp_path / "list.parquet", image_ids=ids), x)  # one list column
    frame = pd.DataFrame(x, columns=[f"f{i}" for i in range(x.shape[1])]).assign(image_id=ids)
    frame.drop(index=[3, 7]).to_parquet(tmp_path / "missing.parquet")
    with pytest.raises(InputError, match=rf"2 study images have no feature row \(first: '{ids[3]}'\)"):
        load_features(tmp_path / "missing.parquet", image_ids=ids)
    pd.concat([frame, frame.iloc[[5]]]).to_parquet(tmp_path / "twice.parquet")
    with pytest.raises(InputError, match=rf"image id '{ids[5]}' appears more than once"):
        load_features(tmp_path / "twice.parquet", image_ids=ids)
