"""Demo studies of real photos (Imagenette, CIFAR-10): thumbnails, offline experts' concepts, and the
features of real networks, extracted once and resumably into the study folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from ..errors import InputError
from ..experts import get_expert
from ..experts.runner import label_images
from ..extract import extract, list_images
from ..labels import readable_labels
from ..networks import get_source
from ..study import Study, load_study
from .study_files import write_study

# plus "texture" when a DTD folder is given (it trains on it); CIFAR's 32-px images hold no readable text or faces
PHOTO_EXPERTS = {
    "imagenette": ("imagenet", "haar", "text", "colour", "style"),
    "cifar10": ("imagenet", "colour", "style"),
}
# the groups whose addition to the labels the photo demos explain (Cluster pairs)
PHOTO_PAIRS = ("objects", "texture")
# extraction jobs (one pass of a network each) and the representations they give:
# job -> (source, options); representation -> (job, layer, metadata)
PHOTO_JOBS = {
    "imagenette": {
        "lite0": ("efficientnet-lite0", {"blocks": (3, 7, 11)}),
        "lite1": ("efficientnet-lite1", {}),
        "lite2": ("efficientnet-lite2", {}),
        "lite0-random": ("efficientnet-lite0", {"pretrained": False}),
        "pixels": ("pixels", {"side": 16}),
    },
    "cifar10": {
        **{f"resnet{d}": (f"cifar-resnet{d}", {"weights": f"resnet{d}"}) for d in (20, 32, 44, 56)},
        "resnet20-random": ("cifar-resnet20", {}),
        "pixels": ("pixels", {"side": 16, "image_size": 32}),
    },
}
PHOTO_MODELS = {
    "imagenette": {
        **{f"lite{v}": (f"lite{v}", "final", {"network": f"lite{v}", "layer": 16}) for v in (0, 1, 2)},
        **{f"lite0-block{b}": ("lite0", f"block{b}", {"network": "lite0", "layer": b}) for b in (3, 7, 11)},
        "lite0-random": ("lite0-random", "final", {}),
        "pixels": ("pixels", "final", {}),
    },
    "cifar10": {job: (job, "final", {}) for job in PHOTO_JOBS["cifar10"]},
}


def build_photo_study(
    name: str,
    images_root: Path,
    out: Path,
    *,
    weights_dir: Path | None = None,
    dtd_root: Path | None = None,
    label_names: dict[str, str] | None = None,
    show_progress: bool = True,
) -> Study:
    """A study of a folder of class folders (Imagenette, CIFAR-10): thumbnails, the ground-truth labels
    as the base group, the concepts of the offline experts in ``PHOTO_EXPERTS``, and the features of
    every representation in ``PHOTO_MODELS[name]``, extracted once per network and resumably. Class folders
    named by WordNet id get ImageNet's names (or ``label_names``'); the image table keeps the id."""
    images = list_images(images_root)
    thumbs = out / "thumbs"
    thumbs.mkdir(parents=True, exist_ok=True)
    paths = np.array([f"thumbs/{i.replace('/', '__').rsplit('.', 1)[0]}.jpg" for i in images.ids], dtype=object)
    for source_path, thumb in zip(images.paths, paths):
        if not (out / thumb).is_file():
            with Image.open(source_path) as image:
                image.convert("RGB").resize((64, 64), Image.BILINEAR).save(out / thumb, quality=85)
    files, sources = {}, {}
    for job, (source_name, options) in PHOTO_JOBS[name].items():
        options = dict(options)
        if "weights" in options:
            matches = sorted((weights_dir or Path()).glob(f"{options['weights']}-*.th"))
            if not matches:
                raise InputError(
                    f"no {options['weights']} weights",
                    where=weights_dir or Path(),
                    fix="pass --weights-dir with the CIFAR ResNet .th files",
                )
            options["weights"] = matches[0]
        sources[job] = get_source(source_name, **options)
        files[job] = extract(sources[job], images, out / "features", prefix=f"{job}--", show_progress=show_progress)
    features = {model: files[job][layer] for model, (job, layer, _) in PHOTO_MODELS[name].items()}
    metadata = {model: {**sources[job].metadata, **meta} for model, (job, _, meta) in PHOTO_MODELS[name].items()}
    experts = [get_expert(e) for e in PHOTO_EXPERTS[name]]
    if dtd_root is not None:
        experts.append(get_expert("texture", dtd_root=dtd_root))
    concepts = pd.concat(
        [
            pd.read_parquet(label_images(expert, images, out / "experts", show_progress=show_progress))
            for expert in experts
        ],
        ignore_index=True,
    )
    labels = readable_labels(images.labels, label_names, source=images_root)
    ids = np.array(images.ids, dtype=object)
    return load_study(
        write_study(
            out, name, ids, concepts, features, metadata, labels=labels, paths=paths, label_ids=np.array(images.labels)
        )
    )
