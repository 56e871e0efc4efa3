"""Transfer (paper section 4.5, Tables 4 and 7).

Table 4 style (quantize and probe a second collection with its own concepts) is ``run`` on the
second study. Table 7 style, here: probes trained on collection A are applied to collection B
without retraining. B's images are assigned to A's centroids (standardised with A's statistics),
B's concepts are matched to A's by name (concepts A never saw are ignored, concepts B lacks are
absent), and A's probe predicts the cluster. By default only the probe on every group but the base
group transfers, as in the paper (D.5): a probe that reads ground-truth labels would be fed B's own
labels wherever the class names coincide.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ..cache import Cache
from ..errors import InputError
from ..metrics import adjusted_mutual_info, normalized_mutual_info, top1_accuracy
from ..probe import probe_logits
from ..quantize import assign
from ..results import groups_label, load_probe, load_results, parse_groups, result_rows
from ..study import Study


def concepts_by_name(study: Study, names: list[str]) -> tuple[sp.csr_matrix, int]:
    """``study``'s concept matrix with columns in the order of ``names`` (zero where it lacks one),
    and how many of ``names`` it has."""
    index = {name: i for i, name in enumerate(study.concepts.names)}
    found = [(target, index[name]) for target, name in enumerate(names) if name in index]
    if not found:
        raise InputError(
            "the two studies share no concept names",
            where=study.path,
            fix="label both collections with the same experts (same concept names)",
        )
    target, source = map(np.array, zip(*found))
    selector = sp.csr_matrix(
        (np.ones(len(found), bool), (source, target)), shape=(len(study.concepts.names), len(names))
    )
    return (study.concepts.matrix.astype(np.float32) @ selector.astype(np.float32)).astype(bool).tocsr(), len(found)


def transfer_probe(target: Study, cache: Cache, probe_key: str) -> dict:
    """Apply one probe (of another study) to ``target``: accuracy, top-5, NMI and AMI on all target images."""
    manifest = cache.manifest("probes", probe_key)
    clustering = manifest["inputs"]["clustering"]
    cluster_manifest = cache.manifest("clusterings", clustering)
    model = cluster_manifest["params"]["model"]
    if "centroids.npy" not in cluster_manifest["files"]:
        raise InputError(
            f"model {model!r} has given cluster ids, no centroids to assign new images to",
            fix="transfer models whose clusters come from K-means",
        )
    features = target.features(model)
    centroids = cache.load_array("clusterings", clustering, "centroids.npy")
    if features.shape[1] != centroids.shape[1]:
        raise InputError(
            f"target features have {features.shape[1]} dimensions, the source clustering {centroids.shape[1]}",
            where=target.model(model).features,
            fix="extract both collections' features with the same model and layer",
        )
    mean = cache.load_array("clusterings", clustering, "mean.npy")
    std = cache.load_array("clusterings", clustering, "std.npy")
    truth, _ = assign(features, centroids, (mean, std))
    probe = load_probe(cache, probe_key)
    concepts, n_shared = concepts_by_name(target, list(probe["names"]))
    logits = probe_logits(probe["weight"], probe["bias"], concepts)
    top5 = np.argsort(-logits, axis=1, kind="stable")[:, :5]  # ties to the lower id, as argmax
    predicted = top5[:, 0]
    return {
        "model": model,
        "top1": top1_accuracy(truth, predicted),
        "top5": float(np.mean((top5 == truth[:, None]).any(axis=1))),
        "nmi": normalized_mutual_info(truth, predicted),
        "ami": adjusted_mutual_info(truth, predicted),
        "n_images": int(len(truth)),
        "shared_concepts": n_shared,
        "probe_concepts": len(probe["names"]),
    }


def default_transfer_groups(source: Study) -> str:
    """Every concept group of ``source`` but its base group (the ground-truth labels), as ``a+b``."""
    groups = [g for g in source.concepts.group_names if g != source.base_group]
    if not groups:
        raise InputError(
            f"the study's only concept group is its labels ({source.base_group})",
            where=source.path,
            fix="add expert concepts to the study, or transfer the label probe with --groups " + source.base_group,
        )
    return "+".join(groups)


def run_transfer(
    source: Study, target: Study, cache: Cache, *, k: int | None = None, groups: str | None = None
) -> pd.DataFrame:
    """Transfer the probes of ``source``'s results on one group set (``a+b``; default
    ``default_transfer_groups``), every seed and K (or one K), to ``target``; also reports the
    source's own test scores side by side. Stored as ``transfer-<target>``."""
    groups = groups_label(parse_groups(groups, source)) if groups else default_transfer_groups(source)
    results = result_rows(load_results(cache, source), k=k, groups=groups)
    if results.empty:
        at_k, k_option = (f" at K={k}", f" --k {k}") if k is not None else ("", "")
        raise InputError(
            f"no source results on groups {groups}{at_k}",
            where=source.path,
            fix=f"run `python -m qrp_core run {source.path} --groups {groups}{k_option}` first, "
            "or choose computed groups with --groups",
        )
    rows = []
    for row in results.itertuples():
        if not target.model(row.model).has_features:
            continue
        scores = transfer_probe(target, cache, row.probe)
        rows.append(
            {
                "model": row.model,
                "k": row.k,
                "seed": row.seed,
                "groups": row.groups,
                "source_top1": row.top1,
                "source_nmi": row.nmi,
                "source_ami": row.ami,
                **{f"target_{m}": scores[m] for m in ("top1", "top5", "nmi", "ami")},
                "shared_concepts": scores["shared_concepts"],
                "probe_concepts": scores["probe_concepts"],
                "probe": row.probe,
            }
        )
    table = pd.DataFrame(rows)
    cache.write_table(
        source.name,
        f"transfer-{target.name}",
        table,
        {"target": str(target.path)},
        keys=["model", "k", "seed", "groups"],
    )
    return table


def transfer_summary(table: pd.DataFrame) -> pd.DataFrame:
    """``run_transfer``'s scores as means over seeds per model, K and group set."""
    columns = ["source_top1", "target_top1", "target_top5", "source_nmi", "target_nmi", "target_ami"]
    return table.groupby(["model", "k", "groups"])[columns].mean().reset_index()
