"""Public image archives for the demo studies, fetched once with a checksum (for machines with internet).

python -m qrp_core fetch imagenette --out data     # -> data/imagenette2/val (3,925 photos, 10 classes)
"""

from __future__ import annotations

import hashlib
import shutil
import tarfile
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

from ..errors import InputError


@dataclass(frozen=True)
class Archive:
    url: str
    md5: str  # as published with the archive (fast.ai) and used by torchvision's Imagenette
    folder: str  # the image folder inside the archive that a demo study reads


ARCHIVES = {
    "imagenette": Archive(
        "https://s3.amazonaws.com/fast-ai-imageclas/imagenette2.tgz",
        "fe2fc210e6bb7c5664d602c3cd71e612",
        "imagenette2/val",
    ),
}


def fetch(archive: Archive, out: str | Path, *, show_progress: bool = True) -> Path:
    """Download ``archive`` into ``out``, check its md5, unpack it; return its image folder.

    An archive already unpacked there is reused. The download goes to a temporary file that is
    removed on failure, and unpacking goes to a temporary folder renamed into place, so an
    interrupted fetch leaves nothing that looks finished.
    """
    out = Path(out)
    target = out / archive.folder
    if target.is_dir():
        return target
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out, prefix=".fetch-") as tmp:
        path = Path(tmp) / "archive"
        digest = hashlib.md5()
        try:
            with urllib.request.urlopen(archive.url) as response, open(path, "wb") as f:
                size = int(response.headers.get("Content-Length") or 0) or None
                with tqdm(
                    total=size, unit="B", unit_scale=True, desc=Path(archive.url).name, disable=not show_progress
                ) as bar:
                    for block in iter(lambda: response.read(1 << 20), b""):
                        f.write(block)
                        digest.update(block)
                        bar.update(len(block))
        except OSError as exc:
            raise InputError(
                f"cannot download ({exc})",
                where=archive.url,
                fix="check the internet connection, or download the archive by hand and pass its "
                "unpacked image folder with --images",
            ) from exc
        if digest.hexdigest() != archive.md5:
            raise InputError(
                f"md5 {digest.hexdigest()} differs from the published {archive.md5}",
                where=archive.url,
                fix="the download is corrupt or the archive changed: fetch again",
            )
        unpacked = Path(tmp) / "unpacked"
        try:
            with tarfile.open(path) as tar:
                tar.extractall(unpacked, filter="data")  # refuses absolute paths and links out of the folder
        except (tarfile.TarError, OSError) as exc:
            raise InputError(
                f"cannot unpack the archive safely ({type(exc).__name__}: {exc})",
                where=archive.url,
                fix="the archive is damaged or holds paths outside its folder: do not use it",
            ) from exc
        top = archive.folder.split("/")[0]
        if not (unpacked / archive.folder).is_dir():
            raise InputError(
                f"the archive holds no {archive.folder}/",
                where=archive.url,
                fix="the archive's layout changed: pass its image folder with --images",
            )
        shutil.move(str(unpacked / top), str(out / top))
    return target
