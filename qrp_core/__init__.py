"""qrp_core: Quantized Reverse Probing (Laina, Asano, Vedaldi, ICLR 2022), the engine.

Steps, one module each: ``study`` (inputs) -> ``quantize`` (standardise + faiss K-means)
-> ``split`` -> ``probe`` (sparse linear reverse probe) -> ``metrics``; ``pipeline`` runs
them over a study with the ``cache``; ``cli`` is ``python -m qrp_core``.
"""

__version__ = "0.1.0"
