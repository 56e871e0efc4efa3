"""``report``: a study's results at one K as one self-contained HTML file."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tqdm.auto import tqdm


def add_parser(verbs, positive_int, group_set, common) -> None:
    p = verbs.add_parser(
        "report",
        help="one self-contained HTML file of a study's results at one K, to send (no request leaves it)",
    )
    p.add_argument("study", type=Path, help="study .toml file")
    p.add_argument("--k", type=positive_int, default=None, help="the K to report (default: the only K computed)")
    p.add_argument("--groups", type=group_set, default="all", help="the probe's group set ('a+b' or 'all')")
    p.add_argument("--models", default="", help="comma-separated models (default: every model with results)")
    p.add_argument("--out", type=Path, default=None, help="the HTML file (default: <study>-report-k<K>.html)")
    common(p)


def report(args: argparse.Namespace) -> int:
    from ..cache import Cache, atomic_write_bytes
    from ..errors import InputError
    from ..report import build_report
    from ..results import load_results
    from ..study import load_study

    study, cache = load_study(args.study), Cache(args.cache)
    if args.k is None:
        computed = sorted(int(k) for k in load_results(cache, study)["k"].unique())
        if len(computed) > 1:
            raise InputError(
                f"the results hold several K ({', '.join(map(str, computed))})",
                where=args.study,
                fix=f"choose one with --k, e.g. --k {computed[-1]}",
            )
        args.k = computed[0]
    out = args.out or Path(f"{study.name}-report-k{args.k}.html")
    models = [m for m in args.models.split(",") if m] or None
    with tqdm(total=100, desc="report", unit="%", file=sys.stderr) as bar:

        def progress(fraction: float, what: str) -> None:
            bar.update(round(100 * fraction) - bar.n)
            bar.set_postfix_str(what)

        page = build_report(study, cache, k=args.k, groups=args.groups, models=models, progress=progress)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(out, page.encode())
    except OSError as exc:
        raise InputError(
            f"cannot write here ({exc.strerror or exc})",
            where=out,
            fix="choose an --out path in a folder you can write to",
        ) from None
    print(f"wrote {out} ({len(page.encode()) / 1e6:.1f} MB); open it in any browser, it requests nothing")
    return 0
