"""The grid on a Ray cluster: one task per clustering, one per batch of probes that share it.

The driver (the ``run`` command) checks every input, submits the tasks and gathers their keys into
the same results table as an in-process run (``Runner.run``). Each task rebuilds its ``Runner`` from
the study file and the cache folder, which every node reaches at the same path, and writes its own
artefacts there (atomically, ``Cache.write``); artefacts already present are skipped. Only the keys
travel through Ray. ``import ray`` happens inside these functions, so the rest of qrp never needs Ray.
"""

from __future__ import annotations

import dataclasses
import socket
import sys
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from tqdm.auto import tqdm

from .cache import Cache
from .config import RunConfig
from .errors import InputError
from .pipeline import Runner
from .study import Study, load_study

Unit = tuple[str, int, int]  # (model, K, seed)
LOCAL_OBJECT_STORE_BYTES = 128 * 2**20  # only keys travel through Ray
POLL_SECONDS = 0.5
CONNECT_SECONDS = 5.0
LOCAL_NODE_IP = "127.0.0.2"


@dataclass(frozen=True)
class RayOptions:
    """Where the grid's tasks run and what each one asks of a node.

    Parameters
    ----------
    address : str or None
        ``HOST:PORT`` of a running cluster's head node (``ray start --head``); None starts a private
        local Ray on this machine for the length of the run.
    task_cpus, task_gpus : float
        CPUs and GPUs each task reserves; a task's torch and faiss use ``int(task_cpus)`` threads.
    task_memory_gb : float or None
        Memory each task reserves, in GiB (Ray schedules by it; it does not cap the process).
    max_retries : int
        Reruns of a task whose worker process or node died. A task that raised is not rerun: its
        inputs are the same the second time, so it would fail the same way; it is reported once.
    """

    address: str | None = None
    task_cpus: float = 1.0
    task_gpus: float = 0.0
    task_memory_gb: float | None = None
    max_retries: int = 3


@dataclass(frozen=True)
class UnitFailure:
    """A unit whose task raised, or whose worker died more often than ``max_retries``, and the error."""

    unit: Unit
    step: str  # "clustering" or "probes"
    error: str

    def __str__(self) -> str:
        model, k, seed = self.unit
        return f"{model} K={k} seed={seed} ({self.step}): {self.error}"


@dataclass(frozen=True)
class GridOutcome:
    """The results rows that landed (also saved to the results table) and the units that failed."""

    results: pd.DataFrame
    failures: list[UnitFailure]


@dataclass(frozen=True)
class TaskContext:
    """What every task needs to rebuild the driver's ``Runner`` on its node."""

    study_path: str
    cache_root: str
    config: RunConfig
    threads: int


def check_ray_options(options: RayOptions, config: RunConfig, cache: Cache) -> None:
    """Refuse what cannot work on a cluster, before anything starts."""
    try:
        import ray  # noqa: F401
    except ImportError:
        raise InputError(
            "--executor ray needs the ray package, which is not installed",
            fix="pip install -r requirements.txt (it pins ray)",
        ) from None
    if options.task_cpus <= 0 or options.task_gpus < 0 or (options.task_memory_gb or 0) < 0:
        raise InputError(
            "task resources must be positive (CPUs) or non-negative (GPUs, memory)",
            fix="pass e.g. --task-cpus 1 --task-gpus 0",
        )
    if options.task_gpus == 0 and "cuda" in (config.kmeans.device, config.probe.device):
        raise InputError("--device cuda with tasks that reserve no GPU", fix="pass --task-gpus 1 (or a fraction)")
    if options.address and not cache.root.is_absolute():
        raise InputError(
            f"the cache folder {str(cache.root)!r} is a relative path, but tasks on other nodes write to it",
            where=cache.root,
            fix="pass --cache /absolute/path on a filesystem every node mounts at that path",
        )
    if options.address:
        check_reachable(options.address)


