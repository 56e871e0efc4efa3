"""faiss with a BLAS kernel that knows the CPU.

Meta's faiss-gpu wheel bundles OpenBLAS 0.3.15, which predates Sapphire Rapids and later x86 CPUs: on a CPU
it does not recognise it falls back to its generic SSE3 kernels ("Prescott"), and K-means' distance products
run about 4x slower than scikit-learn's (python -m bench.kmeans_cpu). ``import_faiss`` asks the bundled
library, in a child process, which kernel it would choose; only when that is a generic one on a CPU with
AVX-512 (or AVX2 and FMA) does it name the matching kernel (``OPENBLAS_CORETYPE=SKYLAKEX`` or ``HASWELL``)
while faiss loads, and then removes the variable again, so numpy's and scipy's own OpenBLAS, which know the
CPU, and torch's MKL are untouched. A value the user set wins. ``faiss_blas()`` says what runs, for manifests.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib.util
import os
import subprocess
import sys
import time
from pathlib import Path

# OpenBLAS's kernels without AVX2: chosen for a CPU it knows to lack it, or for one it does not know
GENERIC_KERNELS = {"prescott", "core2", "penryn", "dunnington", "nehalem", "atom", "katmai", "northwood", "banias"}
SKYLAKEX_FLAGS = {"avx512f", "avx512cd", "avx512bw", "avx512dq", "avx512vl"}
HASWELL_FLAGS = {"avx2", "fma"}
_chosen: dict = {}


def bundled_openblas() -> Path | None:
    """The OpenBLAS library inside the installed faiss wheel, or None (faiss absent, or linked to another BLAS)."""
    spec = importlib.util.find_spec("faiss")
    if spec is None or spec.origin is None:
        return None
    site = Path(spec.origin).parent.parent
    found = sorted(p for folder in site.glob("faiss*.libs") for p in folder.glob("libopenblas*.so*"))
    return found[0] if found else None


def cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo") as f:
            return set(next(line for line in f if line.startswith("flags")).split(":", 1)[1].split())
    except (OSError, StopIteration):
        return set()


def kernel_of(library: Path, environment: dict | None = None) -> str:
    """The kernel faiss's ``library`` chooses when it loads, asked in a child process (loading it here would
    fix it)."""
    probe = (  # faiss loads the library with its companions (libgfortran, ...) from the wheel
        "import ctypes, sys, faiss; f = ctypes.CDLL(sys.argv[1]).openblas_get_corename; "
        "f.restype = ctypes.c_char_p; print(f().decode())"
    )
    try:
        out = subprocess.run(
            [sys.executable, "-c", probe, str(library)], env=environment, capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.SubprocessError):
        return ""
    return out.stdout.strip() if out.returncode == 0 else ""


def core_type_for(kernel: str, flags: set[str]) -> str | None:
    """The kernel to name for a library that chose ``kernel`` on a CPU with ``flags``: None to keep its choice."""
    if kernel.lower() not in GENERIC_KERNELS:
        return None
    if SKYLAKEX_FLAGS <= flags:
        return "SKYLAKEX"
    if HASWELL_FLAGS <= flags:
        return "HASWELL"
    return None


def import_faiss():
    """``import faiss``, naming the bundled OpenBLAS's kernel while it loads where it would not know the CPU."""
    if "faiss" in sys.modules:
        return sys.modules["faiss"]
    library = bundled_openblas()
    core_type = None
    if library is not None and "OPENBLAS_CORETYPE" not in os.environ:
        core_type = core_type_for(kernel_of(library), cpu_flags())
    if core_type is not None:
        os.environ["OPENBLAS_CORETYPE"] = core_type
    try:
        import faiss
    finally:
        if core_type is not None:
            del os.environ["OPENBLAS_CORETYPE"]
    _chosen.update(library=library, core_type_set=core_type)
    return faiss


def faiss_blas() -> dict:
    """The BLAS under faiss's CPU search and K-means: library version and kernel, and whether qrp named it."""
    faiss = import_faiss()
    library = _chosen.get("library", bundled_openblas())
    if library is None:
        return {"faiss_blas": "not OpenBLAS (faiss built against another BLAS)", "faiss_version": faiss.__version__}
    loaded = ctypes.CDLL(str(library))  # the library faiss loaded: the same handle
    loaded.openblas_get_corename.restype = loaded.openblas_get_config.restype = ctypes.c_char_p
    return {
        "faiss_version": faiss.__version__,
        "faiss_blas": loaded.openblas_get_config().decode().split(" DYNAMIC_ARCH")[0],
        "faiss_blas_kernel": loaded.openblas_get_corename().decode(),
        "faiss_blas_kernel_named_by_qrp": _chosen.get("core_type_set"),
    }


_free_cores: dict = {}


def free_cores(*, window: float = 0.05, reuse_for: float = 5.0) -> int:
    """CPU cores that other processes leave idle, measured over ``window`` seconds from /proc/stat less this
    process's own use (/proc/self/stat), remembered for ``reuse_for`` seconds; all of this process's cores
    where /proc is not there. Threads beyond the free cores wait at every barrier of a parallel region for
    a core that another process holds: on 2 cores with one busy elsewhere, faiss's K-means ran 1.1-1.4x
    slower with 2 threads than with 1 (python -m bench.kmeans_cpu)."""
    now = time.monotonic()
    if _free_cores and now - _free_cores["at"] < reuse_for:
        return _free_cores["cores"]
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    try:
        before_all, before_self = _busy_jiffies()
        time.sleep(window)
        after_all, after_self = _busy_jiffies()
    except (OSError, ValueError, IndexError):
        return cores
    ticks = os.sysconf("SC_CLK_TCK") * window
    busy_elsewhere = max(0.0, (after_all - before_all) - (after_self - before_self)) / ticks
    free = max(1, min(cores, round(os.cpu_count() - busy_elsewhere)))
    _free_cores.update(at=now, cores=free)
    return free


def _busy_jiffies() -> tuple[int, int]:
    """Busy clock ticks of all CPUs together (user, nice, system, irq, softirq, steal) and of this process."""
    with open("/proc/stat") as f:
        fields = [int(v) for v in f.readline().split()[1:]]
    with open("/proc/self/stat") as f:
        own = f.read().rsplit(")", 1)[1].split()
    busy = fields[0] + fields[1] + fields[2] + sum(fields[5:8])
    return busy, int(own[11]) + int(own[12])  # utime, stime


@contextlib.contextmanager
def faiss_threads_on_free_cores():
    """faiss's CPU threads capped at the free cores for the duration (its own setting is the ceiling)."""
    faiss = import_faiss()
    ceiling = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(max(1, min(ceiling, free_cores())))
    try:
        yield
    finally:
        faiss.omp_set_num_threads(ceiling)
