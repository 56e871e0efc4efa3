"""The command line's parser: its verbs, their options with defaults, and the argument types that refuse
bad values before any work."""

from __future__ import annotations

import argparse
import functools
import sys
from pathlib import Path

from ..config import DEMO_K, KMeansConfig, ProbeConfig, RunConfig, SplitConfig
from ..results import parse_groups
from ..study import Study
from .report_verb import add_parser as add_report_parser
from .ssl_verb import add_parser as add_train_ssl_parser

DESCRIPTION = """Quantized reverse probing: demo, run, ranking, export, validate, the analyses
(ablation, pairs, explain, sweep-k, layers, transfer, significance), report, and what makes inputs (extract, label,
import-labels, fetch, train-ssl)."""


LABEL_NAMES_HELP = (
    "CSV with columns id,name naming each class folder (default: WordNet ids such as n01440764 get ImageNet's "
    "names, other folders keep theirs); the image table keeps the folder as label_id"
)


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Adds "(default: ...)" to help, except where the help speaks of it or the default is None or False."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or action.default is False or "default" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


def _int_at_least(text: str, minimum: int) -> int:
    value = int(text)  # a ValueError reads "invalid positive_int value: 'x'"
    if value < minimum:
        raise argparse.ArgumentTypeError(f"{value} is too small: give {minimum} or more")
    return value


def positive_int(text: str) -> int:
    """argparse type of counts: K, seeds, iterations, restarts, epochs, ..."""
    return _int_at_least(text, 1)


def _float_at_least(text: str, minimum: float, *, strict: bool) -> float:
    value = float(text)  # a ValueError reads "invalid ... value: 'x'"
    if value < minimum or (strict and value == minimum) or value != value:
        raise argparse.ArgumentTypeError(
            f"{text} is too small: give {'more than' if strict else 'at least'} {minimum:g}"
        )
    return value


def positive_float(text: str) -> float:
    """argparse type of a resource a task needs: CPUs, GiB of memory."""
    return _float_at_least(text, 0.0, strict=True)


def non_negative_float(text: str) -> float:
    """argparse type of GPUs per task (0: none)."""
    return _float_at_least(text, 0.0, strict=False)


def cluster_count(text: str) -> int:
    """argparse type of a K to cluster with: a clustering needs two clusters or more."""
    return _int_at_least(text, 2)


def non_negative_int(text: str) -> int:
    """argparse type of a seed."""
    return _int_at_least(text, 0)


def group_set(text: str) -> str:
    """argparse type of a group set: ``all`` or groups joined by '+' (checked against the study later)."""
    if not any(group.strip() for group in text.split("+")):
        raise argparse.ArgumentTypeError(f"empty group set {text!r}: give 'all' or groups joined by '+' (a+b)")
    return text


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cache", type=Path, default=None, help="cache folder (default: $QRP_CACHE or ./cache)")


def _probe_options(
    p: argparse.ArgumentParser,
    *,
    groups_default: str | None = "all",
    groups_help: str = "'all' or groups joined by '+'",
) -> None:
    """Which probe: a study, and the model, K, seed and group set of one result row."""
    p.add_argument("study", type=Path, help="study .toml file")
    p.add_argument("--model", required=True, help="the model of the probe (a [models.NAME] of the study)")
    p.add_argument("--k", type=positive_int, required=True, help="the number of clusters K of the probe's run")
    p.add_argument("--seed", type=non_negative_int, default=0, help="the clustering's seed (0..S-1 after --seeds S)")
    p.add_argument("--groups", type=group_set, default=groups_default, help=groups_help)


