"""Colour names (texture group, as in the paper's Table 5): the 11 basic colour terms per pixel; an image
has a colour when at least ``threshold`` of its pixels carry the name."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import InputError
from .base import Expert, hsv, register_expert

NAMES = ("black", "blue", "brown", "grey", "green", "orange", "pink", "purple", "red", "white", "yellow")
_I = {n: i for i, n in enumerate(NAMES)}

# The project's rule, in HSV. Achromatic pixels (saturation below SAT_GREY, below SAT_GREY_BLUE for blue
# hues, or value below V_BLACK with little colour) are black, grey or white by value; chromatic ones are
# named by hue, with dark oranges, reds and yellows named brown and light, weakly saturated reds named
# pink. The structure is hand-made; its thresholds were fitted (coordinate ascent over a small grid) to
# agree with the van de Weijer table on 400 CIFAR-10 test images, and are checked on other photos by
# the tests: 85% of the pixels of Imagenette and DTD photos agree (the first, hand-set version: 78%).
HUE_BOUNDS = (
    (10, "red"),
    (40, "orange"),
    (65, "yellow"),
    (165, "green"),
    (255, "blue"),
    (290, "purple"),
    (340, "pink"),
    (360, "red"),
)
SAT_GREY, SAT_GREY_BLUE = 0.2, 0.15  # bluish greys look blue at lower saturation than other hues
V_BLACK, SAT_DARK_COLOUR = 0.3, 0.3  # below V_BLACK, a pixel keeps its hue name from this saturation up
V_WHITE, V_BROWN = 0.75, 0.8  # achromatic pixels from V_WHITE up are white; orange/yellow below V_BROWN are brown


def rule_names(images: np.ndarray) -> np.ndarray:
    """Colour-name index of every pixel of uint8 RGB images (..., 3) by the project's HSV rule."""
    hue, sat, val = hsv(images)
    bounds = np.array([b for b, _ in HUE_BOUNDS])
    names = np.array([_I[n] for _, n in HUE_BOUNDS])[
        np.searchsorted(bounds, hue, side="right").clip(max=len(bounds) - 1)
    ]
    names = np.where(np.isin(names, [_I["orange"], _I["yellow"]]) & (val < V_BROWN), _I["brown"], names)
    names = np.where((names == _I["red"]) & (val < 0.5) & (hue > 5) & (hue < 45), _I["brown"], names)
    names = np.where((names == _I["red"]) & (sat < 0.5) & (val > 0.7), _I["pink"], names)
    achromatic = np.where(val < V_BLACK, _I["black"], np.where(val >= V_WHITE, _I["white"], _I["grey"]))
    grey = sat < np.where(names == _I["blue"], SAT_GREY_BLUE, SAT_GREY)
    black = (val < V_BLACK) & ((sat < SAT_DARK_COLOUR) | (val < V_BLACK / 2))
    return np.where(grey | black, achromatic, names)


def table_names(images: np.ndarray, table: np.ndarray) -> np.ndarray:
    """Colour-name index of every pixel by the van de Weijer et al. (2009) table, indexed [r//8, g//8, b//8]."""
    q = images.astype(np.int64) // 8
    return table[q[..., 0], q[..., 1], q[..., 2]]


class ColourNames(Expert):
    name, group, source = "colour", "texture", "Color"

    def __init__(self, *, table: str | Path | None = None, threshold: float = 0.1):
        super().__init__(
            list(NAMES),
            {
                "threshold": threshold,
                "table": str(table) if table else None,
                "rule": "van de Weijer table" if table else "qrp HSV rule v2",
            },
        )
        self.table = None
        if table is not None:
            try:
                self.table = np.load(table, allow_pickle=False)
            except (OSError, ValueError) as exc:
                raise InputError(
                    f"cannot read the colour-name table ({exc})",
                    where=table,
                    fix="pass w2color.npy: uint8 (32, 32, 32) of indices into the 11 names",
                ) from None
            if self.table.shape != (32, 32, 32):
                raise InputError(
                    f"colour-name table of shape {self.table.shape}, expected (32, 32, 32)",
                    where=table,
                    fix="pass the argmax form of the table (see ../shared/data/README.md)",
                )

    def pixel_names(self, images: np.ndarray) -> np.ndarray:
        return rule_names(images) if self.table is None else table_names(images, self.table)

    def predict(self, images: np.ndarray) -> list[list[int]]:
        names = self.pixel_names(images).reshape(len(images), -1)
        fractions = np.stack([np.bincount(row, minlength=len(NAMES)) for row in names]) / names.shape[1]
        return [np.flatnonzero(f >= self.params["threshold"]).tolist() for f in fractions]


register_expert("colour")(ColourNames)
