"""The figures issue 7's GPU targets ask for, read from a GPU session's $OUT (bench/gpu_session.sh).

python bench/gpu_summary.py OUT_DIR        # prints what it finds; missing files are said, not guessed
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def _load(folder: Path, name: str):
    path = folder / name
    return json.loads(path.read_text()) if path.is_file() else None


def summary(folder: Path) -> list[str]:
    lines = []
    steps = folder / "steps.txt"
    lines += ["steps: " + "; ".join(steps.read_text().split("\n")).strip("; ")] if steps.is_file() else ["steps: none"]
    probe_steps = _load(folder, "gpu_probe_step.json") or []
    for run in probe_steps:
        lines.append(
            f"probe steps, {run['n_probes']} probe(s), {run['rows']} rows: {run['graphed_epochs_per_s']:.1f} epochs/s "
            f"({run['mode']}; first epoch {run['first_graphed_epoch_s']:.1f} s; autograd "
            f"{run['autograd_s_per_epoch']:.2f} s/epoch; uncompiled graph "
            f"{run.get('uncompiled_graph_s_per_epoch', float('nan')):.3f} s; no graph "
            f"{run.get('uncompiled_without_graph_s_per_epoch', float('nan')):.3f} s; "
            f"compile failure: {run['compile_failure']}; graph failure: {run['graph_failure']})"
        )
    kmeans = _load(folder, "gpu_kmeans_step.json")
    for run in (kmeans or {}).get("runs", []):
        lines.append(
            f"Lloyd iteration, noise {run['noise']}: float32 {run['float32_s_per_iteration'] * 1e3:.1f} ms, "
            f"TF32+recompute {run['auto_s_per_iteration'] * 1e3:.1f} ms ({run['speedup']:.2f}x), "
            f"{100 * run['rows_recomputed_in_float32']:.1f}% rows recomputed, same assignment "
            f"{100 * run['same_final_assignment_fraction']:.2f}%"
        )
    scale = _load(folder, "bench_gpu.json")
    if scale:
        for speed in scale.get("probe_speed", []):
            lines.append(
                f"engine probe, {speed['n_probes']} probe(s) on {speed['n_train']} rows: "
                f"{speed['epochs_per_second']:.1f} epochs/s ({speed['steps']})"
            )
        for c in scale.get("clusterings", []):
            kmeans_s = ", ".join(f"{name} {seconds:.1f} s" for name, seconds in c["kmeans"].items())
            lines.append(
                f"clustering seed {c['seed']}: {c['wall_s']:.0f} s (K-means: {kmeans_s}; probes "
                f"{c['probe_training_s']:.0f} s; rest {c['split_metrics_and_writes_s']:.0f} s), "
                f"NMI {100 * c['nmi_full']:.2f}"
            )
        if "evaluation_s_projected_5_clusterings" in scale:
            peak = {name: round(gib, 1) for name, gib in scale.get("peak_memory_gib", {}).items()}
            lines.append(
                f"one model, 5 clusterings, projected: {scale['evaluation_s_projected_5_clusterings']:.0f} s "
                f"(target < 300 s); peak memory GiB {peak}"
            )
    return lines or ["nothing found"]


if __name__ == "__main__":
    print("\n".join(summary(Path(sys.argv[1]))))
