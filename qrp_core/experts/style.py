"""Photographic style (other group): measurable cues of an image as binary concepts.

| concept | rule (on the image resized to 128 x 128) |
|---|---|
| greyscale | mean saturation < 0.04 |
| low saturation | mean saturation < 0.15 (and not greyscale) |
| high saturation | mean saturation > 0.5 |
| blurry | variance of the Laplacian of the luminance (0-255) < 60 |
| dark | mean value < 0.25 |
| bright | mean value > 0.8 |
| low contrast | standard deviation of the luminance < 0.08 |
"""

from __future__ import annotations

import numpy as np

from .base import Expert, hsv, register_expert

CUES = ("greyscale", "low saturation", "high saturation", "blurry", "dark", "bright", "low contrast")


def laplacian_variance(luminance: np.ndarray) -> np.ndarray:
    """Variance of the 4-neighbour Laplacian per image: (batch, h, w) -> (batch,)."""
    lap = (
        -4 * luminance[:, 1:-1, 1:-1]
        + luminance[:, :-2, 1:-1]
        + luminance[:, 2:, 1:-1]
        + luminance[:, 1:-1, :-2]
        + luminance[:, 1:-1, 2:]
    )
    return lap.reshape(len(lap), -1).var(axis=1)


class PhotoStyle(Expert):
    name, group, source = "style", "other", "Style"

    def __init__(
        self,
        *,
        grey: float = 0.04,
        low_saturation: float = 0.15,
        high_saturation: float = 0.5,
        blur: float = 60.0,
        dark: float = 0.25,
        bright: float = 0.8,
        low_contrast: float = 0.08,
    ):
        super().__init__(
            list(CUES),
            {
                "grey": grey,
                "low_saturation": low_saturation,
                "high_saturation": high_saturation,
                "blur": blur,
                "dark": dark,
                "bright": bright,
                "low_contrast": low_contrast,
            },
        )

    def predict(self, images: np.ndarray) -> list[list[int]]:
        p = self.params
        _, sat, val = hsv(images)
        luminance = images.astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
        mean_sat, mean_val = sat.mean(axis=(1, 2)), val.mean(axis=(1, 2))
        cues = np.stack(
            [
                mean_sat < p["grey"],
                (mean_sat < p["low_saturation"]) & (mean_sat >= p["grey"]),
                mean_sat > p["high_saturation"],
                laplacian_variance(luminance) < p["blur"],
                mean_val < p["dark"],
                mean_val > p["bright"],
                (luminance / 255.0).reshape(len(images), -1).std(axis=1) < p["low_contrast"],
            ],
            axis=1,
        )
        return [np.flatnonzero(row).tolist() for row in cues]


register_expert("style")(PhotoStyle)
