import dataclasses
import hashlib
import shutil

import faiss
import numpy as np
import pytest
import torch
from sklearn import metrics as skm

import qrp_core.pipeline as pipeline
from conftest import TINY_RUN
from qrp_core.cache import Cache
from qrp_core.pipeline import Runner
from qrp_core.probe import probe_logits
from qrp_core.quantize import resolve_backend
from qrp_core.results import load_probe, load_results, ranking
from qrp_core.split import TEST
from qrp_core.study import load_study


def test_results_table_covers_the_grid(tiny_cache, tiny_study):
    cache, results = tiny_cache
    assert len(results) == 3 * 1 * 2  # models x K x seeds, one group set
    assert set(results["groups"]) == {"+".join(tiny_study.concepts.group_names)}
    stored = load_results(cache, tiny_study)
    stored = stored[stored["groups"] == results["groups"].iloc[0]]  # other tests add ablation rows
    assert (
        stored[["model", "seed", "nmi"]].sort_values(["model", "seed"]).values.tolist()
        == results[["model", "seed", "nmi"]].sort_values(["model", "seed"]).values.tolist()
    )


def test_every_number_is_reproducible_from_its_artefacts(tiny_cache, tiny_study):
    cache, results = tiny_cache
    for row in results.itertuples():
        assignments = cache.load_array("clusterings", row.clustering, "assignments.npy")
        split = cache.load_array("splits", row.split, "split.npy")
        probe = load_probe(cache, row.probe)
        columns = [tiny_study.concepts.names.index(n) for n in probe["names"]]
        logits = probe_logits(probe["weight"], probe["bias"], tiny_study.concepts.matrix[:, columns])
        test = split == TEST
        predicted = logits[test].argmax(1)
        assert row.nmi == pytest.approx(skm.normalized_mutual_info_score(assignments[test], predicted), abs=1e-9)
        assert row.ami == pytest.approx(skm.adjusted_mutual_info_score(assignments[test], predicted), abs=1e-9)
        assert row.top1 == pytest.approx(np.mean(predicted == assignments[test]))
        np.testing.assert_array_equal(cache.load_array("probes", row.probe, "predictions.npy"), logits.argmax(1))


def test_manifests_record_how_each_artefact_was_made(tiny_cache, tiny_study):
    cache, results = tiny_cache
    row = results.iloc[0]
    m = cache.manifest("clusterings", row["clustering"])
    features = tiny_study.model(row["model"]).features
    assert m["inputs"]["features_sha256"] == hashlib.sha256(features.read_bytes()).hexdigest()
    assert m["params"]["n_clusters"] == 8 and m["params"]["seed"] == row["seed"]
    assert m["stats"]["iterations_run"] == [10, 10]  # forced: every iteration ran
    assert len(m["stats"]["restarts"]) == 2 and m["stats"]["device"] == resolve_backend("auto")[1]
    assert {"torch", "faiss", "numpy", "scikit-learn", "python"} <= set(m["versions"])
    assert (m["versions"]["torch"], m["versions"]["faiss"]) == (torch.__version__, faiss.__version__)
    p = cache.manifest("probes", row["probe"])
    assert p["params"]["lr"] == 3.5 and p["params"]["max_epochs"] == 15
    assert len(p["stats"]["history"]) == 16 and 0 <= p["stats"]["best_epoch"] <= 15  # epoch 0: the marginal
    assert p["stats"]["lr_milestones"] == [9, 12]  # 60% and 80% of 15 epochs
    assert p["inputs"]["clustering"] == row["clustering"]
    assert p["metrics"]["nmi"] == row["nmi"]


def test_rerun_reuses_the_cache(tiny_cache, tiny_study, monkeypatch):
    cache, results = tiny_cache

    def fail(*args, **kwargs):
        raise AssertionError("recomputed a cached artefact")

    monkeypatch.setattr(pipeline, "kmeans", fail)
    monkeypatch.setattr(pipeline, "train_probes", fail)
    again = Runner(tiny_study, TINY_RUN, cache, show_progress=False).run()
    assert again["nmi"].tolist() == results["nmi"].tolist()


def test_changed_features_recompute_and_same_inputs_give_identical_numbers(tiny_study_path, tiny_cache, tmp_path):
    _, results = tiny_cache
    copy = tmp_path / "study"
    shutil.copytree(tiny_study_path.parent, copy)
    study = load_study(copy / "study.toml")
    cache = Cache(tmp_path / "cache")
    config = pipeline.RunConfig(**{**TINY_RUN.__dict__, "models": ("combo-net",)})
    fresh = Runner(study, config, cache, show_progress=False).run()
    expected = results[results["model"] == "combo-net"]
    assert fresh["nmi"].tolist() == expected["nmi"].tolist()  # bit-identical on CPU
    assert fresh["clustering"].tolist() == expected["clustering"].tolist()  # same content, same key
    x = np.load(copy / "features" / "combo-net.npy")
    np.save(copy / "features" / "combo-net.npy", x + np.float32(0.5) * x[:, ::-1])
    changed = Runner(study, config, cache, show_progress=False).run()
    assert not set(changed["clustering"]) & set(fresh["clustering"])


