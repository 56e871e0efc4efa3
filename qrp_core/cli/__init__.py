"""``python -m qrp_core <verb>`` and the ``qrp`` command: ``parser`` reads the command line, ``verbs`` and
``analysis_verbs`` carry each verb out, ``output`` prints and writes their tables."""

from __future__ import annotations

import errno
import sys

from ..errors import InputError
from . import analysis_verbs, report_verb, ssl_verb, verbs
from .parser import build_parser

WRITE_REFUSALS = {
    errno.ENOSPC: "free disk space, or pass --cache on a disk with room; the cache is as it was before the write",
    errno.EDQUOT: "free space within your quota, or pass --cache elsewhere; the cache is as it was before the write",
    errno.EACCES: "pass --cache (or $QRP_CACHE) a folder you can write to",
    errno.EROFS: "pass --cache (or $QRP_CACHE) a folder on a writable disk",
    errno.EPERM: "pass --cache (or $QRP_CACHE) a folder you can write to",
}

VERBS = {
    "validate": verbs.validate,
    "extract": verbs.extract,
    "train-ssl": ssl_verb.train_ssl,
    "fetch": verbs.fetch,
    "label": verbs.label,
    "import-labels": verbs.import_labels,
    "demo": verbs.demo,
    "run": verbs.run,
    "ranking": verbs.ranking,
    "export": verbs.export,
    "ablation": analysis_verbs.ablation,
    "pairs": analysis_verbs.pairs,
    "explain": analysis_verbs.explain,
    "sweep-k": analysis_verbs.sweep_k,
    "layers": analysis_verbs.layers,
    "transfer": analysis_verbs.transfer,
    "significance": analysis_verbs.significance,
    "report": report_verb.report,
}


def main(argv: list[str] | None = None) -> int:
    """Run one verb; bad input prints ``error: <file>: <problem>. Fix: <fix>`` and returns 2."""
    args = build_parser().parse_args(argv)
    try:
        return VERBS[args.verb](args)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # the machine refused a write: every write is atomic, so nothing is left half-done
        if exc.errno not in WRITE_REFUSALS:
            raise
        print(
            f"error: {exc.filename or args.cache or 'the cache'}: {exc.strerror}. Fix: {WRITE_REFUSALS[exc.errno]}",
            file=sys.stderr,
        )
        return 2


__all__ = ["build_parser", "main"]
