"""Mean average precision at ImageNet-test scale: the engine's against scikit-learn's, same scores.

    python -m bench.map                     # n=256,000 test rows, K=1,000 classes (scikit-learn takes a minute)
    python -m bench.map --n 50000 --k 300

The engine places every score among its class's few positives by binary search (metrics.RankedScores)
instead of sorting each class's whole column. Prints the seconds of each, their ratio and both values.
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np
import torch
from sklearn import metrics as skm

from qrp_core.metrics import class_average_precision


def sklearn_map(labels: np.ndarray, scores: np.ndarray) -> float:
    """Per-class average precision of each present class's score column, as scikit-learn computes it."""
    present = np.unique(labels)
    return float(np.mean([skm.average_precision_score(labels == c, scores[:, c]) for c in present]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=256_000)
    parser.add_argument("--k", type=int, default=1000)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    labels = rng.choice(args.k, size=args.n, p=rng.dirichlet(np.full(args.k, 5.0)))
    logits = rng.normal(size=(args.n, args.k)).astype(np.float32)
    logits[np.arange(args.n), labels] += 2.0
    scores = torch.log_softmax(torch.as_tensor(logits, dtype=torch.float64), dim=1)  # as probe_scores ranks
    scores[:, : args.k // 10] = scores[:, : args.k // 10].round(decimals=1)  # ties, which count as one threshold
    timings = {}
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for device in devices:
        on = scores.to(device)
        truth = torch.as_tensor(labels, device=device)
        start = time.perf_counter()
        value = float(class_average_precision(truth, on).mean())
        timings[f"engine ({device})"] = (time.perf_counter() - start, value)
    start = time.perf_counter()
    reference = sklearn_map(labels, scores.numpy())
    timings["scikit-learn"] = (time.perf_counter() - start, reference)
    print(
        f"n={args.n} K={args.k} on {platform.processor() or platform.machine()} (torch threads {torch.get_num_threads()})"
    )
    for name, (seconds, value) in timings.items():
        print(
            f"  {name:<16} {seconds:7.2f} s   mAP {value:.12f}   sklearn / this {timings['scikit-learn'][0] / seconds:5.1f}x"
        )


if __name__ == "__main__":
    main()
