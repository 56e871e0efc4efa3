"""Self-supervised methods around one backbone: each turns a batch of images into a training loss.

Every method sees two views of each image per step, each view a batch of its own through the backbone
(the same budget and batch-norm statistics for all; one batch of both views is also slower on a CPU, whose
caches a doubled batch's activations overflow), and the backbone's
global-average-pooled output is the representation that qrp measures. Heads (projectors, predictors,
prototypes, classifiers, decoders) are the method's own and are dropped after training.

==================  ===============  =================================================================
method              family           objective
==================  ===============  =================================================================
simclr              contrastive      NT-Xent between two SimCLR views (crop, flip, colour, greyscale)
simclr-no-colour    contrastive      the same without colour jitter and greyscale
byol                non-contrastive  predict the momentum target's projection of the other view
swav                clustering       swapped prediction of Sinkhorn-balanced prototype codes
rotnet              pretext          which of 0/90/180/270 degrees each view was rotated by
autoencoder         reconstruction   the clean view from its noisy copy, through the pooled feature
supervised          supervised       cross-entropy on the image's class (the shape)
random              random init      no training: He-initialised backbone
==================  ===============  =================================================================
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import nn

from .augment import random_resized_crop, simclr_view


def _mlp(dim_in: int, hidden: int, dim_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(dim_in, hidden), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True), nn.Linear(hidden, dim_out)
    )


class Method(nn.Module):
    """A backbone, its heads and a loss. ``loss(images, labels, generator)`` takes float images in [0, 1]
    (already normalisable by ``normalise``); ``after_step(progress)`` runs after each optimiser step."""

    needs_labels = False

    def __init__(self, backbone: nn.Module, dim: int, normalise):
        super().__init__()
        self.backbone, self.dim, self.normalise = backbone, dim, normalise

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(self.normalise(x))

    def loss(self, images: torch.Tensor, labels: torch.Tensor | None, generator: torch.Generator) -> torch.Tensor:
        raise NotImplementedError

    def after_step(self, progress: float) -> None:
        pass


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
    """SimCLR's loss: each view must pick its partner among the other 2n - 1 views by cosine similarity."""
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    n = z1.shape[0]
    logits = z @ z.T / temperature
    logits.fill_diagonal_(float("-inf"))
    partner = torch.cat([torch.arange(n, 2 * n), torch.arange(n)]).to(z.device)
    return F.cross_entropy(logits, partner)


class SimCLR(Method):
    def __init__(self, backbone, dim, normalise, *, colour: bool = True, temperature: float = 0.2):
        super().__init__(backbone, dim, normalise)
        self.colour, self.temperature = colour, temperature
        self.projector = _mlp(dim, 2 * dim, dim)

    def loss(self, images, labels, generator):
        views = [simclr_view(images, generator, colour=self.colour) for _ in range(2)]
        z1, z2 = (self.projector(self.encode(v)) for v in views)
        return nt_xent(z1, z2, self.temperature)


class BYOL(Method):
    """Online network (backbone, projector, predictor) regresses the target's projection; the target is an
    exponential moving average of the online backbone and projector, its momentum rising from 0.99 to 1."""

    def __init__(self, backbone, dim, normalise, *, base_momentum: float = 0.99):
        super().__init__(backbone, dim, normalise)
        self.projector = _mlp(dim, 2 * dim, dim)
        self.predictor = _mlp(dim, 2 * dim, dim)
        self.target = copy.deepcopy(nn.ModuleList([backbone, self.projector])).requires_grad_(False)
        self.base_momentum = base_momentum

    def loss(self, images, labels, generator):
        views = [simclr_view(images, generator) for _ in range(2)]
        online = [self.predictor(self.projector(self.encode(v))) for v in views]
        with torch.no_grad():
            target = [self.target[1](self.target[0](self.normalise(v))) for v in views]
        cosine = F.cosine_similarity(online[0], target[1]) + F.cosine_similarity(online[1], target[0])
        return (4 - 2 * cosine).mean() / 2

    @torch.no_grad()
    def after_step(self, progress):
        momentum = 1 - (1 - self.base_momentum) * (math.cos(math.pi * progress) + 1) / 2
        for online, target in zip(
            nn.ModuleList([self.backbone, self.projector]).parameters(), self.target.parameters()
        ):
            target.mul_(momentum).add_(online, alpha=1 - momentum)
        for online, target in zip(nn.ModuleList([self.backbone, self.projector]).buffers(), self.target.buffers()):
            target.copy_(online)


@torch.no_grad()
def sinkhorn(scores: torch.Tensor, epsilon: float = 0.05, iterations: int = 3) -> torch.Tensor:
    """SwAV's codes: soft assignments of the batch to prototypes with equal prototype shares."""
    q = torch.exp((scores - scores.max()) / epsilon).T  # prototypes x batch
    q /= q.sum()
    k, n = q.shape
    for _ in range(iterations):
        q /= q.sum(dim=1, keepdim=True) * k
        q /= q.sum(dim=0, keepdim=True) * n
    return (q * n).T


