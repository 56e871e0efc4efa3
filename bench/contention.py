"""Probe training while other processes share the cores: libgomp's default spin count against the engine's.

    python -m bench.contention                  # 20,000 rows, K=300: alone, then 2 copies at once
    python -m bench.contention --k 30 --copies 3

torch and faiss run their threads on libgomp, whose idle threads spin up to 300,000 times (about 3 ms)
for the next parallel region before sleeping. When another process needs the cores too (a second run,
the app, a test suite), spinning threads take the time slices of the threads that have work, and a
probe step's small parallel regions wait for them; qrp_core sets ``GOMP_SPINCOUNT=1000``, libgomp's
own count for a machine it knows to be oversubscribed (see qrp_core/__init__.py). Each setting runs
one copy alone and then ``--copies`` copies at once, each in a fresh process, and prints seconds per
probe epoch. Not a test: it prints times and ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

SETTINGS = {"libgomp default": "300000", "qrp_core": "1000"}


def worker(rows: int, k: int, epochs: int) -> None:
    """One probe trained for ``epochs`` epochs; prints {"epoch_s": ...}."""
    import numpy as np

    from bench.pipeline import make_study
    from qrp_core.config import ProbeConfig, SplitConfig
    from qrp_core.probe import train_probe
    from qrp_core.split import stratified_split

    _, concepts = make_study(rows, 8, k, n_concepts=1700, active=20)
    targets = np.random.default_rng(0).integers(0, k, rows)
    split, _ = stratified_split(targets, SplitConfig(), seed=0)
    train_probe(concepts, targets, split, k, ProbeConfig(max_epochs=1, device="cpu"), seed=0)  # warm-up
    start = time.perf_counter()
    train_probe(concepts, targets, split, k, ProbeConfig(max_epochs=epochs, device="cpu"), seed=0)
    print(json.dumps({"epoch_s": (time.perf_counter() - start) / epochs}))


def run_copies(copies: int, spincount: str, args: argparse.Namespace) -> list[float]:
    command = [
        sys.executable,
        "-m",
        "bench.contention",
        "--worker",
        "--rows",
        str(args.rows),
        "--k",
        str(args.k),
        "--epochs",
        str(args.epochs),
    ]
    env = {**os.environ, "GOMP_SPINCOUNT": spincount}
    processes = [subprocess.Popen(command, env=env, stdout=subprocess.PIPE, text=True) for _ in range(copies)]
    return [json.loads(p.communicate()[0].strip().splitlines()[-1])["epoch_s"] for p in processes]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--k", type=int, default=300)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--copies", type=int, default=2)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.rows, args.k, args.epochs)
        return
    print(f"probe epochs at {args.rows} rows, K={args.k}, 1,700 concepts (~20 active), {os.cpu_count()} CPUs")
    times = {}
    for name, spincount in SETTINGS.items():
        alone = run_copies(1, spincount, args)[0]
        together = run_copies(args.copies, spincount, args)
        times[name] = (alone, max(together))
        print(
            f"  {name:16s} GOMP_SPINCOUNT={spincount:>6s}: alone {alone:.4f} s/epoch, {args.copies} at once "
            + ", ".join(f"{t:.4f}" for t in together)
            + f" s/epoch (slowest {max(together) / alone:.1f}x alone)"
        )
    (default_alone, default_together), (ours_alone, ours_together) = times.values()
    print(
        f"qrp_core against libgomp's default: alone {default_alone / ours_alone:.2f}x, "
        f"{args.copies} at once {default_together / ours_together:.2f}x (above 1: qrp_core faster)"
    )


if __name__ == "__main__":
    main()