def run_on_ray(
    study: Study, config: RunConfig, cache: Cache, options: RayOptions, *, show_progress: bool = True
) -> GridOutcome:
    """Run the grid of ``config`` as Ray tasks; the results that landed are saved like ``Runner.run``'s.

    Inputs are checked on the driver first, so bad input stops the run before any task starts.
    The feature-file hashes are then saved to the cache, so tasks read them instead of hashing
    every feature file again.
    """
    check_ray_options(options, config, cache)
    runner = Runner(study, config, cache, show_progress=show_progress)
    units, sets = runner.plan()
    cache.save_file_hashes()
    context = TaskContext(
        str(Path(study.path).resolve()),
        str(cache.root.resolve()),
        task_config(config, options),
        max(1, int(options.task_cpus)),
    )
    keys = {unit: cached for unit in units if (cached := cached_keys(runner, unit, sets[unit[0]]))}
    todo = [unit for unit in units if unit not in keys]
    failures = []
    if todo:
        import ray

        connect(options)
        try:
            check_resources(options)
            refs, started = submit(todo, context, options)
            found, failures = gather(refs, started, n_cached=len(units) - len(todo), show_progress=show_progress)
        finally:
            ray.shutdown()
        keys.update(found)
    rows = [row for unit in units if unit in keys for row in runner.result_rows(unit, *keys[unit])]
    return GridOutcome(runner.finish(rows), failures)


def task_config(config: RunConfig, options: RayOptions) -> RunConfig:
    """The config the tasks run: ``auto`` means the CPU for a task that reserved no GPU, since Ray
    leaves every GPU visible to it (the device is not part of any key)."""
    if options.task_gpus > 0:
        return config
    cpu = {
        part: dataclasses.replace(getattr(config, part), device="cpu")
        for part in ("kmeans", "probe")
        if getattr(config, part).device == "auto"
    }
    return dataclasses.replace(config, **cpu)


def cached_keys(runner: Runner, unit: Unit, sets: list[tuple[str, ...]]):
    """(clustering key, split key, probe keys) of a unit whose probes are all cached, else None."""
    model, k, seed = unit
    clustering_key = runner.clustering_key(model, k, seed)
    split_key = runner.split_key(clustering_key, seed)
    probe_keys = {groups: runner.probe_key(split_key, groups, seed) for groups in sets}
    if all(runner.cache.has("probes", key) for key in probe_keys.values()):
        return clustering_key, split_key, probe_keys
    return None


def connect(options: RayOptions) -> None:
    """Join the cluster at ``options.address``, or start a private local Ray.

    Workers import qrp from the same checkout as the driver (``PYTHONPATH``), so every node needs
    it at the same path (or qrp installed in its environment).
    """
    import logging

    import ray

    root = str(Path(__file__).resolve().parent.parent)
    common = {
        "runtime_env": {"env_vars": {"PYTHONPATH": root}},
        "log_to_driver": False,
        "logging_level": logging.WARNING,
    }
    if options.address is None:
        if sys.platform == "linux":  # Ray swaps 127.0.0.1 for the host's network address; other loopbacks stay
            common["_node_ip_address"] = LOCAL_NODE_IP
        ray.init(address="local", include_dashboard=False, object_store_memory=LOCAL_OBJECT_STORE_BYTES, **common)
        return
    ray.init(address=options.address, **common)


def check_reachable(address: str) -> None:
    """Fail fast on a wrong ``HOST:PORT`` (Ray itself keeps retrying for minutes)."""
    if "://" in address:
        return
    host, _, port = address.rpartition(":")
    fix = (
        "start a cluster with `ray start --head --port=6379` and pass --address HEAD_HOST:6379 "
        "(ray status on the head prints it)"
    )
    if not host or not port.isdigit():
        raise InputError(f"--address {address!r} is not HOST:PORT", fix=fix)
    try:
        socket.create_connection((host, int(port)), timeout=CONNECT_SECONDS).close()
    except OSError as exc:
        raise InputError(f"no Ray cluster answers at {address} ({exc})", fix=fix) from None


def check_resources(options: RayOptions) -> None:
    """A task that no node can hold would wait forever: refuse it instead."""
    import ray

    nodes = [node["Resources"] for node in ray.nodes() if node["Alive"]]
    fits = [
        r
        for r in nodes
        if r.get("CPU", 0) >= options.task_cpus
        and r.get("GPU", 0) >= options.task_gpus
        and r.get("memory", 0) >= (options.task_memory_gb or 0) * 2**30
    ]
    if not fits:
        biggest = max(nodes, key=lambda r: (r.get("GPU", 0), r.get("CPU", 0)), default={})
        raise InputError(
            f"no node of the cluster has {options.task_cpus:g} CPU(s), {options.task_gpus:g} GPU(s)"
            f" and {options.task_memory_gb or 0:g} GiB for one task (the largest has "
            f"{biggest.get('CPU', 0):g} CPUs, {biggest.get('GPU', 0):g} GPUs)",
            fix="lower --task-cpus / --task-gpus / --task-memory, or add a node that has them",
        )


