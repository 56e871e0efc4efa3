"""Warm page loads of the app in headless Chromium, per page (not a test).

    python -m qrp_core demo                       # the demo study in ./cache
    python -m bench.app_pages [--cache cache] [--repeats 5]

Starts `streamlit run app.py` on 127.0.0.1, loads every page once to warm Streamlit's caches, then
times each page `--repeats` times from navigation start until the title is drawn and the app has
stopped running; prints the median per page, and the server's resident memory after every page (now and
at its peak). Then, the cold start: `--repeats` times, a fresh `streamlit run` and its first page (the
Ranking), whose imports and study are all still to load. Needs Debian's chromium and playwright.
"""

from __future__ import annotations

import argparse
import statistics
import time

from playwright.sync_api import sync_playwright

from bench.app_server import CHROMIUM, CHROMIUM_ARGS, PAGES, memory_gib, running_app, wait_until_drawn


def load(page, url: str) -> float:
    start = time.perf_counter()
    page.goto(url)
    wait_until_drawn(page)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cache", default="cache")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--port", type=int, default=None)
    args = parser.parse_args()
    with running_app(args.cache, args.port) as url, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        for path in PAGES:
            load(page, f"{url}/{path}")
        print(f"{'page':<16} median s  (min, max over {args.repeats})")
        for path in PAGES:
            times = [load(page, f"{url}/{path}") for _ in range(args.repeats)]
            name = path.split("?")[0] or "home"
            print(f"{name:<16} {statistics.median(times):7.2f}   ({min(times):.2f}, {max(times):.2f})")
        memory = memory_gib(url.pid)
        print(f"{'app memory':<16} {memory['VmRSS']:7.2f}   GiB resident after every page (peak {memory['VmHWM']:.2f})")
        cold = []
        for _ in range(args.repeats):
            with running_app(args.cache) as fresh:
                cold.append(load(page, f"{fresh}/ranking"))
        print(
            f"{'cold ranking':<16} {statistics.median(cold):7.2f}   ({min(cold):.2f}, {max(cold):.2f})"
            "   first page after a fresh streamlit run"
        )
        browser.close()


if __name__ == "__main__":
    main()
