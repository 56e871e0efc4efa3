"""Warm page loads of the app in headless Chromium, per page (not a test).

    python -m qrp_core demo                       # the demo study in ./cache
    python -m bench.app_pages [--cache cache] [--repeats 5]

Starts `streamlit run app.py` on 127.0.0.1, loads every page once to warm Streamlit's caches, then
times each page `--repeats` times from navigation start until the title is drawn and the app has
stopped running; prints the median per page. Needs Debian's chromium and playwright.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from playwright.sync_api import sync_playwright

ROOT = Path(__file__).resolve().parents[1]
PAGES = ["", "ranking", "expert_groups", "varying_k", "transfer", "cluster_pairs?base=labels&added=colour&seed=0",
         "cluster_browser"]


def load(page, url: str) -> float:
    start = time.perf_counter()
    page.goto(url)
    page.wait_for_selector('[data-testid="stSidebar"] >> text=Measure', timeout=60_000)
    page.wait_for_selector('[data-testid="stMain"] h1', timeout=60_000)
    page.wait_for_function("() => !document.querySelector('[data-testid=\"stStatusWidget\"]')", timeout=60_000)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cache", default="cache")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--port", type=int, default=8765)
    args = parser.parse_args()
    server = subprocess.Popen([sys.executable, "-m", "streamlit", "run", str(ROOT / "app.py"), "--server.headless",
                               "true", "--server.address", "127.0.0.1", "--server.port", str(args.port),
                               "--server.fileWatcherType", "none", "--browser.gatherUsageStats", "false"],
                              cwd=ROOT, env={**os.environ, "QRP_CACHE": args.cache}, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{args.port}"
    try:
        for _ in range(120):
            try:
                urllib.request.urlopen(f"{url}/_stcore/health", timeout=1)
                break
            except OSError:
                time.sleep(0.5)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=[
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"])
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            for path in PAGES:
                load(page, f"{url}/{path}")
            print(f"{'page':<16} median s  (min, max over {args.repeats})")
            for path in PAGES:
                times = [load(page, f"{url}/{path}") for _ in range(args.repeats)]
                name = path.split("?")[0] or "home"
                print(f"{name:<16} {statistics.median(times):7.2f}   ({min(times):.2f}, {max(times):.2f})")
            browser.close()
    finally:
        server.terminate()
        server.wait(timeout=10)


if __name__ == "__main__":
    main()
