"""The grid on a real Ray cluster: a head node (2 CPUs) and a worker node (1 CPU) on this machine.

Ray rewrites 127.0.0.1 and localhost to the host's network address, so the nodes use 127.0.0.2 and
127.0.0.3: still loopback, nothing leaves the machine. The cluster is shared by the module's tests;
every process it started is stopped by process id at the end, and the test fails if one is left.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import TINY_RUN
from qrp_core import executors
from qrp_core.cache import Cache
from qrp_core.cli import main
from qrp_core.executors import RayOptions, run_on_ray
from qrp_core.results import RESULT_KEYS, load_results
from qrp_core.study import load_study

ray = pytest.importorskip("ray", reason="ray is not installed (requirements.txt pins it)")

RAY = Path(sys.executable).parent / "ray"
HEAD_IP, WORKER_IP = "127.0.0.2", "127.0.0.3"
CLUSTER_CPUS = 3


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _children() -> dict[int, list[int]]:
    """Parent pid -> child pids of every live (non-zombie) process, from /proc."""
    out: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if fields[0] != "Z":
                out.setdefault(int(fields[1]), []).append(int(entry.name))
    return out


def descendants(pids: list[int]) -> list[int]:
    """The given live processes and all their live descendants."""
    children, out, todo = _children(), [], list(pids)
    alive = {p for kids in children.values() for p in kids}
    while todo:
        pid = todo.pop()
        if pid in alive or pid in children:
            out.append(pid)
        todo += children.get(pid, [])
    return out


def title(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def _wait_for(condition, timeout: float, what: str, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} within {timeout}s; log:\n{log.read_text()[-3000:]}")
        time.sleep(0.2)


def _port_open(host: str, port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex((host, port)) == 0


@pytest.fixture(scope="module")
def ray_cluster():
    """``HOST:PORT`` of a two-node cluster started with ``ray start --block`` (so each node's processes
    are descendants of one process we started); yields the address and the two ``ray start`` pids."""
    temp = Path(tempfile.mkdtemp(prefix="qrp-ray-", dir="/tmp"))  # short: Ray's socket paths must fit 107 bytes
    port = _free_port(HEAD_IP)
    address = f"{HEAD_IP}:{port}"
    env = {
        **os.environ,
        "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0",  # SIGTERM stops a node at once
        # a driver without RAY_AUTH_MODE sends no token, whatever ~/.ray holds: the nodes must match it
        "RAY_AUTH_MODE": os.environ.get("RAY_AUTH_MODE", "disabled"),
    }
    common = ["--block", "--disable-usage-stats", "--object-store-memory=100000000"]
    starters = []
    try:
        head_log = temp / "head.log"
        starters.append(
            subprocess.Popen(
                [
                    RAY,
                    "start",
                    "--head",
                    *common,
                    f"--port={port}",
                    "--num-cpus=2",
                    f"--node-ip-address={HEAD_IP}",
                    "--include-dashboard=false",
                    f"--temp-dir={temp}",
                ],
                stdout=head_log.open("w"),
                stderr=subprocess.STDOUT,
                env=env,
            )
        )
        _wait_for(lambda: _port_open(HEAD_IP, port), 60, "head node not up", head_log)
        worker_log = temp / "worker.log"
        starters.append(
            subprocess.Popen(
                [RAY, "start", *common, f"--address={address}", "--num-cpus=1", f"--node-ip-address={WORKER_IP}"],
                stdout=worker_log.open("w"),
                stderr=subprocess.STDOUT,
                env=env,
            )
        )
        ray.init(address=address, logging_level="WARNING")
        try:
            _wait_for(
                lambda: ray.cluster_resources().get("CPU") == CLUSTER_CPUS, 60, "worker node not joined", worker_log
            )
            assert sorted(n["NodeManagerAddress"] for n in ray.nodes() if n["Alive"]) == [HEAD_IP, WORKER_IP]
        finally:
            ray.shutdown()
        yield address, [p.pid for p in starters]
    finally:
        _stop(starters)
        shutil.rmtree(temp, ignore_errors=True)


def _stop(starters: list[subprocess.Popen]) -> None:
    """SIGTERM each node's ``ray start`` (it stops its processes), then SIGKILL any survivor by pid."""
    started = descendants([p.pid for p in starters])
    for proc in reversed(starters):  # worker node first
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    left = descendants(started)
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    assert not left, f"processes left running after stopping the cluster: {[title(p) for p in left]}"


