"""Adjusted mutual information at ImageNet-test scale: the engine's against scikit-learn's, same labels.

    python -m bench.ami                     # n=256,000 test rows, K=1,000 clusters of unequal sizes
    python -m bench.ami --n 50000 --k 300

AMI's cost is the expected mutual information of the two labelings' marginals (metrics.expected_mutual_info).
Prints the seconds of each, their ratio and both values.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from sklearn import metrics as skm

from qrp_core.metrics import adjusted_mutual_info


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=256_000)
    parser.add_argument("--k", type=int, default=1000)
    parser.add_argument("--agreement", type=float, default=0.5, help="fraction of predictions equal to the truth")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    sizes = rng.dirichlet(np.full(args.k, 5.0))
    truth = rng.choice(args.k, size=args.n, p=sizes)
    predicted = np.where(rng.random(args.n) < args.agreement, truth, rng.choice(args.k, size=args.n, p=sizes))
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    timings = {}
    for device in devices:
        start = time.perf_counter()
        value = adjusted_mutual_info(truth, predicted, device=device)
        timings[f"engine ({device})"] = (time.perf_counter() - start, value)
    start = time.perf_counter()
    reference = skm.adjusted_mutual_info_score(truth, predicted)
    timings["scikit-learn"] = (time.perf_counter() - start, reference)
    print(f"n={args.n} K={args.k} (threads: torch {torch.get_num_threads()})")
    for name, (seconds, value) in timings.items():
        print(
            f"  {name:<16} {seconds:7.2f} s   AMI {value:.12f}   sklearn / this {timings['scikit-learn'][0] / seconds:5.1f}x"
        )


if __name__ == "__main__":
    main()
