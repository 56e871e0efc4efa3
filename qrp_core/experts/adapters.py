"""Adapters for the paper's experts (appendix A, Table 5), for users who have their weights.

Each adapter wraps a model file and a label file, and turns the model's output into binary concepts.
The model file is the expert exported once where its own code runs: ``torch.export.save`` (``.pt2``,
with a dynamic batch dimension), or TorchScript (``torch.jit.save``; other suffixes), which still
serves models that ``torch.export`` cannot trace, such as detectors with data-dependent outputs.

==============  =====================================================  ==================================
kind            the model maps (n, 3, H, W) normalised images to       concepts (paper, appendix A)
==============  =====================================================  ==================================
``classifier``  logits (n, C)                                          the top class (Places-365, MINC, DTD)
``multilabel``  logits (n, C)                                          classes with sigmoid >= threshold (SUN attributes)
``detector``    per image a dict with ``labels`` and ``scores``        classes detected with score >= 0.5 (Open Images,
                (torchvision's convention; a scripted torchvision      COCO things)
                detector's ``(losses, detections)`` works too)
``segmenter``   logits (n, C, h, w), or a dict with ``out``            every class that is the argmax of some
                                                                       pixel (COCO stuff)
``clip``        a CLIP model (``encode_image``, ``encode_text``)       the 8 style prompts; none ("background")
                and its tokenizer, e.g. from open_clip                 below 0.5
==============  =====================================================  ==================================

Label files hold one class name per line, in output order; a trailing class index is dropped and
Places-style names lose their letter folder (``/a/airfield 0`` -> ``airfield``). Classes named like a
background (``background``, ``__background__``, ``unlabeled``) never become concepts.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..cache import sha256_file
from ..errors import InputError
from ..extract import normalise_images
from .base import Expert, register_expert

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
BACKGROUND_NAMES = {"background", "__background__", "unlabeled", "unlabelled"}
STYLE_PROMPTS = (
    "a high quality photo",
    "a noisy, grainy image",
    "a blurry image of low quality",
    "macro photography",
    "a photo with out of focus background, bokeh effect",
    "an animated picture, a vector illustration",
    "a painting",
    "a portrait",
)  # appendix A, "Photography"


def read_label_file(path: str | Path) -> list[str]:
    path = Path(path)
    if not path.is_file():
        raise InputError("label file not found", where=path, fix="pass the expert's class list, one name per line")
    labels = []
    for line in path.read_text().splitlines():
        parts = line.strip().rsplit(maxsplit=1)
        if not parts:
            continue
        name = parts[0] if len(parts) == 2 and parts[1].isdigit() else line.strip()
        if name.startswith("/") and name.count("/") >= 2:
            name = name.split("/", 2)[2]
        labels.append(name)
    if not labels:
        raise InputError("the label file is empty", where=path, fix="one class name per line, in output order")
    return labels


def load_model_file(path: str | Path) -> torch.nn.Module:
    """An exported program (``.pt2``) or a TorchScript file, on the CPU."""
    path = Path(path)
    if not path.is_file():
        raise InputError("model file not found", where=path, fix="pass the exported expert (.pt2 or TorchScript)")
    try:
        if path.suffix == ".pt2":
            return torch.export.load(str(path)).module()
        return torch.jit.load(str(path), map_location="cpu").eval()
    except Exception as exc:  # corrupt or foreign files surface as many exception types
        raise InputError(
            f"cannot load the model ({type(exc).__name__}: {str(exc)[:200]})",
            where=path,
            fix="export the expert with torch.export.save(torch.export.export(model, (x,), "
            "dynamic_shapes=...), 'expert.pt2'), or torch.jit.save(torch.jit.script(model), path)",
        ) from exc


class ExportedExpert(Expert):
    """An expert whose model is an exported file; subclasses turn its outputs into concepts."""

    kind: str

    def __init__(
        self,
        *,
        weights: str | Path,
        labels: str | Path,
        group: str,
        source: str,
        image_size: int = 224,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        batch_size: int = 32,
        **params,
    ):
        self.model = load_model_file(weights)
        self.name, self.group, self.source = source.lower().replace(" ", "-"), group, source
        self.image_size, self.mean, self.std, self.batch_size = image_size, mean, std, batch_size
        super().__init__(
            read_label_file(labels),
            {
                "kind": self.kind,
                "weights": str(weights),
                "labels": str(labels),
                "weights_sha256": sha256_file(weights),
                "image_size": image_size,
                "mean": list(mean),
                "std": list(std),
                **params,
            },
        )
        self.keep = np.array([label.lower() not in BACKGROUND_NAMES for label in self.labels])

    @torch.inference_mode()
    def outputs(self, images: np.ndarray):
        """The model's raw outputs, batch by batch."""
        for start in range(0, len(images), self.batch_size):
            yield self.model(normalise_images(images[start : start + self.batch_size], self.mean, self.std))

    def active(self, output) -> list[list[int]]:
        """The active concepts of each image of one batch, from the model's output."""
        raise NotImplementedError

    def predict(self, images: np.ndarray) -> list[list[int]]:
        return [concepts for output in self.outputs(images) for concepts in self.active(output)]

    def _check_classes(self, n_classes: int) -> None:
        if n_classes != len(self.labels):
            raise InputError(
                f"the model gives {n_classes} classes but the label file names {len(self.labels)}",
                where=self.params["labels"],
                fix="pass the label file that belongs to these weights",
            )

    def _concepts(self, classes) -> list[int]:
        return sorted(int(c) for c in set(np.asarray(classes, dtype=np.int64).tolist()) if self.keep[c])


