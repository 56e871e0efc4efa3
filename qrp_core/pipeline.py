"""The whole measurement: for each model, K and seed, cluster, split, probe each concept-group set, score.

Every step reads its artefact from the cache when the inputs and parameters are unchanged.
"""

from __future__ import annotations

import dataclasses
import hashlib
import sys
import time

import numpy as np
import pandas as pd
from safetensors.numpy import save_file
from tqdm.auto import tqdm

from .cache import Cache, save_json, save_npy, stable_hash
from .config import RunConfig
from .features import standardisation_stats
from .metrics import probe_scores
from .probe import batch_probes, probe_outputs, resolve_torch_device, train_probes
from .probe_model import SparseRows
from .profiles import save_cluster_profile
from .quantize import features_on_device, kmeans
from .results import groups_label, save_results
from .split import TEST, check_splittable, stratified_split
from .study import GROUND_TRUTH, Study

FORMAT = 2  # artefact layout and algorithm version: part of every key, so a layout change recomputes


def _params(config) -> dict:
    """A config's fields that change results (the device does not enter keys; manifests record it)."""
    return {k: v for k, v in dataclasses.asdict(config).items() if k != "device"}


class Runner:
    """Computes or loads each artefact of one study; ``run`` returns the results table."""

    def __init__(self, study: Study, config: RunConfig, cache: Cache, *, show_progress: bool = True, on_step=None):
        """``on_step(done, total, text)`` is called after each step (the app's progress bar)."""
        self.study, self.config, self.cache = study, config, cache
        self.show_progress = show_progress
        self.on_step = on_step
        self.concepts_hash = {}
        self.standardisation = {}  # model -> (mean, std, n_constant), computed once per run
        self.on_device = {}  # model -> its standardised features on the GPU (one model at a time) or None
        self.given_clusters = {}  # model without features -> its cluster ids

    def models(self) -> list[str]:
        names = list(self.config.models) or list(self.study.models)
        for name in names:
            self.study.model(name)
        return names

    def group_sets(self, model: str | None = None) -> list[tuple[str, ...]]:
        """The configured group sets; for the ground-truth model the base group (the labels
        themselves) is dropped, since it would predict them trivially."""
        sets = [self.study.concepts.canonical(g) for g in self.config.group_sets] or [self.study.concepts.group_names]
        if model == GROUND_TRUTH:
            sets = [tuple(g for g in groups if g != self.study.base_group) for groups in sets]
            sets = list(dict.fromkeys(groups for groups in sets if groups))
        for groups in sets:
            self.study.concepts.select(groups)
        return sets

    def units(self, models: list[str]) -> list[tuple[str, int, int]]:
        """(model, K, seed) of every clustering: K-means for each K, or the model's given clusters."""
        out = []
        for model in models:
            if self.study.model(model).has_features:
                ks = self.config.ks
            else:
                ids = self.given_clusters.setdefault(model, self.study.cluster_ids(model))
                ks = (int(ids.max()) + 1,)
            out += [(model, k, seed) for k in ks for seed in self.config.seeds]
        return out

    # --- keys -------------------------------------------------------------------------------
    def clustering_key(self, model: str, k: int, seed: int) -> str:
        spec = self.study.model(model)
        if not spec.has_features:
            ids = self.given_clusters[model]
            return stable_hash({"format": FORMAT, "cluster_ids": hashlib.sha256(ids.tobytes()).hexdigest()})
        return stable_hash(
            {
                "format": FORMAT,
                "features": self.cache.file_hash(spec.features),
                "key": spec.key,
                "kmeans": _params(dataclasses.replace(self.config.kmeans, n_clusters=k)),
                "seed": seed,
            }
        )

    def settings_key(self, model: str, groups: tuple[str, ...]) -> str:
        """Everything behind a result but K and the seed: the model's input, the concepts of the group
        set and the parameters of every step. A mean over seeds needs one settings key."""
        spec = self.study.model(model)
        model_input = (
            self.clustering_key(model, 0, 0)
            if not spec.has_features
            else {"features": self.cache.file_hash(spec.features), "key": spec.key}
        )
        return stable_hash(
            {
                "format": FORMAT,
                "model": model_input,
                "concepts": self.concepts_key(groups),
                "kmeans": _params(dataclasses.replace(self.config.kmeans, n_clusters=0)),
                "split": _params(self.config.split),
                "probe": _params(self.config.probe),
            }
        )

    def split_key(self, clustering_key: str, seed: int) -> str:
        return stable_hash(
            {"format": FORMAT, "clustering": clustering_key, "split": _params(self.config.split), "seed": seed}
        )

    def concepts_key(self, groups: tuple[str, ...]) -> str:
        """The content hash of a group set's concept columns (computed once per group set)."""
        if groups not in self.concepts_hash:
            self.concepts_hash[groups] = self.study.concepts.select(groups).content_hash()
        return self.concepts_hash[groups]

    def probe_key(self, split_key: str, groups: tuple[str, ...], seed: int) -> str:
        return stable_hash(
            {
                "format": FORMAT,
                "split": split_key,
                "concepts": self.concepts_key(groups),
                "probe": _params(self.config.probe),
                "seed": seed,
            }
        )

    # --- steps ------------------------------------------------------------------------------
    def clustering(self, model: str, k: int, seed: int, bar=None) -> str:
        key = self.clustering_key(model, k, seed)
        if self.cache.has("clusterings", key):
            return key
        spec = self.study.model(model)
        if not spec.has_features:
            ids = self.given_clusters[model]
            self.cache.write(
                "clusterings",
                key,
                {"assignments.npy": save_npy(ids)},
                {
                    "inputs": {
                        "assignments": str(spec.assignments or "image table labels"),
                        "image_ids_sha256": stable_hash(list(self.study.image_ids)),
                    },
                    "params": {"n_clusters": k, "model": model, "source": "given cluster ids"},
                    "stats": {},
                },
            )
            return key
        x = spec.load(self.study.image_ids)
        config = dataclasses.replace(self.config.kmeans, n_clusters=k)
        status = (lambda text: bar.set_postfix_str(f"{model} K={k} seed={seed}: {text}")) if bar else None
        t = time.perf_counter()
        if model not in self.standardisation:
            self.standardisation[model] = standardisation_stats(x, source=spec.features)
        if model not in self.on_device:
            self.on_device.clear()
            sample_rows = min(len(x), max(self.config.ks) * config.max_points_per_centroid)
            self.on_device[model] = features_on_device(
                x, self.standardisation[model], config.device, sample_rows=sample_rows
            )
        result = kmeans(
            x,
            config,
            seed=seed,
            source=spec.features,
            progress=status,
            standardisation=self.standardisation[model],
            on_device=self.on_device[model],
        )
        self.cache.write(
            "clusterings",
            key,
            {
                "assignments.npy": save_npy(result.assignments),
                "distances.npy": save_npy(result.distances),
                "centroids.npy": save_npy(result.centroids),
                "mean.npy": save_npy(result.mean),
                "std.npy": save_npy(result.std),
            },
            {
                "inputs": {
                    "features": str(spec.features),
                    "features_sha256": self.cache.file_hash(spec.features),
                    "image_ids_sha256": stable_hash(list(self.study.image_ids)),
                },
                "params": {**dataclasses.asdict(config), "seed": seed, "model": model},
                "stats": result.stats,
                "wall_seconds": time.perf_counter() - t,
            },
        )
        return key

    def split(self, clustering_key: str, seed: int) -> str:
        key = self.split_key(clustering_key, seed)
        if self.cache.has("splits", key):
            return key
        assignments = self.cache.load_array("clusterings", clustering_key, "assignments.npy")
        split, stats = stratified_split(assignments, self.config.split, seed=seed)
        self.cache.write(
            "splits",
            key,
            {"split.npy": save_npy(split)},
            {
                "inputs": {"clustering": clustering_key},
                "params": {**dataclasses.asdict(self.config.split), "seed": seed},
                "stats": stats,
            },
        )
        return key

    def probes(
        self, clustering_key: str, split_key: str, sets: list[tuple[str, ...]], seed: int, k: int
    ) -> dict[tuple[str, ...], str]:
        """The probe key of each group set; the missing probes are trained together in one pass
        (``train_probes``, each on its own concepts, as if trained alone) where that is faster."""
        keys = {groups: self.probe_key(split_key, groups, seed) for groups in sets}
        todo = [groups for groups in sets if not self.cache.has("probes", keys[groups])]
        if not todo:
            return keys
        table = self.study.concepts
        column_groups = np.asarray(table.groups, dtype=object)
        masks = np.stack([np.isin(column_groups, list(groups)) for groups in todo])
        assignments = self.cache.load_array("clusterings", clustering_key, "assignments.npy")
        split = self.cache.load_array("splits", split_key, "split.npy")
        epochs = tqdm(
            total=self.config.probe.max_epochs,
            desc=f"{len(todo)} probe(s), epochs",
            leave=False,
            disable=not (self.show_progress and sys.stderr.isatty()),
        )

        def on_epoch(epoch, stats):
            epochs.update(1)
            epochs.set_postfix(val_loss=f"{stats['val_loss']:.3f}")

        if batch_probes(len(todo), table.matrix.shape[1], k, self.config.probe.device):
            results = train_probes(
                table.matrix, masks, assignments, split, k, self.config.probe, seed=seed, progress=on_epoch
            )
        else:
            results = []
            for groups in todo:
                subset = table.select(groups).matrix
                results += train_probes(
                    subset,
                    np.ones((1, subset.shape[1]), bool),
                    assignments,
                    split,
                    k,
                    self.config.probe,
                    seed=seed,
                    progress=on_epoch,
                )
        epochs.close()
        test = split == TEST
        sizes = np.bincount(assignments, minlength=k)
        # every probe reads the whole concept matrix, copied to the device once: a probe's weights are
        # zero on the columns it does not see, which leaves its logits exactly as on its own columns
        matrix = table.matrix if table.matrix.has_sorted_indices else table.matrix.sorted_indices()
        rows = SparseRows.from_scipy(matrix, resolve_torch_device(self.config.probe.device))
        for groups, result, mask in zip(todo, results, masks):
            weight = np.zeros((len(mask), k), dtype=np.float32)
            weight[mask] = result.weight
            predictions, test_logits = probe_outputs(weight, result.bias, rows, test, device=self.config.probe.device)
            scores = probe_scores(assignments[test], test_logits, sizes)
            columns = np.flatnonzero(mask)
            self.cache.write(
                "probes",
                keys[groups],
                {
                    "probe.safetensors": lambda p, r=result: save_file({"weight": r.weight, "bias": r.bias}, str(p)),
                    "predictions.npy": save_npy(predictions),
                    "concepts.json": save_json(
                        {"names": [table.names[c] for c in columns], "groups": [table.groups[c] for c in columns]}
                    ),
                    "metrics.json": save_json(scores),
                },
                {
                    "inputs": {
                        "clustering": clustering_key,
                        "split": split_key,
                        "concepts_sha256": self.concepts_hash[groups],
                        "groups": list(groups),
                    },
                    "params": {**dataclasses.asdict(self.config.probe), "seed": seed},
                    "stats": {**result.stats, "best_epoch": result.best_epoch, "history": result.history},
                    "metrics": scores,
                },
            )
        return keys

    def validate_inputs(self, units: list[tuple[str, int, int]]) -> None:
        """Check K and load and check every model that still needs a clustering before anything is
        written, so bad input stops the run with the cache as it was (the statistics are reused)."""
        todo = []
        for model, k, seed in units:
            if self.study.model(model).has_features:
                check_splittable(k, self.study.n_images, self.config.split, source=self.study.path)
                if (
                    model not in todo
                    and model not in self.standardisation
                    and not self.cache.has("clusterings", self.clustering_key(model, k, seed))
                ):
                    todo.append(model)
        for model in tqdm(todo, desc="checking features", disable=not self.show_progress or not todo):
            spec = self.study.model(model)
            self.standardisation[model] = standardisation_stats(spec.load(self.study.image_ids), source=spec.features)

    # --- the grid ---------------------------------------------------------------------------
    def plan(self) -> tuple[list[tuple[str, int, int]], dict[str, list[tuple[str, ...]]]]:
        """The units (model, K, seed) and each model's group sets, inputs checked before any write."""
        models = self.models()
        sets = {model: self.group_sets(model) for model in models}
        units = self.units(models)
        self.validate_inputs(units)
        return units, sets

    def cluster_unit(self, model: str, k: int, seed: int, bar=None) -> tuple[str, str]:
        """The clustering and split keys of one unit, computing what the cache lacks."""
        if not self.study.model(model).has_features:
            self.given_clusters.setdefault(model, self.study.cluster_ids(model))
        clustering_key = self.clustering(model, k, seed, bar)
        save_cluster_profile(self.study, self.cache, clustering_key)  # what the explanations read
        return clustering_key, self.split(clustering_key, seed)

    def result_rows(
        self, unit: tuple[str, int, int], clustering_key: str, split_key: str, probe_keys: dict[tuple[str, ...], str]
    ) -> list[dict]:
        """One results row per group set of a unit, read from the probes' metrics.json."""
        model, k, seed = unit
        return [
            {
                "model": model,
                "k": k,
                "seed": seed,
                "groups": groups_label(groups),
                **self.cache.load_json("probes", key, "metrics.json"),
                "clustering": clustering_key,
                "split": split_key,
                "probe": key,
                "settings": self.settings_key(model, groups),
            }
            for groups, key in probe_keys.items()
        ]

    def finish(self, rows: list[dict]) -> pd.DataFrame:
        """Save the rows into the study's results table, remember the feature hashes and remove
        what killed writers left behind."""
        self.on_device.clear()  # the GPU's copy of the last model's features
        results = pd.DataFrame(rows)
        if rows:
            dropped = save_results(self.cache, self.study, results)
            for (model, k, groups), part in dropped.groupby(["model", "k", "groups"]):
                print(
                    f"note: dropped the results of {model} K={k} on {groups} for seed(s) "
                    f"{', '.join(map(str, sorted(part['seed'])))}: they were computed with other settings "
                    "(parameters, features or concepts); rerun those seeds to have them with these",
                    file=sys.stderr,
                )
        self.cache.save_file_hashes()
        self.cache.remove_stale_temporaries()
        return results

    def run(self) -> pd.DataFrame:
        """Cluster, split, probe and score every unit of the grid, reusing what the cache holds, and save
        the rows in the study's results table.

        Returns
        -------
        DataFrame
            One row per model, K, seed and group set: the metrics (``results.METRIC_COLUMNS``, fractions;
            MI in bits), the other recorded values and the keys of the clustering, split and probe artefacts.

        Examples
        --------
        >>> from qrp_core.cache import Cache
        >>> from qrp_core.config import KMeansConfig, ProbeConfig, RunConfig
        >>> from qrp_core.demos.synthetic import make_synthetic_study
        >>> from qrp_core.pipeline import Runner
        >>> from qrp_core.study import load_study
        >>> study = load_study(make_synthetic_study("doc-run", n_images=400, dim=8))
        >>> config = RunConfig(ks=(6,), seeds=(0,), kmeans=KMeansConfig(n_iter=10, n_restarts=1),
        ...                    probe=ProbeConfig(max_epochs=10))
        >>> results = Runner(study, config, Cache("doc-run/cache"), show_progress=False).run()
        >>> sorted(results["model"]), results["groups"].unique().tolist()
        (['combo-net', 'noise-net', 'shape-net'], ['labels+colour+other+texture'])
        >>> nmi = results.set_index("model")["nmi"]
        >>> bool(nmi["combo-net"] > nmi["noise-net"])
        True
        """
        units, sets = self.plan()
        rows = []
        total = sum(1 + len(sets[m]) for m, _, _ in units)

        def step(text: str) -> None:
            bar.update(1)
            if self.on_step is not None:
                self.on_step(bar.n, total, text)

        with tqdm(total=total, desc="qrp run", unit="step", disable=not self.show_progress) as bar:
            for model, k, seed in units:
                bar.set_postfix_str(f"{model} K={k} seed={seed}: clustering")
                ckey, skey = self.cluster_unit(model, k, seed, bar)
                step(f"{model} K={k} seed={seed}: clustering")
                bar.set_postfix_str(f"{model} K={k} seed={seed}: {len(sets[model])} probe(s)")
                keys = self.probes(ckey, skey, sets[model], seed, k)
                for groups in sets[model]:
                    rows += self.result_rows((model, k, seed), ckey, skey, {groups: keys[groups]})
                    step(f"{model} K={k} seed={seed}: probe {groups_label(groups)}")
        return self.finish(rows)