def _grid_options(
    p: argparse.ArgumentParser,
    *,
    ks: tuple[int, ...] | None = (1000,),
    k_help: str = "number(s) of clusters K",
    choose_groups: bool = True,
    from_cache: bool = False,
) -> None:
    """The run grid; a verb that sets the group sets itself offers no --groups. ``from_cache``: an analysis of
    what ``run`` computed, whose K and seeds default to those the cache holds (``analysis_verbs``)."""
    p.add_argument("--models", default="", help="comma-separated model names (default: all)")
    if from_cache:
        k_help, ks = (
            "number(s) of clusters K (default: every K the results hold for these models; 1000 where none)",
            None,
        )
    p.add_argument("--k", type=cluster_count, nargs="+", default=list(ks) if ks else None, help=k_help)
    p.add_argument(
        "--seeds",
        type=positive_int,
        default=None if from_cache else 5,
        help="number of clusterings (seeds 0..S-1)"
        + (" (default: as many as the results hold at these K; 5 where none)" if from_cache else ""),
    )
    p.set_defaults(groups=None)
    if choose_groups:
        p.add_argument(
            "--groups",
            type=group_set,
            action="append",
            default=None,
            help="concept groups of one probe, joined by '+', or 'all' (repeatable; default: all)",
        )
    p.add_argument("--iters", type=positive_int, default=KMeansConfig.n_iter, help="K-means iterations")
    p.add_argument(
        "--restarts", type=positive_int, default=KMeansConfig.n_restarts, help="K-means restarts (best kept)"
    )
    p.add_argument(
        "--max-points-per-centroid",
        type=positive_int,
        default=KMeansConfig.max_points_per_centroid,
        help="K-means training sample = K x this",
    )
    p.add_argument(
        "--early-stop",
        action="store_true",
        help="let faiss stop K-means when the objective stalls (default: run every iteration)",
    )
    p.add_argument(
        "--epochs",
        type=positive_int,
        default=ProbeConfig.max_epochs,
        help="probe epochs; the learning rate is divided by 10 after 60%% and again after 80%% of them "
        "(the paper's 60 and 80 of 100), and the epoch of lowest validation loss is kept",
    )
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="where to compute")


def _executor_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--executor",
        choices=["local", "ray"],
        default="local",
        help="local: everything in this process (default); ray: one Ray task per clustering and one per "
        "batch of probes sharing it, on a cluster (README: Running on a Ray cluster)",
    )
    p.add_argument(
        "--address",
        default=None,
        metavar="HOST:PORT",
        help="ray: the head node of a running cluster; --cache must then be an absolute path that every "
        "node mounts (default: a private local Ray for this run)",
    )
    p.add_argument(
        "--task-cpus", type=positive_float, default=1.0, help="ray: CPUs per task, also its torch/faiss threads"
    )
    p.add_argument(
        "--task-gpus",
        type=non_negative_float,
        default=None,
        help="ray: GPUs per task (default: 1 with --device cuda, else 0)",
    )
    p.add_argument(
        "--task-memory",
        type=positive_float,
        default=None,
        metavar="GB",
        help="ray: memory per task in GiB, for scheduling (default: none reserved)",
    )


