"""Faces, people and cat faces (objects group) from OpenCV's Haar cascades (Viola-Jones detectors).

A concept is present when its cascade finds at least one box of at least a tenth of the image side;
person = the full-body or the upper-body cascade. The cascades ship in OpenCV 4.x wheels
(``cv2.data.haarcascades``; 5.x wheels have none).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import InputError
from .base import Expert, register_expert

CASCADES = {
    "face": ("haarcascade_frontalface_default.xml",),
    "person": ("haarcascade_fullbody.xml", "haarcascade_upperbody.xml"),
    "cat face": ("haarcascade_frontalcatface_extended.xml",),
}


class HaarObjects(Expert):
    name, group, source = "haar", "objects", "Haar"
    image_size = 320

    def __init__(self, *, scale_factor: float = 1.1, min_neighbors: int = 5, min_size_fraction: float = 0.1):
        try:
            import cv2
        except ImportError as exc:
            raise InputError(
                "OpenCV is not installed or cannot load",
                fix="pip install opencv-python==4.14.0.94 (Debian/Ubuntu: apt install libgl1)",
            ) from exc
        folder = Path(getattr(getattr(cv2, "data", None), "haarcascades", ""))
        missing = [f for files in CASCADES.values() for f in files if not (folder / f).is_file()]
        if missing:
            raise InputError(
                f"OpenCV {cv2.__version__} ships no Haar cascade {missing[0]}",
                fix="install an OpenCV 4.x wheel: pip install opencv-python==4.14.0.94",
            )
        self.cv2 = cv2
        self.cascades = {
            name: [cv2.CascadeClassifier(str(folder / f)) for f in files] for name, files in CASCADES.items()
        }
        super().__init__(
            list(CASCADES),
            {
                "cascades": CASCADES,
                "scale_factor": scale_factor,
                "min_neighbors": min_neighbors,
                "min_size_fraction": min_size_fraction,
                "opencv": cv2.__version__,
            },
        )

    def predict(self, images: np.ndarray) -> list[list[int]]:
        out = []
        for image in images:
            grey = self.cv2.equalizeHist(self.cv2.cvtColor(np.ascontiguousarray(image), self.cv2.COLOR_RGB2GRAY))
            side = int(self.params["min_size_fraction"] * min(grey.shape))
            out.append(
                [
                    c
                    for c, cascades in enumerate(self.cascades.values())
                    if any(
                        len(
                            cascade.detectMultiScale(
                                grey,
                                scaleFactor=self.params["scale_factor"],
                                minNeighbors=self.params["min_neighbors"],
                                minSize=(side, side),
                            )
                        )
                        for cascade in cascades
                    )
                ]
            )
        return out


register_expert("haar")(HaarObjects)