class SwAV(Method):
    def __init__(self, backbone, dim, normalise, *, prototypes: int = 60, temperature: float = 0.1):
        super().__init__(backbone, dim, normalise)
        self.projector = _mlp(dim, 2 * dim, dim)
        self.prototypes = nn.Linear(dim, prototypes, bias=False)
        self.temperature = temperature

    def loss(self, images, labels, generator):
        with torch.no_grad():
            self.prototypes.weight.copy_(F.normalize(self.prototypes.weight, dim=1))
        views = [simclr_view(images, generator) for _ in range(2)]
        scores = [self.prototypes(F.normalize(self.projector(self.encode(v)), dim=1)) for v in views]
        codes = [sinkhorn(s) for s in scores]
        log_p = [F.log_softmax(s / self.temperature, dim=1) for s in scores]
        return -((codes[0] * log_p[1]).sum(1) + (codes[1] * log_p[0]).sum(1)).mean() / 2


class RotNet(Method):
    """Each image is seen at two different rotations (each view after its own crop and flip); a linear head
    names them."""

    def __init__(self, backbone, dim, normalise):
        super().__init__(backbone, dim, normalise)
        self.classifier = nn.Linear(dim, 4)

    def loss(self, images, labels, generator):
        n = images.shape[0]
        first = torch.randint(4, (n,), generator=generator)
        second = (first + torch.randint(1, 4, (n,), generator=generator)) % 4
        return (
            sum(
                F.cross_entropy(
                    self.classifier(self.encode(_rotated(random_resized_crop(images, generator), r))),
                    r.to(images.device),
                )
                for r in (first, second)
            )
            / 2
        )


def _rotated(x: torch.Tensor, rotations: torch.Tensor) -> torch.Tensor:
    """Each image turned by its number of quarter turns (counter-clockwise)."""
    out = x.clone()
    for r in range(1, 4):
        chosen = (rotations == r).to(x.device)
        out[chosen] = torch.rot90(x[chosen], r, dims=(2, 3))
    return out


class Autoencoder(Method):
    """Denoising: a decoder rebuilds each clean view (crop and flip) from the pooled feature of a copy
    with Gaussian noise (sigma 0.1); mean squared error in pixels."""

    def __init__(self, backbone, dim, normalise, *, image_size: int = 32, noise: float = 0.1):
        super().__init__(backbone, dim, normalise)
        self.side, self.noise = image_size // 8, noise
        up = [nn.ConvTranspose2d(64, 32, 4, 2, 1), nn.ReLU(inplace=True)]
        up += [nn.ConvTranspose2d(32, 16, 4, 2, 1), nn.ReLU(inplace=True), nn.ConvTranspose2d(16, 3, 4, 2, 1)]
        self.expand = nn.Linear(dim, 64 * self.side**2)
        self.decoder = nn.Sequential(*up, nn.Sigmoid())

    def loss(self, images, labels, generator):
        return sum(self._reconstruction(random_resized_crop(images, generator), generator) for _ in range(2)) / 2

    def _reconstruction(self, clean: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        noisy = (clean + self.noise * torch.randn(clean.shape, generator=generator).to(clean.device)).clamp(0, 1)
        code = self.expand(self.encode(noisy)).view(-1, 64, self.side, self.side)
        return F.mse_loss(self.decoder(F.relu(code)), clean)


class Supervised(Method):
    needs_labels = True

    def __init__(self, backbone, dim, normalise, *, n_classes: int):
        super().__init__(backbone, dim, normalise)
        self.classifier = nn.Linear(dim, n_classes)

    def loss(self, images, labels, generator):
        views = [random_resized_crop(images, generator) for _ in range(2)]
        return sum(F.cross_entropy(self.classifier(self.encode(v)), labels) for v in views) / 2


def build_method(name: str, backbone: nn.Module, dim: int, normalise, *, image_size: int, n_classes: int) -> Method:
    """The method ``name`` (one of ``METHODS``) around ``backbone``; ``random`` has no loss."""
    if name in ("simclr", "simclr-no-colour"):
        return SimCLR(backbone, dim, normalise, colour=name == "simclr")
    builders = {
        "byol": lambda: BYOL(backbone, dim, normalise),
        "swav": lambda: SwAV(backbone, dim, normalise),
        "rotnet": lambda: RotNet(backbone, dim, normalise),
        "autoencoder": lambda: Autoencoder(backbone, dim, normalise, image_size=image_size),
        "supervised": lambda: Supervised(backbone, dim, normalise, n_classes=n_classes),
        "random": lambda: Method(backbone, dim, normalise),
    }
    return builders[name]()
