"""Procedurally drawn images of a shape in a colour with a texture: what the synthetic studies show."""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw

RGB = {
    "red": (215, 40, 40),
    "green": (40, 160, 60),
    "blue": (40, 80, 210),
    "yellow": (235, 200, 30),
    "purple": (140, 60, 170),
}


def _polygon(shape: str, cx: float, cy: float, r: float) -> list[tuple[float, float]]:
    if shape == "square":
        return [(cx - r, cy - r), (cx + r, cy - r), (cx + r, cy + r), (cx - r, cy + r)]
    if shape == "triangle":
        return [(cx + r * math.cos(a), cy + r * math.sin(a)) for a in np.radians([-90, 30, 150])]
    if shape == "star":
        return [
            (
                cx + (r if i % 2 == 0 else r / 2.4) * math.cos(math.radians(-90 + 36 * i)),
                cy + (r if i % 2 == 0 else r / 2.4) * math.sin(math.radians(-90 + 36 * i)),
            )
            for i in range(10)
        ]
    if shape == "cross":
        t = r / 3
        return [
            (cx - t, cy - r),
            (cx + t, cy - r),
            (cx + t, cy - t),
            (cx + r, cy - t),
            (cx + r, cy + t),
            (cx + t, cy + t),
            (cx + t, cy + r),
            (cx - t, cy + r),
            (cx - t, cy + t),
            (cx - r, cy + t),
            (cx - r, cy - t),
            (cx - t, cy - t),
        ]
    raise ValueError(f"no polygon for {shape!r}")


def _mask(shape: str, size: int, cx: float, cy: float, r: float) -> Image.Image:
    mask = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(mask)
    box = (cx - r, cy - r, cx + r, cy + r)
    if shape == "circle":
        draw.ellipse(box, fill=255)
    elif shape == "ring":
        draw.ellipse(box, fill=255)
        draw.ellipse((cx - r / 2, cy - r / 2, cx + r / 2, cy + r / 2), fill=0)
    else:
        draw.polygon(_polygon(shape, cx, cy, r), fill=255)
    return mask


def _texture(texture: str, size: int, colour: tuple[int, int, int]) -> Image.Image:
    """The shape's fill: the colour, with a darker pattern on top."""
    fill = Image.new("RGB", (size, size), colour)
    dark = tuple(int(c * 0.45) for c in colour)
    draw = ImageDraw.Draw(fill)
    step = max(size // 8, 3)
    if texture == "striped":
        for x in range(-size, size, step):
            draw.line([(x, size), (x + size, 0)], fill=dark, width=max(step // 3, 1))
    elif texture == "dotted":
        for x in range(step // 2, size, step):
            for y in range(step // 2, size, step):
                draw.ellipse((x - step / 5, y - step / 5, x + step / 5, y + step / 5), fill=dark)
    elif texture == "checked":
        for x in range(0, size, step):
            for y in range(0, size, step):
                if (x // step + y // step) % 2:
                    draw.rectangle((x, y, x + step - 1, y + step - 1), fill=dark)
    return fill


def draw_image(shape: str, colour: str, texture: str, rng: np.random.Generator, *, size: int = 64) -> Image.Image:
    """One image: a light background, the shape at a random place and scale, filled with the texture."""
    background = tuple(int(v) for v in rng.integers(200, 250, 3))
    image = Image.new("RGB", (size, size), background)
    r = size * rng.uniform(0.25, 0.38)
    cx, cy = rng.uniform(r + 2, size - r - 2, 2)
    image.paste(_texture(texture, size, RGB[colour]), (0, 0), _mask(shape, size, cx, cy, r))
    return image


BACKGROUNDS = {"white": (238, 238, 238), "grey": (140, 140, 140), "sky": (175, 205, 235), "sand": (225, 205, 160)}
SIZES = {"small": (0.13, 0.18), "large": (0.26, 0.33)}  # radius as a fraction of the image side


def draw_scene(
    shape: str,
    colour: str,
    texture: str,
    background: str,
    size: str,
    count: int,
    rng: np.random.Generator,
    *,
    image_size: int = 96,
) -> Image.Image:
    """``count`` copies of one shape (one colour, one texture, one size) on a plain background."""
    base = np.array(BACKGROUNDS[background]) + rng.integers(-12, 13, 3)
    image = Image.new("RGB", (image_size, image_size), tuple(int(v) for v in np.clip(base, 0, 255)))
    fill = _texture(texture, image_size, RGB[colour])
    for k in range(count):
        r = image_size * rng.uniform(*SIZES[size])
        if count == 1:
            lo, hi = r + 2, image_size - r - 2
        else:  # one copy per half, at least 6 px apart: a large one shrinks to fit its half
            r, half = min(r, image_size / 4 - 2), image_size / 2
            lo, hi = (r + 1, half - r - 3) if k == 0 else (half + r + 3, image_size - r - 1)
        cx = rng.uniform(lo, max(lo, hi))
        cy = rng.uniform(r + 2, image_size - r - 2)
        image.paste(fill, (0, 0), _mask(shape, image_size, cx, cy, r))
    return image
