"""Self-supervised checkpoint conventions, loaded into a backbone named like torchvision's ResNets."""

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from conftest import optional_library
from qrp_core.checkpoints import backbone_state, load_backbone
from qrp_core.errors import InputError
from qrp_core.extract import extract, list_images, load_batch
from qrp_core.networks import get_source, with_layers


class TinyResNet(nn.Module):
    """torchvision's naming: conv1, bn1, layer1, fc (removed for features)."""

    def __init__(self, with_fc=True):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3)
        self.bn1 = nn.BatchNorm2d(4)
        self.layer1 = nn.Sequential(nn.Conv2d(4, 4, 3), nn.BatchNorm2d(4))
        self.fc = nn.Linear(4, 10) if with_fc else nn.Identity()


def _reference():
    torch.manual_seed(1)
    model = TinyResNet()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_()
    return model


def _trunk(model):
    return {k: v for k, v in model.state_dict().items() if not k.startswith("fc.")}


def _prefixed(state, prefix):
    return {prefix + k: v for k, v in state.items()}


def _checkpoints(ref):
    trunk, other = _trunk(ref), {k: torch.randn_like(v) if v.is_floating_point() else v for k, v in _trunk(ref).items()}
    projection = {"fc.0.weight": torch.randn(8, 4), "fc.2.weight": torch.randn(5, 8)}  # MoCo v2's MLP head
    return {
        "moco-v2": {
            "state_dict": {
                **_prefixed({**trunk, **projection}, "module.encoder_q."),
                **_prefixed(other, "module.encoder_k."),
                "module.queue": torch.randn(5, 9),
            }
        },
        "moco-v3": {
            "state_dict": {
                **_prefixed(trunk, "module.base_encoder."),
                **_prefixed(other, "module.momentum_encoder."),
                "module.predictor.0.weight": torch.randn(3, 3),
            }
        },
        "dino": {
            "teacher": {**_prefixed(trunk, "backbone."), "head.mlp.0.weight": torch.randn(3, 4)},
            "student": _prefixed(other, "module.backbone."),
            "epoch": 100,
        },
        "swav": {
            **_prefixed(trunk, "module."),
            "module.projection_head.0.weight": torch.randn(3, 4),
            "module.prototypes.weight": torch.randn(7, 3),
        },
        "plain": dict(trunk),
    }


@pytest.mark.parametrize("release", ["moco-v2", "moco-v3", "dino", "swav", "plain"])
def test_each_release_loads_its_backbone_exactly(release, tmp_path):
    ref = _reference()
    torch.save(_checkpoints(ref)[release], tmp_path / "ckpt.pth")
    model = TinyResNet(with_fc=False)
    report = load_backbone(model, tmp_path / "ckpt.pth")
    for key, value in _trunk(ref).items():
        assert torch.equal(model.state_dict()[key], value), key
    expected = {
        "moco-v2": ["encoder_k", "fc", "queue"],
        "moco-v3": ["momentum_encoder", "predictor"],
        "dino": ["head"],
        "swav": ["projection_head", "prototypes"],
        "plain": [],
    }
    assert report["left_out"] == expected[release]  # other encoders and heads: listed, not loaded


def test_backbone_state_reports_where_it_found_the_weights():
    _, found, _ = backbone_state(_checkpoints(_reference())["dino"])
    assert found == "under 'teacher', prefix 'backbone.'"


def test_a_checkpoint_of_another_architecture_is_named(tmp_path):
    torch.save({"state_dict": {"module.encoder_q.conv9.weight": torch.randn(2)}}, tmp_path / "other.pth")
    with pytest.raises(InputError, match="does not fit the architecture: missing .*conv1.weight.*unexpected .*conv9"):
        load_backbone(TinyResNet(with_fc=False), tmp_path / "other.pth")
    (tmp_path / "junk.pth").write_bytes(b"junk")
    with pytest.raises(InputError, match="cannot read checkpoint"):
        load_backbone(TinyResNet(with_fc=False), tmp_path / "junk.pth")


def test_library_sources_explain_a_missing_library():
    for name in ("torchvision:resnet50", "timm:vit_base_patch16_224"):
        try:
            __import__(name.split(":")[0])
        except ImportError:
            with pytest.raises(InputError, match="is not installed"):
                get_source(name)


def test_torchvision_resnet_with_a_moco_checkpoint(tmp_path):
    torchvision = optional_library("torchvision", reason="torchvision is optional (no build for this torch here)")
    torch.manual_seed(0)
    reference = torchvision.models.resnet18(weights=None).eval()
    state = {k: v for k, v in reference.state_dict().items() if not k.startswith("fc.")}
    head = {"fc.0.weight": torch.randn(16, 512), "fc.0.bias": torch.randn(16), "fc.2.weight": torch.randn(8, 16)}
    torch.save({"state_dict": _prefixed({**state, **head}, "module.encoder_q.")}, tmp_path / "moco.pth.tar")
    source = get_source("torchvision:resnet18", weights=tmp_path / "moco.pth.tar")
    reference.fc = nn.Identity()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(source.model(x), reference(x))
    assert source.metadata["left_out"] == ["fc"] and source.image_size == 224


def test_timm_vit_with_a_dino_checkpoint(tmp_path):
    timm = optional_library("timm", reason="timm is optional (it needs torchvision, absent here)")
    torch.manual_seed(0)
    reference = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0).eval()
    torch.save(
        {
            "teacher": {**_prefixed(reference.state_dict(), "backbone."), "head.last_layer.weight": torch.randn(4, 3)},
            "student": _prefixed(reference.state_dict(), "module.backbone."),
        },
        tmp_path / "dino.pth",
    )
    source = get_source("timm:vit_tiny_patch16_224", weights=tmp_path / "dino.pth")
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(source.model(x), reference(x))
    assert source.metadata["found"] == "under 'teacher', prefix 'backbone.'" and source.image_size == 224
    # a block's output is a token sequence: extraction keeps its CLS token
    rng = np.random.default_rng(0)
    (tmp_path / "imgs").mkdir()
    for i in range(2):
        Image.fromarray(rng.integers(0, 256, (224, 224, 3), dtype=np.uint8)).save(tmp_path / "imgs" / f"{i}.png")
    images = list_images(tmp_path / "imgs")
    files = extract(with_layers(source, ["blocks.5"]), images, tmp_path / "out", show_progress=False)
    tokens = []
    handle = reference.blocks[5].register_forward_hook(lambda _m, _i, out: tokens.append(out))
    with torch.no_grad():
        reference(load_batch(images.paths, 224, source.mean, source.std))
    handle.remove()
    np.testing.assert_allclose(np.load(files["blocks.5"]), tokens[0][:, 0].numpy(), rtol=1e-4, atol=1e-5)
