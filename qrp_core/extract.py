"""Feature extraction: run a model source over an image collection, in batches, resumably.

Each requested layer becomes one ``<out>/<prefix><layer>.npy`` (n_images, dim) float32 array,
written batch by batch into a memory map; ``<out>/<prefix>progress.json`` records the finished
batches, so an interrupted run resumes where it stopped and gives identical features.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image
from tqdm.auto import tqdm

from .cache import atomic_write_json
from .errors import InputError
from .networks import Source

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp"}


@dataclass(frozen=True)
class ImageList:
    """Image files with ids (relative paths) and, for a folder of class folders, labels."""

    root: Path
    paths: tuple[Path, ...]
    ids: tuple[str, ...]
    labels: tuple[str, ...] | None

    def fingerprint(self) -> str:
        """sha256 of each file's id, size and modification time: a changed file, or another folder with the
        same file names, is another image set (hashing every byte would cost a good part of a labelling)."""
        digest = hashlib.sha256()
        for image_id, path in zip(self.ids, self.paths):
            stat = path.stat()
            digest.update(f"{image_id}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
        return digest.hexdigest()

    def table(self) -> pd.DataFrame:
        """image_id, path (absolute, so the table serves as a study's image table wherever the study file
        lives, and the app shows the images) and label where the folder has class folders."""
        table = pd.DataFrame({"image_id": self.ids, "path": [str(p.resolve()) for p in self.paths]})
        if self.labels is not None:
            table["label"] = self.labels
        return table


def list_images(root: str | Path) -> ImageList:
    """Every image below ``root``, sorted; the first folder level names the class when all images are in one."""
    root = Path(root)
    if not root.is_dir():
        raise InputError("image folder not found", where=root, fix="pass a folder of images or of class folders")
    paths = tuple(sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()))
    if not paths:
        raise InputError("no images found", where=root, fix=f"images must end in {sorted(IMAGE_SUFFIXES)}")
    ids = tuple(p.relative_to(root).as_posix() for p in paths)
    labels = tuple(i.split("/")[0] for i in ids) if all("/" in i for i in ids) else None
    return ImageList(root, paths, ids, labels)


def read_images(paths, size: int) -> np.ndarray:
    """RGB images resized to size x size (bilinear): (n, size, size, 3) uint8."""
    arrays = []
    for path in paths:
        try:
            with Image.open(path) as image:
                arrays.append(np.asarray(image.convert("RGB").resize((size, size), Image.BILINEAR)))
        except OSError as exc:
            raise InputError(
                f"cannot read image ({exc})", where=path, fix="remove or replace the broken file"
            ) from None
    return np.stack(arrays)


def normalise_images(images: np.ndarray, mean, std) -> torch.Tensor:
    """A network's input from uint8 RGB images (n, side, side, 3): (n, 3, side, side) float32 in [0, 1],
    then ``(x - mean) / std`` per channel."""
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0
    return (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)


def load_batch(paths, size: int, mean, std) -> torch.Tensor:
    """RGB images resized to size x size (bilinear), scaled to [0, 1], then normalised."""
    return normalise_images(read_images(paths, size), mean, std)


def pool(output: torch.Tensor) -> torch.Tensor:
    """One vector per image: global average pool of conv maps, CLS token of token sequences."""
    if output.dim() == 4:
        return output.mean(dim=(2, 3))
    if output.dim() == 3:
        return output[:, 0]
    return output.flatten(1)


def extract(
    source: Source,
    images: ImageList,
    out: str | Path,
    *,
    prefix: str = "",
    batch_size: int = 64,
    device: str = "auto",
    show_progress: bool = True,
    stop_after: int | None = None,
    refuse_other_run: bool = False,
) -> dict[str, Path]:
    """Write one feature file per layer of ``source``; resume a run that stopped.

    ``stop_after`` ends after that many new batches (tests use it to interrupt a run). Features of another
    source, weights or image set under the same ``prefix`` are replaced, or with ``refuse_other_run`` (the
    command line) left alone with an ``InputError``.
    Returns {layer: path of its (n_images, dim) float32 .npy}.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    dev = torch.device(
        "cuda" if device == "auto" and torch.cuda.is_available() else ("cpu" if device == "auto" else device)
    )
    model = source.model.to(dev).eval()
    captured: dict[str, torch.Tensor] = {}
    handles = [
        model.get_submodule(module).register_forward_hook(
            lambda _m, _i, output, layer=layer: captured.__setitem__(layer, pool(output).float())
        )
        for layer, module in source.layers.items()
    ]
    progress_path = out / f"{prefix}progress.json"
    # the source's metadata holds its weights' sha256: other weights in the same folder start afresh
    params = {
        "source": source.name,
        "metadata": source.metadata,
        "layers": source.layers,
        "images": images.fingerprint(),
        "batch_size": batch_size,
        "image_size": source.image_size,
    }
    progress = json.loads(progress_path.read_text()) if progress_path.is_file() else None
    if progress is not None and progress["params"] != params:
        if refuse_other_run:
            earlier = progress["params"]
            weights = earlier["metadata"].get("checkpoint") or earlier["metadata"].get("weights") or "no weights"
            raise InputError(
                f"already holds features of {earlier['source']} ({weights}; {progress['done_batches']} of "
                f"{progress['n_batches']} batches) from {'these' if earlier['images'] == params['images'] else 'other'} "
                f"images, with other settings than this run's",
                where=out,
                fix="pass another --out for each model (or delete the folder to extract afresh)",
            )
        progress = None  # another run's leftovers: start again
    done = progress["done_batches"] if progress else 0
    files = {layer: out / f"{prefix}{layer}.npy" for layer in source.layers}
    arrays: dict[str, np.ndarray] = {}
    n_batches = (len(images.paths) + batch_size - 1) // batch_size
    started = time.perf_counter()
    try:
        with (
            torch.inference_mode(),
            tqdm(total=n_batches, initial=done, desc=f"extract {source.name}", disable=not show_progress) as bar,
        ):
            for b in range(done, n_batches):
                if stop_after is not None and b - done >= stop_after:
                    break
                x = load_batch(
                    images.paths[b * batch_size : (b + 1) * batch_size], source.image_size, source.mean, source.std
                ).to(dev)
                with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=dev.type == "cuda"):
                    model(x)
                for layer, path in files.items():
                    if layer not in arrays:
                        mode = "r+" if done and path.is_file() else "w+"
                        arrays[layer] = np.lib.format.open_memmap(
                            path, mode=mode, dtype=np.float32, shape=(len(images.paths), captured[layer].shape[1])
                        )
                    arrays[layer][b * batch_size : b * batch_size + len(x)] = captured[layer].cpu().numpy()
                    arrays[layer].flush()
                atomic_write_json(
                    progress_path,
                    {
                        "params": params,
                        "done_batches": b + 1,
                        "n_batches": n_batches,
                        "device": str(dev),
                        "seconds": time.perf_counter() - started,
                    },
                )
                bar.update(1)
    finally:
        for handle in handles:
            handle.remove()
    return files
