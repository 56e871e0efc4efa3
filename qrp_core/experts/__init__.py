"""Expert concept labellers (paper appendix A): each turns images into sparse binary concepts of one group.

A small registry in the style of timm's: ``list_experts("col*")``, ``get_expert("colour")``.
"""

from . import adapters, colour, haar, objects, style, text, texture  # noqa: F401  (register the offline experts)
from .base import Expert, get_expert, list_experts, register_expert

__all__ = ["Expert", "get_expert", "list_experts", "register_expert"]
