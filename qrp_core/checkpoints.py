"""Self-supervised checkpoints (MoCo, DINO, SwAV, ...) into torchvision or timm backbones.

Sources named ``torchvision:ARCH`` or ``timm:ARCH`` (``torchvision:resnet50``, ``timm:vit_base_patch16_224``)
build the architecture without weights, drop its classifier so its output is the pooled feature
(timm: ``num_classes=0``; torchvision: ``fc``/``heads``/``classifier`` replaced by identity), and load a
local checkpoint with the usual wrappers and key prefixes of self-supervised releases undone:

=========  ==================================================  =========================================
release    checkpoint                                          kept
=========  ==================================================  =========================================
MoCo v1/2  ``state_dict`` of ``module.encoder_q.*`` (+ ``_k``)  the query encoder
MoCo v3    ``state_dict`` of ``module.base_encoder.*``          the base encoder
DINO       ``teacher`` of ``backbone.*`` (+ ``head.*``)         the teacher's backbone
SwAV       ``module.*`` with ``projection_head``/``prototypes`` the trunk
plain      a state dict of the architecture                    all of it
=========  ==================================================  =========================================

Heads that a backbone lacks (projection heads, prototypes, predictors, classifiers) are dropped and
listed; any other key that does not fit the architecture is an error naming it.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from .cache import sha256_file
from .errors import InputError

WRAPPERS = ("teacher", "state_dict", "model")  # the first one present holds the weights
ENCODERS = ("encoder_q.", "base_encoder.", "backbone.", "encoder.")  # the first prefix present is kept
HEADS = ("fc.", "head.", "heads.", "classifier.", "projection_head.", "prototypes.", "predictor.", "linear.")


def backbone_state(checkpoint: dict) -> tuple[dict[str, torch.Tensor], str, list[str]]:
    """The backbone's state dict inside a self-supervised checkpoint, a note of how it was found, and
    the top-level names of the tensors left out (other encoders, heads)."""
    notes, left_out = [], set()
    for wrapper in WRAPPERS:
        if isinstance(checkpoint.get(wrapper), dict):
            checkpoint = checkpoint[wrapper]
            notes.append(f"under {wrapper!r}")
            break
    state = {k.removeprefix("module."): v for k, v in checkpoint.items() if isinstance(v, torch.Tensor)}
    for prefix in ENCODERS:
        if any(k.startswith(prefix) for k in state):
            left_out = {k.split(".")[0] for k in state if not k.startswith(prefix)}
            state = {k.removeprefix(prefix): v for k, v in state.items() if k.startswith(prefix)}
            notes.append(f"prefix {prefix!r}")
            break
    return state, ", ".join(notes) or "plain state dict", sorted(left_out)


def load_backbone(model: nn.Module, path: str | Path) -> dict:
    """Load a checkpoint's backbone into ``model``; returns what was done (for the manifest)."""
    path = Path(path)
    if not path.is_file():
        raise InputError("checkpoint not found", where=path, fix="pass the path of the weights file")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt, truncated or pickled-object files surface as many exception types
        raise InputError(
            f"cannot read checkpoint ({type(exc).__name__}: {str(exc)[:200]})",
            where=path,
            fix="pass a state-dict checkpoint (torch.save of tensors); re-download a truncated one",
        ) from exc
    if not isinstance(checkpoint, dict):
        raise InputError(
            f"expected a dict of tensors, found {type(checkpoint).__name__}", where=path, fix="save model.state_dict()"
        )
    state, found, left_out = backbone_state(checkpoint)
    expected = model.state_dict()
    dropped = sorted(k for k in state if k not in expected and k.startswith(HEADS))
    state = {k: v for k, v in state.items() if k not in dropped}
    result = model.load_state_dict(state, strict=False)
    # a classifier the checkpoint lacks is fine: the representations are taken before it
    heads_missing = sorted(k for k in result.missing_keys if k.startswith(HEADS))
    missing = [k for k in result.missing_keys if not k.endswith("num_batches_tracked") and k not in heads_missing]
    if missing or result.unexpected_keys:
        raise InputError(
            f"checkpoint ({found}) does not fit the architecture: missing {missing[:3]}, "
            f"unexpected {result.unexpected_keys[:3]}",
            where=path,
            fix="choose the architecture the weights were trained with (e.g. torchvision:resnet50)",
        )
    trained = checkpoint.get("qrp_training") if isinstance(checkpoint.get("qrp_training"), dict) else {}
    return {
        **{f"trained_{k}": str(v) for k, v in trained.items()},  # qrp's own trainer (demos/ssl_train.py)
        "checkpoint": str(path),
        "checkpoint_sha256": sha256_file(path),
        "found": found,
        "keys_matched": len(state),  # tensors loaded; none missing or unexpected, or the load raised above
        "left_out": sorted(set(left_out) | {k.split(".")[0] for k in dropped}),
        **({"heads_not_in_checkpoint": sorted({k.split(".")[0] for k in heads_missing})} if heads_missing else {}),
    }