def test_group_ablation_shows_the_planted_combination(tiny_study, tmp_path):
    config = pipeline.RunConfig(
        **{**TINY_RUN.__dict__, "models": ("combo-net",), "group_sets": (("labels",), ("labels", "colour"))}
    )
    results = Runner(tiny_study, config, Cache(tmp_path), show_progress=False).run()
    table = ranking(results).set_index("groups")
    # combo-net clusters are shape x colour: shape labels alone cannot explain them
    assert table.loc["labels+colour", "nmi_mean"] > table.loc["labels", "nmi_mean"] + 0.1


def test_failed_write_leaves_nothing_behind(tmp_path):
    cache = Cache(tmp_path)

    def broken(path):
        path.write_bytes(b"partial")
        raise OSError("disk full")

    with pytest.raises(OSError):
        cache.write("probes", "abc", {"a.npy": lambda p: np.save(p, np.zeros(3)), "b.bin": broken}, {})
    assert not cache.has("probes", "abc")
    assert list((tmp_path / "probes").iterdir()) == []


def test_a_killed_writers_temporary_folder_is_removed_once_stale(tmp_path):
    import os
    import time

    from qrp_core.cache import STALE_SECONDS

    cache = Cache(tmp_path)
    cache.write("probes", "done", {"a.npy": lambda p: np.save(p, np.zeros(3))}, {})
    old, recent = tmp_path / "probes" / ".tmp-x-1", tmp_path / "clusterings" / ".tmp-y-2"
    for folder in (old, recent):
        folder.mkdir(parents=True)
        (folder / "a.npy").write_bytes(b"partial")  # as a SIGKILL mid-write leaves it
    long_ago = time.time() - STALE_SECONDS - 60
    os.utime(old, (long_ago, long_ago))
    assert cache.remove_stale_temporaries() == [old]
    assert not old.exists() and recent.exists()  # a writer may still be working there
    assert cache.has("probes", "done")


def test_probes_are_stacked_only_where_it_pays():
    from qrp_core.probe import batch_probes

    # bench/pipeline.py, 6 probes at M=1,700 on 2 cores: stacked is 2.6x faster at K=100, about as fast at
    # K=250-300 and 3.3x slower at K=1,000, so a CPU stacks up to K=250 and no further
    assert batch_probes(6, 1700, 100, "cpu") and batch_probes(6, 1700, 250, "cpu")
    assert not batch_probes(6, 1700, 300, "cpu") and not batch_probes(6, 1700, 1000, "cpu")
    assert batch_probes(2, 1700, 750, "cpu") and not batch_probes(2, 1700, 900, "cpu")  # the table's size decides
    assert not batch_probes(1, 10, 10, "cpu")  # one probe has nothing to share


def test_one_group_set_has_one_name_whatever_the_order(tiny_study, tiny_cache):
    cache, results = tiny_cache
    config = pipeline.RunConfig(
        **{**TINY_RUN.__dict__, "models": ("combo-net",), "group_sets": (("texture", "labels", "other", "colour"),)}
    )
    again = Runner(tiny_study, config, cache, show_progress=False).run()
    assert set(again["groups"]) == {"labels+colour+other+texture"}
    assert set(again["probe"]) <= set(results["probe"])  # the same probes as the main run's


def test_a_models_clusterings_share_its_features_on_the_device(tiny_study, tmp_path, monkeypatch):
    """Where torch runs K-means on a GPU, a model's standardised features go to the device once for all
    its clusterings (emulated on the CPU), with the same clusterings as reading the file each time."""
    import qrp_core.quantize as quantize

    monkeypatch.setattr(quantize, "resolve_backend", lambda device: ("torch", "cpu"))
    built = []
    monkeypatch.setattr(quantize, "fits_on_device", lambda shape, device, sample_rows: built.append(shape) or True)
    config = dataclasses.replace(TINY_RUN, models=("combo-net", "noise-net"))
    resident = Runner(tiny_study, config, Cache(tmp_path / "resident"), show_progress=False).run()
    assert len(built) == 2  # once per model, not per clustering
    monkeypatch.setattr(quantize, "fits_on_device", lambda shape, device, sample_rows: False)
    read = Runner(tiny_study, config, Cache(tmp_path / "read"), show_progress=False).run()
    assert list(resident["nmi"]) == list(read["nmi"])
    cache = Cache(tmp_path / "resident")
    for key in resident["clustering"]:
        assert cache.manifest("clusterings", key)["stats"]["features_resident_on_device"]
        np.testing.assert_array_equal(
            cache.load_array("clusterings", key, "assignments.npy"),
            Cache(tmp_path / "read").load_array("clusterings", key, "assignments.npy"),
        )