def build_parser() -> argparse.ArgumentParser:
    prog = "qrp" if Path(sys.argv[0]).name == "qrp" else "python -m qrp_core"  # the console script or -m
    parser = argparse.ArgumentParser(prog=prog, description=DESCRIPTION, formatter_class=_HelpFormatter)
    verb_parser = functools.partial(argparse.ArgumentParser, formatter_class=_HelpFormatter)  # not inherited
    verbs = parser.add_subparsers(dest="verb", required=True, parser_class=verb_parser)

    p = verbs.add_parser("demo", help="build a demo study, measure and analyse its models")
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help="where to write the study (default: <cache>/demo, <cache>/ssl for --study ssl)",
    )
    p.add_argument("--n-images", type=positive_int, default=None, help="images of a built world (default 1500 / 3000)")
    p.add_argument(
        "--study",
        choices=["concepts", "ssl", "synthetic", "imagenette", "cifar10"],
        default="concepts",
        help="concepts: drawn images seen by EfficientNet-Lite0 and baselines (default); ssl: the same "
        "images seen by a small backbone trained by 8 self-supervised and reference methods (~15 min); synthetic: "
        "planted features (seconds); imagenette, cifar10: real photos from --images",
    )
    p.add_argument(
        "--images",
        type=Path,
        default=None,
        help="folder of class folders (imagenette: ../shared/data/imagenette-val here)",
    )
    p.add_argument("--weights-dir", type=Path, default=None, help="cifar10: folder of the CIFAR ResNet .th files")
    p.add_argument("--label-names", type=Path, default=None, help=LABEL_NAMES_HELP)
    p.add_argument(
        "--dtd",
        type=Path,
        default=None,
        help="imagenette, cifar10: DTD class folders; adds the texture expert (trained on them)",
    )
    _common(p)
    _grid_options(
        p,
        ks=None,
        choose_groups=False,
        k_help=f"imagenette, cifar10: number(s) of clusters K (default: "
        f"{DEMO_K}); the concepts and synthetic demos fix K (their views show K={DEMO_K})",
    )

    p = verbs.add_parser("extract", help="run a model source over a folder of images (resumable)")
    p.add_argument(
        "--source",
        required=True,
        help="efficientnet-lite0/1/2, cifar-resnet20/32/44/56, pixels, "
        "colour-histogram, or torchvision:ARCH / timm:ARCH with --weights (MoCo, DINO, SwAV, ... "
        "checkpoints; needs torchvision or timm installed)",
    )
    p.add_argument("--images", type=Path, required=True, help="folder of images or of class folders")
    p.add_argument("--out", type=Path, required=True, help="folder for <layer>.npy and images.csv")
    p.add_argument(
        "--weights",
        type=Path,
        default=None,
        help="checkpoint: CIFAR ResNet state dict, or a torchvision/timm backbone's (self-supervised) weights",
    )
    p.add_argument("--label-names", type=Path, default=None, help=LABEL_NAMES_HELP)
    p.add_argument("--random-init", action="store_true", help="EfficientNet without its ImageNet weights")
    p.add_argument("--blocks", type=int, nargs="*", default=[], help="EfficientNet blocks to keep as layers too")
    p.add_argument(
        "--layers",
        nargs="*",
        default=[],
        metavar="MODULE",
        help="more representations: outputs of these named submodules (e.g. layer3, blocks.6)",
    )
    p.add_argument("--batch-size", type=positive_int, default=64, help="images per forward pass")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="where to compute")

    add_train_ssl_parser(verbs, positive_int, positive_float)

    p = verbs.add_parser("run", help="cluster, probe and score the study's models")
    p.add_argument("study", type=Path, help="study .toml file")
    _common(p)
    _grid_options(p)
    _executor_options(p)

    p = verbs.add_parser("ranking", help="mean ± std over seeds per model, best NMI first")
    p.add_argument("study", type=Path, help="study .toml file")
    p.add_argument("--k", type=positive_int, default=None, help="only this K")
    p.add_argument("--groups", type=group_set, default=None, help="only this group set ('a+b' or 'all')")
    p.add_argument(
        "--rows",
        choices=["mean", "seeds"],
        default=None,
        help="mean ± std over seeds, or one row per seed (default: mean for table/latex, seeds for csv/json)",
    )
    p.add_argument(
        "--format",
        choices=["table", "csv", "json", "latex"],
        default="table",
        help="latex: a booktabs table per K and group set, best in bold",
    )
    p.add_argument("--output", type=Path, default=None, help="write to this file instead of stdout")
    _common(p)

    p = verbs.add_parser("export", help="per-image cluster and prediction of one probe (CSV or Parquet)")
    _probe_options(p)
    p.add_argument("--output", type=Path, required=True, help="a .csv or .parquet path (its folder is created)")
    _common(p)

    p = verbs.add_parser("label", help="label a folder of images with offline experts (resumable)")
    p.add_argument("--images", type=Path, required=True, help="folder of images or of class folders")
    p.add_argument(
        "--experts", default="colour,style", help="comma-separated, from: colour, haar, imagenet, style, text, texture"
    )
    p.add_argument("--out", type=Path, required=True, help="folder for <expert>.parquet and <expert>.json")
    p.add_argument(
        "--colour-table",
        type=Path,
        default=None,
        help="van de Weijer colour-name table (w2color.npy) instead of the project's rule",
    )
    p.add_argument("--dtd", type=Path, default=None, help="texture: DTD class folders to train its head on")
    p.add_argument(
        "--adapter",
        nargs=5,
        action="append",
        default=[],
        metavar=("KIND", "MODEL", "LABELS", "GROUP", "SOURCE"),
        help="one of the paper's experts from its exported model (.pt2 or TorchScript) and label file; "
        "KIND: classifier, multilabel, detector or segmenter; e.g. --adapter classifier "
        "places365.pt2 categories_places365.txt scene Places (repeatable)",
    )
    p.add_argument(
        "--clip",
        nargs=2,
        default=None,
        metavar=("ARCH", "WEIGHTS"),
        help="CLIP photographic style via open_clip, e.g. --clip ViT-B-32 clip-vit-b-32.bin",
    )

    p = verbs.add_parser("fetch", help="download a public image archive for a demo study (md5-checked)")
    p.add_argument("dataset", choices=["imagenette"])
    p.add_argument("--out", type=Path, default=Path("data"), help="where to unpack it (default: ./data)")

    p = verbs.add_parser("import-labels", help="convert labels made elsewhere into a long concept table")
    p.add_argument("labels", type=Path, help="CSV/Parquet: long (image_id, concept, group) or wide (0/1 columns)")
    p.add_argument("--group", default=None, help="the group of a wide table's concepts")
    p.add_argument("--source", default=None, help="prefix of a wide table's concept names, e.g. Places")
    p.add_argument("--out", type=Path, required=True, help="the long table to write (.parquet or .csv)")

    p = verbs.add_parser("validate", help="load the study and every model's features, report problems")
    p.add_argument("study", type=Path, help="study .toml file")
    _analysis_verbs(verbs)
    add_report_parser(verbs, positive_int, group_set, _common)
    return parser


