"""The whole measurement: for each model, K and seed, cluster, split, probe each concept-group set, score.

Every step reads its artefact from the cache when the inputs and parameters are unchanged.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from safetensors.numpy import load_file, save_file
from tqdm.auto import tqdm

from .cache import Cache, atomic_write_bytes, save_json, save_npy, stable_hash
from .errors import InputError
from .features import standardisation_stats
from .metrics import probe_scores
from .probe import ProbeConfig, probe_logits, train_probe
from .quantize import KMeansConfig, check_n_clusters, kmeans
from .split import TEST, SplitConfig, stratified_split
from .study import Study

RESULT_KEYS = ["model", "k", "seed", "groups"]
METRIC_COLUMNS = ["nmi", "ami", "top1", "map", "mi_bits", "mi_norm"]


@dataclass(frozen=True)
class RunConfig:
    models: tuple[str, ...] = ()  # empty: every model of the study
    ks: tuple[int, ...] = (1000,)  # paper section 4.2
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)  # 5 clusterings, Table 2
    group_sets: tuple[tuple[str, ...], ...] = ()  # empty: one probe on all groups
    kmeans: KMeansConfig = field(default_factory=KMeansConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    probe: ProbeConfig = field(default_factory=ProbeConfig)


def _params(config) -> dict:
    """A config's fields that change results (the device does not enter keys; manifests record it)."""
    return {k: v for k, v in dataclasses.asdict(config).items() if k != "device"}


def groups_label(groups: tuple[str, ...]) -> str:
    return "+".join(groups)


def parse_groups(text: str, study: Study) -> tuple[str, ...]:
    """``all`` or ``a+b+c`` -> a tuple of groups of the study (validated)."""
    if text == "all":
        return study.concepts.group_names
    groups = tuple(g for g in text.split("+") if g)
    study.concepts.select(groups)  # raises on unknown or empty groups
    return groups