def _published(cache: Cache) -> set[str]:
    """kind/key of every published artefact (temporary folders start with a dot)."""
    return {
        f"{kind.name}/{art.name}"
        for kind in cache.root.iterdir()
        if kind.name in ("clusterings", "splits", "probes")
        for art in kind.iterdir()
        if not art.name.startswith(".")
    }


def assert_same_artefacts(ray_cache: Cache, local_cache: Cache, results: pd.DataFrame) -> None:
    """Every artefact of the Ray run is the in-process run's, file for file.

    Manifests differ by their creation time and wall times. faiss computes ``distances.npy`` with
    BLAS, whose sums change order with the thread count (a task pins it to its CPUs); checked to
    change only the last bits, and never the assignments.
    """
    referenced = {f"{kind}s/{key}" for kind in ("clustering", "split", "probe") for key in results[kind]}
    assert _published(ray_cache) == referenced
    for name in referenced:
        for ours in sorted((ray_cache.root / name).iterdir()):
            theirs = local_cache.root / name / ours.name
            if ours.name == "manifest.json":
                continue
            if ours.name == "distances.npy":
                np.testing.assert_allclose(np.load(ours), np.load(theirs), rtol=1e-5)
            else:
                assert ours.read_bytes() == theirs.read_bytes(), f"{name}/{ours.name} differs"


def test_ray_run_equals_the_in_process_run(ray_cluster, tiny_cache, tiny_study, tmp_path, monkeypatch):
    address, _ = ray_cluster
    local_cache, local = tiny_cache
    cache = Cache(tmp_path / "cache")
    outcome = run_on_ray(tiny_study, TINY_RUN, cache, RayOptions(address=address), show_progress=False)
    assert outcome.failures == []
    pd.testing.assert_frame_equal(outcome.results, local, check_exact=True)
    stored = local.sort_values(RESULT_KEYS, ignore_index=True)
    pd.testing.assert_frame_equal(load_results(cache, tiny_study), stored, check_exact=True)
    assert_same_artefacts(cache, local_cache, local)

    def no_cluster(options):
        raise AssertionError("a fully cached grid started Ray")

    monkeypatch.setattr(executors, "connect", no_cluster)
    again = run_on_ray(tiny_study, TINY_RUN, cache, RayOptions(address=address), show_progress=False)
    pd.testing.assert_frame_equal(again.results, local, check_exact=True)


def test_a_worker_killed_mid_task_is_retried_and_the_numbers_do_not_change(
    ray_cluster, tiny_cache, tiny_study, tmp_path, capfd
):
    address, starters = ray_cluster
    local_cache, local = tiny_cache
    cache = Cache(tmp_path / "cache")
    outcome = {}
    driver = threading.Thread(
        target=lambda: outcome.update(
            run=run_on_ray(tiny_study, TINY_RUN, cache, RayOptions(address=address), show_progress=False)
        )
    )
    driver.start()
    killed = None
    while driver.is_alive() and killed is None:
        for pid in descendants(starters):
            if (name := title(pid)).startswith("ray::qrp-"):  # a worker process while it runs one of our tasks
                os.kill(pid, signal.SIGKILL)
                killed = name
                break
        time.sleep(0.01)
    driver.join(timeout=120)
    assert killed is not None, "no task was caught running"
    assert "will be retried" in "".join(capfd.readouterr())  # Ray saw the worker die mid-task
    assert outcome["run"].failures == []
    pd.testing.assert_frame_equal(outcome["run"].results, local, check_exact=True)
    assert_same_artefacts(cache, local_cache, local)


RUN_ARGS = ["--k", "8", "--seeds", "2", "--iters", "10", "--restarts", "2", "--epochs", "15"]  # TINY_RUN


