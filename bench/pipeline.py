"""Engine vs the naive pipeline, stage by stage, on one synthetic study with planted concept structure.

    python -m bench.pipeline            # N=100,000, D=512, K=1,000, M=1,700 (~20 active): ~6 min on 2 cores
    python -m bench.pipeline --small    # a 20-second smoke run

Naive pipeline = what a user would write: scikit-learn KMeans, a dense torch nn.Linear probe fed
by a DataLoader over the densified concept matrix, scikit-learn metrics. Both sides use the same
K-means iterations (one restart) and the same probe epochs, learning rate and schedule; the
quantization stage is also timed against a bare ``faiss.Kmeans`` call with the engine's settings, and
the engine's and scikit-learn's K-means again while another process keeps one core busy.
Not a test: it prints times, ratios and both sets of metrics.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np
import scipy.sparse as sp
import torch
from sklearn import metrics as skm
from sklearn.cluster import KMeans

import qrp_core  # noqa: F401  before torch and faiss load: libgomp's spin count, as the CLI runs
from qrp_core.blas import import_faiss
from qrp_core.config import KMeansConfig, ProbeConfig
from qrp_core.features import standardisation_stats, standardise
from qrp_core.metrics import probe_scores
from qrp_core.probe import probe_logits, train_probe, train_probes
from qrp_core.quantize import kmeans
from qrp_core.split import TEST, TRAIN, VAL, stratified_split

faiss = import_faiss()  # as the engine loads it: with a BLAS kernel that knows the CPU (qrp_core/blas.py)


def make_study(n, dim, k, n_concepts, active, seed=0):
    """Features around K latent prototypes; each prototype has its own characteristic concepts."""
    rng = np.random.default_rng(seed)
    prototype = rng.integers(0, k, n)
    centres = rng.normal(scale=1.0, size=(k, dim)).astype(np.float32)
    x = centres[prototype] + rng.normal(scale=0.6, size=(n, dim)).astype(np.float32)
    signature = rng.integers(0, n_concepts, size=(k, active))  # concepts typical of each prototype
    keep = rng.random((n, active)) < 0.75  # experts miss some
    noise = rng.integers(0, n_concepts, size=(n, active // 4))  # and add unrelated ones
    cols = np.concatenate([np.where(keep, signature[prototype], -1), noise], axis=1)
    rows = np.repeat(np.arange(n), cols.shape[1])
    cols = cols.ravel()
    concepts = sp.csr_matrix(
        (np.ones(int((cols >= 0).sum()), bool), (rows[cols >= 0], cols[cols >= 0])), shape=(n, n_concepts)
    )
    concepts.sum_duplicates()
    return x, concepts


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def naive_probe(concepts, targets, split, k, config, seed):
    """Dense nn.Linear + DataLoader, same optimiser, schedule and best-validation-epoch rule."""
    torch.manual_seed(seed)
    dense = torch.tensor(concepts.toarray(), dtype=torch.float32)
    y = torch.as_tensor(targets, dtype=torch.int64)
    train = torch.as_tensor(np.flatnonzero(split == TRAIN))
    val = torch.as_tensor(np.flatnonzero(split == VAL))
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(dense[train], y[train]), batch_size=config.batch_size, shuffle=True
    )
    model = torch.nn.Linear(dense.shape[1], k)
    opt = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, list(config.lr_milestones), config.lr_gamma)
    best = (float("inf"), None)
    for _ in range(config.max_epochs):
        for xb, yb in loader:
            loss = torch.nn.functional.cross_entropy(model(xb), yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
        sched.step()
        with torch.no_grad():
            val_loss = float(torch.nn.functional.cross_entropy(model(dense[val]), y[val]))
        if val_loss < best[0]:
            best = (val_loss, {n: p.clone() for n, p in model.state_dict().items()})
    model.load_state_dict(best[1])
    with torch.no_grad():
        return model(dense).numpy()


def naive_metrics(labels, logits, cluster_sizes):
    from sklearn.preprocessing import label_binarize

    predicted = logits.argmax(1)
    probs = torch.softmax(torch.as_tensor(logits, dtype=torch.float64), 1).numpy()
    present = np.unique(labels)
    onehot = label_binarize(labels, classes=np.arange(logits.shape[1]))[:, present]
    ce = skm.log_loss(labels, probs, labels=np.arange(logits.shape[1]))
    scored = cluster_sizes * (np.bincount(labels, minlength=len(cluster_sizes)) > 0)  # clusters with test images
    p = scored / scored.sum()
    h = float(-(p[p > 0] * np.log(p[p > 0])).sum())
    return {
        "nmi": skm.normalized_mutual_info_score(labels, predicted),
        "ami": skm.adjusted_mutual_info_score(labels, predicted),
        "top1": skm.accuracy_score(labels, predicted),
        "map": skm.average_precision_score(onehot, probs[:, present], average="macro"),
        "mi_bits": (h - ce) / np.log(2),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--k", type=int, default=1000)
    parser.add_argument("--concepts", type=int, default=1700)
    parser.add_argument("--active", type=int, default=20)
    parser.add_argument("--iters", type=int, default=10, help="K-means iterations (paper: 100)")
    parser.add_argument("--epochs", type=int, default=10, help="probe epochs (paper: up to 100)")
    parser.add_argument("--small", action="store_true", help="N=10,000, D=64, K=100, M=400")
    args = parser.parse_args()
    if args.small:
        args.n, args.dim, args.k, args.concepts = 10_000, 64, 100, 400
    print(
        f"N={args.n} D={args.dim} K={args.k} M={args.concepts} ~{args.active} active; K-means {args.iters} "
        f"iterations x 1 restart; probe {args.epochs} epochs; torch threads {torch.get_num_threads()}, "
        f"faiss threads {faiss.omp_get_max_threads()}",
        flush=True,
    )
    x, concepts = make_study(args.n, args.dim, args.k, args.concepts, args.active)
    print(f"concepts: {concepts.nnz / args.n:.1f} active per image, {concepts.nnz} nonzeros", flush=True)
    times, engine, naive = {}, {}, {}

    config = KMeansConfig(n_clusters=args.k, n_iter=args.iters, n_restarts=1)
    clustering, times["engine kmeans (standardise+train+assign)"] = timed(lambda: kmeans(x, config, seed=0))
    mean, std, _ = standardisation_stats(x, source="bench")
    z = standardise(x, mean, std)

    def bare_faiss():
        km = faiss.Kmeans(args.dim, args.k, niter=args.iters, seed=1, early_stop_threshold=-1.0)
        km.train(z)
        return km.index.search(z, 1)[1][:, 0]

    _, times["bare faiss.Kmeans (train+assign, pre-standardised)"] = timed(bare_faiss)
    sk_kmeans = KMeans(args.k, init="random", n_init=1, max_iter=args.iters, tol=0.0, random_state=0)
    _, times["naive sklearn KMeans"] = timed(lambda: sk_kmeans.fit_predict(z))
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])  # one core kept busy by another process
    try:
        _, times["engine kmeans, one core busy elsewhere"] = timed(lambda: kmeans(x, config, seed=0))
        _, times["naive sklearn KMeans, one core busy elsewhere"] = timed(lambda: sk_kmeans.fit_predict(z))
    finally:
        hog.kill()

    targets = clustering.assignments
    split, _ = stratified_split(targets, seed=0)
    test = split == TEST
    probe_config = ProbeConfig(max_epochs=args.epochs)

    warm = slice(0, 2000)  # first torch calls pay one-off start-up costs: pay them outside the timings
    train_probe(concepts[warm], targets[warm], split[warm], args.k, ProbeConfig(max_epochs=1), seed=0)
    naive_probe(concepts[warm], targets[warm], split[warm], args.k, ProbeConfig(max_epochs=1), seed=0)
    result, times["engine probe (sparse, fixed-shape steps)"] = timed(
        lambda: train_probe(concepts, targets, split, args.k, probe_config, seed=0)
    )
    logits, t_logits = timed(lambda: probe_logits(result.weight, result.bias, concepts[np.flatnonzero(test)]))
    sizes = np.bincount(targets, minlength=args.k)
    engine, t_metrics = timed(lambda: probe_scores(targets[test], logits, sizes))
    times["engine metrics (incl. test logits)"] = t_logits + t_metrics
    naive_logits, times["naive probe (dense nn.Linear)"] = timed(
        lambda: naive_probe(concepts, targets, split, args.k, probe_config, seed=0)
    )
    naive, times["naive metrics (sklearn)"] = timed(lambda: naive_metrics(targets[test], naive_logits[test], sizes))

    # expert-group ablation: six probes on nested column subsets, trained together vs one by one
    masks = np.zeros((6, args.concepts), dtype=bool)
    for p_, share in enumerate(np.linspace(1.0, 0.25, 6)):
        masks[p_, : int(share * args.concepts)] = True
    together, times["6 ablation probes trained together"] = timed(
        lambda: train_probes(concepts, masks, targets, split, args.k, probe_config, seed=0)
    )
    alone, times["6 ablation probes trained one by one"] = timed(
        lambda: [
            train_probe(concepts[:, np.flatnonzero(m)], targets, split, args.k, probe_config, seed=0) for m in masks
        ]
    )
    max_diff = max(float(np.abs(a.weight - b.weight).max()) for a, b in zip(together, alone))

    print("\nstage                                               seconds")
    for name, seconds in times.items():
        print(f"  {name:<50} {seconds:8.2f}")
    ratios = {
        "quantization: engine / bare faiss": times["engine kmeans (standardise+train+assign)"]
        / times["bare faiss.Kmeans (train+assign, pre-standardised)"],
        "quantization: sklearn / engine": times["naive sklearn KMeans"]
        / times["engine kmeans (standardise+train+assign)"],
        "quantization, one core busy: sklearn / engine": times["naive sklearn KMeans, one core busy elsewhere"]
        / times["engine kmeans, one core busy elsewhere"],
        "probe: naive / engine": times["naive probe (dense nn.Linear)"]
        / times["engine probe (sparse, fixed-shape steps)"],
        "metrics: naive / engine": times["naive metrics (sklearn)"] / times["engine metrics (incl. test logits)"],
        "probe+metrics: naive / engine": (times["naive probe (dense nn.Linear)"] + times["naive metrics (sklearn)"])
        / (times["engine probe (sparse, fixed-shape steps)"] + times["engine metrics (incl. test logits)"]),
        "ablation probes: one by one / together": times["6 ablation probes trained one by one"]
        / times["6 ablation probes trained together"],
    }
    print(
        f"  (scikit-learn ran {sk_kmeans.n_iter_} of {args.iters} iterations: it stops once no label changes; "
        "bench.kmeans_cpu compares all backends at equal iterations)"
    )
    print("\nratios")
    for name, value in ratios.items():
        print(f"  {name:<50} {value:8.2f}x")
    print("\nmetrics        engine    naive")
    for key in ("nmi", "ami", "top1", "map", "mi_bits"):
        print(f"  {key:<10} {engine[key]:9.4f} {naive[key]:9.4f}")
    print(f"  NMI difference: {100 * abs(engine['nmi'] - naive['nmi']):.2f} points")
    print(f"  ablation probes together vs alone: largest weight difference {max_diff:.2e}")
    if os.environ.get("OUT"):
        with open(os.path.join(os.environ["OUT"], "bench_pipeline.json"), "w") as f:
            json.dump(
                {"args": vars(args), "seconds": times, "ratios": ratios, "engine": engine, "naive": naive},
                f,
                indent=2,
                default=float,
            )


if __name__ == "__main__":
    main()