class Runner:
    """Computes or loads each artefact of one study; ``run`` returns the results table."""

    def __init__(self, study: Study, config: RunConfig, cache: Cache, *, show_progress: bool = True):
        self.study, self.config, self.cache = study, config, cache
        self.show_progress = show_progress
        self.concepts_hash = {}
        self.standardisation = {}  # model -> (mean, std, n_constant), computed once per run

    def models(self) -> list[str]:
        names = list(self.config.models) or list(self.study.models)
        for name in names:
            self.study.model(name)
        return names

    def group_sets(self) -> list[tuple[str, ...]]:
        sets = list(self.config.group_sets) or [self.study.concepts.group_names]
        for groups in sets:
            self.study.concepts.select(groups)
        return sets

    # --- keys -------------------------------------------------------------------------------
    def clustering_key(self, model: str, k: int, seed: int) -> str:
        features = self.study.model(model).features
        return stable_hash({"features": self.cache.file_hash(features), "key": self.study.model(model).key,
                            "kmeans": _params(dataclasses.replace(self.config.kmeans, n_clusters=k)),
                            "seed": seed})

    def split_key(self, clustering_key: str, seed: int) -> str:
        return stable_hash({"clustering": clustering_key, "split": _params(self.config.split), "seed": seed})

    def probe_key(self, split_key: str, groups: tuple[str, ...], seed: int) -> str:
        if groups not in self.concepts_hash:
            self.concepts_hash[groups] = self.study.concepts.select(groups).content_hash()
        return stable_hash({"split": split_key, "concepts": self.concepts_hash[groups],
                            "probe": _params(self.config.probe), "seed": seed})

    # --- steps ------------------------------------------------------------------------------
    def clustering(self, model: str, k: int, seed: int, bar=None) -> str:
        key = self.clustering_key(model, k, seed)
        if self.cache.has("clusterings", key):
            return key
        spec = self.study.model(model)
        x = spec.load(self.study.image_ids)
        config = dataclasses.replace(self.config.kmeans, n_clusters=k)
        status = (lambda text: bar.set_postfix_str(f"{model} K={k} seed={seed}: {text}")) if bar else None
        t = time.perf_counter()
        if model not in self.standardisation:
            self.standardisation[model] = standardisation_stats(x, source=spec.features)
        result = kmeans(x, config, seed=seed, source=spec.features, progress=status,
                        standardisation=self.standardisation[model])
        self.cache.write("clusterings", key, {
            "assignments.npy": save_npy(result.assignments), "centroids.npy": save_npy(result.centroids),
            "mean.npy": save_npy(result.mean), "std.npy": save_npy(result.std),
        }, {"inputs": {"features": str(spec.features), "features_sha256": self.cache.file_hash(spec.features),
                       "image_ids_sha256": stable_hash(list(self.study.image_ids))},
            "params": {**dataclasses.asdict(config), "seed": seed, "model": model},
            "stats": result.stats, "wall_seconds": time.perf_counter() - t})
        return key

    def split(self, clustering_key: str, seed: int) -> str:
        key = self.split_key(clustering_key, seed)
        if self.cache.has("splits", key):
            return key
        assignments = self.cache.load_array("clusterings", clustering_key, "assignments.npy")
        split, stats = stratified_split(assignments, self.config.split, seed=seed)
        self.cache.write("splits", key, {"split.npy": save_npy(split)},
                         {"inputs": {"clustering": clustering_key},
                          "params": {**dataclasses.asdict(self.config.split), "seed": seed}, "stats": stats})
        return key

    def probe(self, clustering_key: str, split_key: str, groups: tuple[str, ...], seed: int, k: int,
              bar=None) -> str:
        key = self.probe_key(split_key, groups, seed)
        if self.cache.has("probes", key):
            return key
        concepts = self.study.concepts.select(groups)
        assignments = self.cache.load_array("clusterings", clustering_key, "assignments.npy")
        split = self.cache.load_array("splits", split_key, "split.npy")
        epochs = tqdm(total=self.config.probe.max_epochs, desc="probe epochs", leave=False,
                      disable=not (self.show_progress and sys.stderr.isatty()))

        def on_epoch(epoch, stats):
            epochs.update(1)
            epochs.set_postfix(val_loss=f"{stats['val_loss']:.3f}")

        result = train_probe(concepts.matrix, assignments, split, k, self.config.probe, seed=seed,
                             progress=on_epoch)
        epochs.close()
        logits = probe_logits(result.weight, result.bias, concepts.matrix, device=self.config.probe.device)
        test = split == TEST
        scores = probe_scores(assignments[test], logits[test], np.bincount(assignments, minlength=k))
        self.cache.write("probes", key, {
            "probe.safetensors": lambda p: save_file({"weight": result.weight, "bias": result.bias}, str(p)),
            "predictions.npy": save_npy(logits.argmax(axis=1).astype(np.int32)),
            "concepts.json": save_json({"names": concepts.names, "groups": concepts.groups}),
            "metrics.json": save_json(scores),
        }, {"inputs": {"clustering": clustering_key, "split": split_key,
                       "concepts_sha256": self.concepts_hash[groups], "groups": list(groups)},
            "params": {**dataclasses.asdict(self.config.probe), "seed": seed},
            "stats": {**result.stats, "best_epoch": result.best_epoch, "history": result.history},
            "metrics": scores})
        return key

    def validate_features(self, models: list[str]) -> None:
        """Load and check every model that still needs a clustering before anything is written,
        so bad input stops the run with the cache as it was (the statistics are reused)."""
        cfg = self.config
        todo = [m for m in models if any(not self.cache.has("clusterings", self.clustering_key(m, k, s))
                                         for k in cfg.ks for s in cfg.seeds)]
        for model in tqdm(todo, desc="checking features", disable=not self.show_progress or not todo):
            spec = self.study.model(model)
            x = spec.load(self.study.image_ids)
            self.standardisation[model] = standardisation_stats(x, source=spec.features)

    # --- the grid ---------------------------------------------------------------------------
    def run(self) -> pd.DataFrame:
        models, sets, cfg = self.models(), self.group_sets(), self.config
        for k in cfg.ks:
            check_n_clusters(k, self.study.n_images, source=self.study.path)
        self.validate_features(models)
        units = len(models) * len(cfg.ks) * len(cfg.seeds)
        rows = []
        with tqdm(total=units * (1 + len(sets)), desc="qrp run", unit="step",
                  disable=not self.show_progress) as bar:
            for model in models:
                for k in cfg.ks:
                    for seed in cfg.seeds:
                        bar.set_postfix_str(f"{model} K={k} seed={seed}: clustering")
                        ckey = self.clustering(model, k, seed, bar)
                        skey = self.split(ckey, seed)
                        bar.update(1)
                        for groups in sets:
                            bar.set_postfix_str(f"{model} K={k} seed={seed}: probe {groups_label(groups)}")
                            pkey = self.probe(ckey, skey, groups, seed, k, bar)
                            metrics = self.cache.load_json("probes", pkey, "metrics.json")
                            rows.append({"model": model, "k": k, "seed": seed, "groups": groups_label(groups),
                                         **metrics, "clustering": ckey, "split": skey, "probe": pkey})
                            bar.update(1)
        results = pd.DataFrame(rows)
        save_results(self.cache, self.study, results)
        self.cache.save_file_hashes()
        return results