class Classifier(ExportedExpert):
    kind = "classifier"

    def active(self, logits: torch.Tensor) -> list[list[int]]:
        self._check_classes(logits.shape[1])
        return [self._concepts([c]) for c in logits.argmax(1).tolist()]


class MultiLabelClassifier(ExportedExpert):
    kind = "multilabel"

    def __init__(self, *, threshold: float = 0.5, **kwargs):
        super().__init__(threshold=threshold, **kwargs)

    def active(self, logits: torch.Tensor) -> list[list[int]]:
        self._check_classes(logits.shape[1])
        on = (torch.sigmoid(logits) >= self.params["threshold"]).numpy()
        return [self._concepts(np.flatnonzero(row)) for row in on]


class Detector(ExportedExpert):
    kind = "detector"

    def __init__(self, *, score_threshold: float = 0.5, **kwargs):
        super().__init__(score_threshold=score_threshold, **kwargs)

    def active(self, detections) -> list[list[int]]:
        if isinstance(detections, tuple):  # scripted torchvision detectors return (losses, detections)
            detections = detections[1]
        out = []
        for found in detections:
            labels = found["labels"][found["scores"] >= self.params["score_threshold"]]
            if len(labels) and int(labels.max()) >= len(self.labels):
                self._check_classes(int(labels.max()) + 1)
            out.append(self._concepts(labels.tolist()))
        return out


class Segmenter(ExportedExpert):
    kind = "segmenter"

    def active(self, logits) -> list[list[int]]:
        if isinstance(logits, dict):  # torchvision segmentation models
            logits = logits["out"]
        self._check_classes(logits.shape[1])
        return [self._concepts(torch.unique(per_pixel).tolist()) for per_pixel in logits.argmax(1)]


class ClipStyle(Expert):
    """CLIP zero-shot photographic style: unit-normalised image and prompt features; the prompt with the
    highest probability (softmax of CLIP's scaled cosine similarities over the 8 prompts) if it reaches
    ``threshold``, else background (no concept). The paper says "score at least 0.5"; raw cosines of
    CLIP stay near 0.3, so the score is read as this probability."""

    name, group, source = "clip-style", "other", "CLIP"

    def __init__(
        self,
        *,
        model,
        tokenizer,
        preprocess_size: int = 224,
        mean=(0.48145466, 0.4578275, 0.40821073),
        std=(0.26862954, 0.26130258, 0.27577711),
        logit_scale: float = 100.0,
        threshold: float = 0.5,
        prompts=STYLE_PROMPTS,
        description: str = "a CLIP model",
        weights_sha256: str | None = None,
    ):
        self.model, self.image_size, self.mean, self.std = model.eval(), preprocess_size, mean, std
        with torch.inference_mode():
            text = model.encode_text(tokenizer(list(prompts))).float()
        self.text = text / text.norm(dim=-1, keepdim=True)
        super().__init__(
            list(prompts),
            {
                "model": description,
                "weights_sha256": weights_sha256,
                "input": {"size": preprocess_size, "mean": list(mean), "std": list(std)},
                "logit_scale": logit_scale,
                "threshold": threshold,
                "rule": "softmax over prompts of scaled cosine; background below threshold",
            },
        )

    @classmethod
    def from_open_clip(cls, architecture: str, weights: str | Path, **kwargs) -> ClipStyle:
        """A CLIP of open_clip (``pip install open_clip_torch``) with local weights, e.g. ("ViT-B-32", "clip.bin")."""
        try:
            import open_clip
        except ImportError as exc:
            raise InputError(
                "open_clip is not installed", fix="pip install open_clip_torch (it needs torchvision)"
            ) from exc
        try:
            model = open_clip.create_model(architecture, pretrained=str(weights))
        except (RuntimeError, ValueError, OSError, AssertionError) as exc:  # open_clip asserts on shape mismatches
            raise InputError(
                f"cannot load CLIP {architecture} ({exc})",
                where=weights,
                fix="pass the open_clip architecture these weights were saved from",
            ) from exc
        preprocess = getattr(model.visual, "preprocess_cfg", {})  # the model's own input size and normalisation
        size = preprocess.get("size", 224)
        inputs = {
            "preprocess_size": size[0] if isinstance(size, (tuple, list)) else size,
            **{key: tuple(preprocess[key]) for key in ("mean", "std") if key in preprocess},
        }
        return cls(
            model=model,
            tokenizer=open_clip.get_tokenizer(architecture),
            description=f"open_clip {architecture}",
            weights_sha256=sha256_file(weights),
            **{**inputs, **kwargs},
        )

    @torch.inference_mode()
    def probabilities(self, images: np.ndarray) -> np.ndarray:
        features = self.model.encode_image(normalise_images(images, self.mean, self.std)).float()
        features = features / features.norm(dim=-1, keepdim=True)
        return torch.softmax(self.params["logit_scale"] * features @ self.text.T, dim=1).numpy()

    def predict(self, images: np.ndarray) -> list[list[int]]:
        probs = self.probabilities(images)
        return [[int(p.argmax())] if p.max() >= self.params["threshold"] else [] for p in probs]


ADAPTERS = {"classifier": Classifier, "multilabel": MultiLabelClassifier, "detector": Detector, "segmenter": Segmenter}
for _kind, _cls in ADAPTERS.items():
    register_expert(_kind)(_cls)
register_expert("clip")(ClipStyle.from_open_clip)
