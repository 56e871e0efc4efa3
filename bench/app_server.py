"""The app served by `streamlit run` on 127.0.0.1 and Debian's headless Chromium, for the browser test
and the page-load benchmark."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
PAGES = [
    "",
    "ranking",
    "expert_groups",
    "varying_k",
    "transfer",
    "cluster_pairs?seed=0",
    "cluster_browser",
    "cluster_map?seed=0&pair=2,5",
]
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class AppURL(str):
    """The served app's address, and the process id of its server (for its memory)."""

    pid: int


def memory_gib(pid: int) -> dict[str, float]:
    """The resident set of a process now (VmRSS) and at its peak (VmHWM), in GiB."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return {name: int(fields[name].split()[0]) / 2**20 for name in ("VmRSS", "VmHWM")}


@contextlib.contextmanager
def running_app(cache: str | Path, port: int | None = None):
    """Serve app.py on the given cache; yields its URL (an ``AppURL``) once Streamlit answers its health check."""
    port = port or free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "streamlit",
            "run",
            str(ROOT / "app.py"),
            "--server.headless",
            "true",
            "--server.address",
            "127.0.0.1",
            "--server.port",
            str(port),
            "--server.fileWatcherType",
            "none",
            "--browser.gatherUsageStats",
            "false",
        ],
        cwd=ROOT,
        env={**os.environ, "QRP_CACHE": str(cache)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    url = AppURL(f"http://127.0.0.1:{port}")
    url.pid = process.pid
    try:
        for _ in range(120):
            try:
                urllib.request.urlopen(f"{url}/_stcore/health", timeout=1)
                break
            except OSError:
                time.sleep(0.5)
        else:
            raise RuntimeError("streamlit did not start")
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)


def wait_until_drawn(page, timeout_ms: int = 60_000) -> None:
    """The sidebar and the page title are drawn and the app has stopped running."""
    page.wait_for_selector('[data-testid="stSidebar"] >> text=Measure', timeout=timeout_ms)
    page.wait_for_selector('[data-testid="stMain"] h1', timeout=timeout_ms)
    page.wait_for_function("() => !document.querySelector('[data-testid=\"stStatusWidget\"]')", timeout=timeout_ms)