def test_a_unit_that_keeps_failing_is_reported_and_the_others_land(
    ray_cluster, tiny_cache, tiny_study, tiny_study_path, tmp_path, capsys
):
    address, _ = ray_cluster
    local_cache, local = tiny_cache
    damaged = local[(local["model"] == "combo-net") & (local["seed"] == 1)].iloc[0]
    cache = Cache(tmp_path / "cache")
    folder = cache.path("clusterings", damaged["clustering"])
    shutil.copytree(local_cache.path("clusterings", damaged["clustering"]), folder)
    # a published clustering whose file was overwritten on the shared disk (same size, so it looks whole;
    # one cut short or deleted is written again, tests/test_cache_integrity.py)
    (folder / "assignments.npy").write_bytes(b"\0" * (folder / "assignments.npy").stat().st_size)
    assert (
        main(
            [
                "run",
                str(tiny_study_path),
                "--cache",
                str(cache.root),
                *RUN_ARGS,
                "--executor",
                "ray",
                "--address",
                address,
            ]
        )
        == 1
    )
    err = capsys.readouterr().err
    assert "failed: combo-net K=8 seed=1 (clustering): InputError" in err and "assignments.npy" in err
    assert "1 unit(s) failed" in err
    others = local[local["probe"] != damaged["probe"]].sort_values(RESULT_KEYS, ignore_index=True)
    pd.testing.assert_frame_equal(load_results(cache, tiny_study), others, check_exact=True)


def test_default_is_a_private_local_ray_that_leaves_nothing_running(tiny_cache, tiny_study_path, tmp_path):
    _, local = tiny_cache
    home = tmp_path / "home"  # Ray writes its token under ~/.ray; keep it out of the real home
    home.mkdir()
    env = {**os.environ, "HOME": str(home)}
    env.pop("RAY_ADDRESS", None)
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "qrp_core",
            "run",
            str(tiny_study_path),
            "--cache",
            str(tmp_path / "cache"),
            "--models",
            "shape-net",
            *RUN_ARGS,
            "--executor",
            "ray",
        ],
        cwd=Path(__file__).parent.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert "done=4 running=0 failed=0" in run.stderr  # one progress bar over 2 units x 2 tasks
    stored = load_results(Cache(tmp_path / "cache"), load_study(tiny_study_path))
    expected = local[local["model"] == "shape-net"].sort_values(RESULT_KEYS, ignore_index=True)
    pd.testing.assert_frame_equal(stored, expected, check_exact=True)
    marker = f"HOME={home}".encode()
    left = [pid for kids in _children().values() for pid in kids if marker in _environ(pid)]
    assert not left, [title(pid) for pid in left]


def _environ(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return b""


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--executor", "ray", "--address", "127.0.0.2:6379", "--cache", "relative/cache"], "is a relative path"),
        (["--address", "127.0.0.2:6379"], "--address is for --executor ray"),
        (["--executor", "ray", "--address", "no-port"], "is not HOST:PORT"),
        (["--executor", "ray", "--device", "cuda", "--task-gpus", "0"], "tasks that reserve no GPU"),
    ],
)
def test_bad_ray_options_stop_with_a_fix(tiny_study_path, extra, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["run", str(tiny_study_path), *RUN_ARGS, "--cache", str(tmp_path / "cache"), *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and "Fix: " in err
    assert not (tmp_path / "relative").exists() and not (tmp_path / "cache").exists()


def test_an_address_where_no_cluster_answers_fails_fast(tiny_study_path, tmp_path, capsys):
    port = _free_port(HEAD_IP)  # nothing listens there
    start = time.monotonic()
    assert (
        main(
            [
                "run",
                str(tiny_study_path),
                *RUN_ARGS,
                "--cache",
                str(tmp_path / "cache"),
                "--executor",
                "ray",
                "--address",
                f"{HEAD_IP}:{port}",
            ]
        )
        == 2
    )
    assert time.monotonic() - start < 30
    assert f"no Ray cluster answers at {HEAD_IP}:{port}" in capsys.readouterr().err
    assert not (tmp_path / "cache").exists()