def test_a_mean_over_seeds_never_mixes_settings(tiny_study_path, tmp_path, capsys):
    """A quick rerun of one seed with other settings drops the other seeds' rows of that (model, K,
    group set), and says so; other K and group sets keep theirs; the same settings add seeds back."""
    study = load_study(tiny_study_path)
    cache = Cache(tmp_path)
    config = dataclasses.replace(
        TINY_RUN, models=("combo-net",), ks=(8, 12), seeds=(0, 1, 2), group_sets=(("labels",), ("labels", "colour"))
    )
    Runner(study, config, cache, show_progress=False).run()
    smoke = dataclasses.replace(
        config,
        ks=(8,),
        seeds=(0,),
        group_sets=(("labels", "colour"),),
        probe=dataclasses.replace(config.probe, max_epochs=1),
    )
    Runner(study, smoke, cache, show_progress=False).run()
    assert "dropped the results of combo-net K=8 on labels+colour for seed(s) 1, 2" in capsys.readouterr().err
    stored = load_results(cache, study)
    seeds = stored.groupby(["k", "groups"])["seed"].apply(sorted).to_dict()
    assert seeds == {
        (8, "labels"): [0, 1, 2],
        (8, "labels+colour"): [0],
        (12, "labels"): [0, 1, 2],
        (12, "labels+colour"): [0, 1, 2],
    }
    assert stored.groupby(["k", "groups"])["settings"].nunique().eq(1).all()
    assert ranking(stored).set_index(["k", "groups"]).loc[(8, "labels+colour"), "n_seeds"] == 1

    Runner(study, config, cache, show_progress=False).run()  # back to the first settings: from the cache
    restored = load_results(cache, study)
    assert len(restored) == 12 and restored.groupby(["k", "groups"])["settings"].nunique().eq(1).all()
    assert "dropped" not in capsys.readouterr().err  # the run replaced every row it had to


def _changed(value):
    if isinstance(value, tuple):
        return (*value, value[-1] + 1)
    return -value if isinstance(value, float) and value < 0 else value + 1  # also -1.0 (forced) -> 1.0


def _keys(runner, model, k, seed, groups) -> dict[str, str]:
    clustering = runner.clustering_key(model, k, seed)
    split = runner.split_key(clustering, seed)
    return {
        "clustering": clustering,
        "split": split,
        "probe": runner.probe_key(split, groups, seed),
        "settings": runner.settings_key(model, groups),
    }


def test_every_parameter_changes_exactly_the_keys_that_depend_on_it(tiny_study, tmp_path):
    """A parameter left out of a key would serve a stale artefact; one put into too many would keep
    seeds of one setting apart. Each field of each step's config, K, the seed, the group set and the
    device is changed alone, and the keys that change are those downstream of it."""
    model, groups = "combo-net", tiny_study.concepts.group_names
    cache = Cache(tmp_path)
    base = _keys(Runner(tiny_study, TINY_RUN, cache, show_progress=False), model, 8, 0, groups)
    downstream = {
        "kmeans": {"clustering", "split", "probe", "settings"},
        "split": {"split", "probe", "settings"},
        "probe": {"probe", "settings"},
    }
    cases = [
        (
            f"{step}.{f.name}",
            dataclasses.replace(
                TINY_RUN,
                **{
                    step: dataclasses.replace(
                        getattr(TINY_RUN, step), **{f.name: _changed(getattr(getattr(TINY_RUN, step), f.name))}
                    )
                },
            ),
            (8, 0, groups),
            downstream[step],
        )
        for step in downstream
        for f in dataclasses.fields(getattr(TINY_RUN, step))
        if f.name not in ("device", "n_clusters")
    ]  # K is the run's --k, below
    assert len(cases) >= 4 + 2 + 7  # K-means, split and probe fields
    cases += [
        ("K", TINY_RUN, (9, 0, groups), {"clustering", "split", "probe"}),
        ("seed", TINY_RUN, (8, 1, groups), {"clustering", "split", "probe"}),
        ("groups", TINY_RUN, (8, 0, groups[:2]), {"probe", "settings"}),
        (
            "device",
            dataclasses.replace(
                TINY_RUN,
                kmeans=dataclasses.replace(TINY_RUN.kmeans, device="cpu"),
                probe=dataclasses.replace(TINY_RUN.probe, device="cpu"),
            ),
            (8, 0, groups),
            set(),
        ),
    ]
    for name, config, (k, seed, group_set), expected in cases:
        keys = _keys(Runner(tiny_study, config, cache, show_progress=False), model, k, seed, group_set)
        assert {kind for kind in base if keys[kind] != base[kind]} == expected, name