def _analysis_verbs(verbs) -> None:
    p = verbs.add_parser(
        "ablation", help="expert-group ablations: cumulative prefixes (Fig. 4), per-group gain (Table 3)"
    )
    p.add_argument("study", type=Path, help="study .toml file")
    p.add_argument(
        "--order",
        default=None,
        help="comma-separated group order after the base group (default: objects,scene,material,texture,other)",
    )
    _common(p)
    _grid_options(p, choose_groups=False, from_cache=True)  # --order sets the probes' groups

    p = verbs.add_parser("pairs", help="cluster pairs whose confusion drops most when a group is added (Fig. 5)")
    p.add_argument("study", type=Path, help="study .toml file")
    p.add_argument("--base", type=group_set, default="labels", help="groups of the first probe, joined by '+'")
    p.add_argument("--added", required=True, help="the group added for the second probe")
    p.add_argument("--top", type=positive_int, default=10, help="pairs and concepts to print")
    _common(p)
    _grid_options(p, choose_groups=False, from_cache=True)  # --base and --added set the probes' groups

    p = verbs.add_parser("explain", help="why a probe tells two clusters apart: coefficients, concepts, images")
    _probe_options(
        p,
        groups_default=None,
        groups_help="'all' or groups joined by '+' (default: the groups of the `pairs` comparison that ranked this "
        "pair, else the model's only group set, else all groups)",
    )
    p.add_argument(
        "--pair",
        type=non_negative_int,
        nargs=2,
        required=True,
        metavar=("I", "J"),
        help="the two clusters to tell apart (ids 0..K-1, as in export's cluster column)",
    )
    p.add_argument("--top", type=positive_int, default=10, help="coefficients, concepts and images to print")
    _common(p)

    p = verbs.add_parser("sweep-k", help="the measure for several K (Fig. 6, 7)")
    p.add_argument("study", type=Path, help="study .toml file")
    _common(p)
    _grid_options(p, ks=(500, 1000, 1500, 2000, 2500, 3000))

    p = verbs.add_parser(
        "layers", help="the measure per layer of each network (models with network and layer metadata)"
    )
    p.add_argument("study", type=Path, help="study .toml file")
    _common(p)
    _grid_options(p)

    p = verbs.add_parser("transfer", help="apply the source study's probes to a target collection (Table 7)")
    p.add_argument("source", type=Path, help="study whose results hold the probes")
    p.add_argument("target", type=Path, help="study of the other collection (same model names)")
    p.add_argument("--k", type=positive_int, default=None, help="only the probes of this K (default: every K)")
    p.add_argument(
        "--groups",
        type=group_set,
        default=None,
        help="the probes' group set ('a+b'); default: every group but the base group (the labels), as in the paper",
    )
    _common(p)

    p = verbs.add_parser("significance", help="permutation baseline, bootstrap CIs and model comparisons")
    p.add_argument("study", type=Path, help="study .toml file")
    p.add_argument("--k", type=positive_int, default=None, help="only this K (default: every K)")
    p.add_argument(
        "--groups", type=group_set, default=None, help="only this group set ('a+b' or 'all'; default: every group set)"
    )
    p.add_argument("--models", default="", help="comma-separated (default: all in the results)")
    p.add_argument("--repeats", type=positive_int, default=20, help="permutation repeats R (p-value >= 1/(R+1))")
    p.add_argument("--bootstrap", type=positive_int, default=200, help="bootstrap resamples of the test images")
    p.add_argument("--metric", default="nmi", choices=["nmi", "ami", "top1", "map", "mi_bits"])
    _common(p)


def run_config(args, study: Study | None) -> RunConfig:
    """The run grid of the command line; with a study, its group sets are checked against it (K and the
    models when the run plans its grid)."""
    models = tuple(m for m in args.models.split(",") if m)
    groups = tuple(parse_groups(g, study) for g in args.groups) if args.groups else ()
    return RunConfig(
        models=models,
        ks=tuple(args.k),
        seeds=tuple(range(args.seeds)),
        group_sets=groups,
        kmeans=KMeansConfig(
            n_iter=args.iters,
            n_restarts=args.restarts,
            max_points_per_centroid=args.max_points_per_centroid,
            early_stop_threshold=0.0 if args.early_stop else -1.0,
            device=args.device,
        ),
        split=SplitConfig(),
        probe=ProbeConfig(max_epochs=args.epochs, device=args.device),
    )