def results_path(cache: Cache, study: Study) -> Path:
    return cache.root / "results" / f"{study.name}.parquet"


def save_results(cache: Cache, study: Study, new: pd.DataFrame) -> None:
    """Upsert rows into the study's results table (one row per model, K, seed, group set)."""
    path = results_path(cache, study)
    if path.is_file():
        old = pd.read_parquet(path)
        merged = pd.concat([old, new]).drop_duplicates(RESULT_KEYS, keep="last")
    else:
        merged = new
    merged = merged.sort_values(RESULT_KEYS).reset_index(drop=True)
    atomic_write_bytes(path, merged.to_parquet(index=False))


def load_results(cache: Cache, study: Study) -> pd.DataFrame:
    path = results_path(cache, study)
    if not path.is_file():
        raise InputError("no results for this study yet", where=path,
                         fix=f"run `python -m qrp_core run {study.path}` first")
    return pd.read_parquet(path)


def ranking(results: pd.DataFrame) -> pd.DataFrame:
    """Mean and sample std (ddof=1) over seeds per (model, K, group set), best NMI first."""
    grouped = results.groupby(["model", "k", "groups"])
    table = grouped[METRIC_COLUMNS].agg(["mean", "std"])
    table.columns = [f"{metric}_{stat}" for metric, stat in table.columns]
    table["n_seeds"] = grouped.size()
    return table.reset_index().sort_values(["k", "groups", "nmi_mean"], ascending=[True, True, False],
                                           ignore_index=True)


def per_image_table(study: Study, cache: Cache, probe_key: str) -> pd.DataFrame:
    """image_id, split, cluster, predicted for every image, from one probe's artefacts."""
    manifest = cache.manifest("probes", probe_key)
    assignments = cache.load_array("clusterings", manifest["inputs"]["clustering"], "assignments.npy")
    split = cache.load_array("splits", manifest["inputs"]["split"], "split.npy")
    predicted = cache.load_array("probes", probe_key, "predictions.npy")
    names = np.array(["train", "val", "test"])
    return pd.DataFrame({"image_id": study.image_ids, "split": names[split], "cluster": assignments,
                         "predicted": predicted})


def load_probe(cache: Cache, probe_key: str) -> dict:
    """weight (n_concepts, K), bias (K,) and the concept names and groups of one probe."""
    tensors = load_file(str(cache.path("probes", probe_key) / "probe.safetensors"))
    return {**tensors, **cache.load_json("probes", probe_key, "concepts.json")}
