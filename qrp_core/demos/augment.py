"""SimCLR's augmentations, batched in torch (the main environment has no torchvision).

Every function takes float images (n, 3, h, w) in [0, 1] and a ``torch.Generator``, so a training step's
views depend only on the seed it was given (resuming a run redraws the same views).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

# RGB -> YIQ; a hue shift is a rotation of the (I, Q) chroma plane
_YIQ = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
_GREY = torch.tensor([0.299, 0.587, 0.114])


def _uniform(n: int, low: float, high: float, generator: torch.Generator) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=generator)


def random_resized_crop(
    x: torch.Tensor,
    generator: torch.Generator,
    *,
    scale: tuple[float, float] = (0.35, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    flip: bool = True,
) -> torch.Tensor:
    """A crop of random area (a share ``scale`` of the image) and aspect ratio, at a random place, resized
    back to the input size (bilinear), and mirrored left-right with probability 1/2 when ``flip``."""
    n = x.shape[0]
    area = _uniform(n, *scale, generator)
    aspect = torch.exp(_uniform(n, math.log(ratio[0]), math.log(ratio[1]), generator))
    width = torch.sqrt(area * aspect).clamp(max=1.0)  # as shares of the image side
    height = torch.sqrt(area / aspect).clamp(max=1.0)
    cx = (1 - width) * (2 * torch.rand(n, generator=generator) - 1)  # centre in [-1, 1] keeping the crop inside
    cy = (1 - height) * (2 * torch.rand(n, generator=generator) - 1)
    mirror = torch.where(torch.rand(n, generator=generator) < 0.5, -1.0, 1.0) if flip else torch.ones(n)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0], theta[:, 0, 2] = width * mirror, cx
    theta[:, 1, 1], theta[:, 1, 2] = height, cy
    grid = F.affine_grid(theta.to(x.device), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def _grey(x: torch.Tensor) -> torch.Tensor:
    return torch.einsum("nchw,c->nhw", x, _GREY.to(x.device)).unsqueeze(1)


def colour_jitter(
    x: torch.Tensor,
    generator: torch.Generator,
    *,
    strength: float = 1.0,
    p: float = 0.8,
) -> torch.Tensor:
    """SimCLR's colour distortion of strength s: with probability ``p`` each image gets brightness, contrast
    and saturation factors in [1 - 0.8 s, 1 + 0.8 s] and a hue shift in +-0.2 s of the colour circle (a
    rotation of YIQ's chroma plane), applied in an order drawn once per batch."""
    n = x.shape[0]
    jittered = torch.rand(n, generator=generator) < p
    factors = {op: _uniform(n, 1 - 0.8 * strength, 1 + 0.8 * strength, generator) for op in ("b", "c", "s")}
    hue = _uniform(n, -0.2 * strength, 0.2 * strength, generator) * 2 * math.pi
    factors = {op: torch.where(jittered, f, 1.0).view(n, 1, 1, 1).to(x.device) for op, f in factors.items()}
    hue = torch.where(jittered, hue, 0.0)
    out = x
    for op in torch.randperm(4, generator=generator).tolist():
        if op == 0:
            out = out * factors["b"]
        elif op == 1:
            mean = _grey(out).mean(dim=(1, 2, 3), keepdim=True)
            out = (out - mean) * factors["c"] + mean
        elif op == 2:
            grey = _grey(out)
            out = (out - grey) * factors["s"] + grey
        else:
            cos, sin = torch.cos(hue), torch.sin(hue)
            rotation = torch.zeros(n, 3, 3)
            rotation[:, 0, 0] = 1
            rotation[:, 1, 1], rotation[:, 1, 2], rotation[:, 2, 1], rotation[:, 2, 2] = cos, -sin, sin, cos
            yiq = _YIQ.to(x.device)
            matrix = torch.linalg.inv(yiq) @ rotation.to(x.device) @ yiq
            out = torch.einsum("nij,njhw->nihw", matrix, out)
        out = out.clamp(0, 1)
    return out


def random_greyscale(x: torch.Tensor, generator: torch.Generator, *, p: float = 0.2) -> torch.Tensor:
    """Each image replaced by its luma (in all three channels) with probability ``p``."""
    chosen = (torch.rand(x.shape[0], generator=generator) < p).view(-1, 1, 1, 1).to(x.device)
    return torch.where(chosen, _grey(x).expand_as(x), x)


def simclr_view(x: torch.Tensor, generator: torch.Generator, *, colour: bool = True) -> torch.Tensor:
    """One SimCLR view: random resized crop and flip, then (when ``colour``) colour jitter and greyscale."""
    out = random_resized_crop(x, generator)
    if colour:
        out = random_greyscale(colour_jitter(out, generator), generator)
    return out
