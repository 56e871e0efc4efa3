"""Text presence (other group): one bit per image, as the paper's CRAFT text detector gives.

RapidOCR (PP-OCR models in ONNX, shipped in the ``rapidocr-onnxruntime`` wheel) detects text lines
and reads them; an image has text when some line is read with confidence >= ``min_score`` and has
at least ``min_chars`` letters or digits. The detector alone also fires on round shapes (one box on
scikit-image's ``coffee`` cup, read as "O"), so the reading confirms it.
"""

from __future__ import annotations

import numpy as np

from ..errors import InputError
from .base import Expert, register_expert


class TextPresence(Expert):
    name, group, source = "text", "other", "Text"
    image_size = 448

    def __init__(self, *, min_score: float = 0.8, min_chars: int = 3):
        try:
            from rapidocr_onnxruntime import RapidOCR
        except ImportError as exc:
            raise InputError(
                "rapidocr-onnxruntime is not installed (or OpenCV cannot load)",
                fix="pip install rapidocr-onnxruntime opencv-python==4.14.0.94 (Debian/Ubuntu: apt install libgl1)",
            ) from exc
        self.ocr = RapidOCR()
        super().__init__(
            ["text"], {"engine": "RapidOCR (PP-OCR det + rec, ONNX)", "min_score": min_score, "min_chars": min_chars}
        )

    def lines(self, image: np.ndarray) -> list[tuple[str, float]]:
        """(text, confidence) of each line read in one uint8 RGB image."""
        result, _ = self.ocr(np.ascontiguousarray(image[..., ::-1]), use_det=True, use_cls=False, use_rec=True)
        return [(str(text), float(score)) for _, text, score in (result or [])]

    def predict(self, images: np.ndarray) -> list[list[int]]:
        return [
            [0]
            if any(
                score >= self.params["min_score"] and sum(c.isalnum() for c in text) >= self.params["min_chars"]
                for text, score in self.lines(image)
            )
            else []
            for image in images
        ]


register_expert("text")(TextPresence)