def submit(units: list[Unit], context: TaskContext, options: RayOptions) -> tuple[dict, object]:
    """One clustering task per unit and one probe task that waits on it; returns {ref: (step, unit)}
    and the actor that counts which tasks have started."""
    import ray

    resources = {
        "num_cpus": options.task_cpus,
        "num_gpus": options.task_gpus,
        "max_retries": options.max_retries,
        "retry_exceptions": False,
    }
    if options.task_memory_gb:
        resources["memory"] = int(options.task_memory_gb * 2**30)
    cluster = ray.remote(**resources)(clustering_task)
    probe = ray.remote(**resources)(probes_task)
    started = ray.remote(num_cpus=0, max_restarts=-1)(StartedTasks).remote()
    refs = {}
    for unit in units:
        label = "{} K={} seed={}".format(*unit)
        keys = cluster.options(name=f"qrp-clustering {label}").remote(context, started, unit)
        refs[keys] = ("clustering", unit)
        refs[probe.options(name=f"qrp-probes {label}").remote(context, started, unit, keys)] = ("probes", unit)
    return refs, started


def gather(
    pending: dict, started, *, n_cached: int, show_progress: bool
) -> tuple[dict[Unit, tuple], list[UnitFailure]]:
    """Wait for every task with one progress bar over the grid's tasks (the cached units' count as
    done); returns each finished unit's keys and the first error of each failed unit."""
    import ray

    keys, split_keys, failures = {}, {}, {}
    done, running, failed = 2 * n_cached, 0, 0
    with tqdm(
        total=len(pending) + done, initial=done, desc="qrp run (ray)", unit="task", disable=not show_progress
    ) as bar:
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=len(pending), timeout=POLL_SECONDS)
            for ref in ready:
                step, unit = pending.pop(ref)
                try:
                    value = ray.get(ref)
                except Exception as exc:  # the task's own error, or its worker died too often
                    failed += 1
                    failures.setdefault(unit, UnitFailure(unit, step, error_text(exc)))
                    continue
                done += 1
                if step == "clustering":
                    split_keys[unit] = value
                else:
                    keys[unit] = (*split_keys[unit], value)
            try:
                running = ray.get(started.count.remote([ref.task_id().hex() for ref in pending]))
            except ray.exceptions.RayError:  # its node died: the count restarts, the run goes on
                pass
            bar.set_postfix_str(f"done={done} running={running} failed={failed}", refresh=False)
            bar.update(len(ready))
    return keys, list(failures.values())


def error_text(exc: BaseException) -> str:
    """The task's own exception where Ray carries one (its traceback stays in the Ray logs)."""
    cause = getattr(exc, "cause", None)
    error = cause if isinstance(cause, BaseException) else exc
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[-1] if text else ''}"


# --- what runs on the workers ---------------------------------------------------------------
class StartedTasks:
    """Ray actor: the tasks that have begun, reported by each task as it starts (for "running")."""

    def __init__(self):
        self.started: set[str] = set()

    def mark(self, task: str) -> None:
        self.started.add(task)

    def count(self, pending: list[str]) -> int:
        return len(self.started.intersection(pending))


def task_runner(context: TaskContext, started) -> Runner:
    """This task's ``Runner``, after telling the driver the task has begun.

    Threads are pinned to the task's CPUs so tasks sharing a node do not oversubscribe it.
    """
    import ray
    import torch

    from .blas import import_faiss

    faiss = import_faiss()
    started.mark.remote(ray.get_runtime_context().get_task_id())
    torch.set_num_threads(context.threads)
    faiss.omp_set_num_threads(context.threads)
    return Runner(load_study(context.study_path), context.config, Cache(context.cache_root), show_progress=False)


def clustering_task(context: TaskContext, started, unit: Unit) -> tuple[str, str]:
    """Cluster and split one unit; returns (clustering key, split key)."""
    return task_runner(context, started).cluster_unit(*unit)


def probes_task(context: TaskContext, started, unit: Unit, keys: tuple[str, str]) -> dict[tuple[str, ...], str]:
    """Train the missing probes of one clustering together; returns each group set's probe key."""
    runner = task_runner(context, started)
    model, k, seed = unit
    return runner.probes(*keys, runner.group_sets(model), seed, k)


def default_task_gpus(device: str) -> float:
    """One GPU per task when the run asks for CUDA, none otherwise."""
    return 1.0 if device == "cuda" else 0.0


def print_failures(failures: list[UnitFailure]) -> None:
    for failure in failures:
        print(f"failed: {failure}", file=sys.stderr)
    if failures:
        print(
            f"{len(failures)} unit(s) failed; the other results were saved. Fix the cause and rerun the same "
            "command: finished work is reused.",
            file=sys.stderr,
        )
