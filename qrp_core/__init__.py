"""qrp_core: Quantized Reverse Probing (Laina, Asano, Vedaldi, ICLR 2022), the engine.

Steps, one module each: ``study`` (inputs) -> ``quantize`` (standardise + faiss K-means)
-> ``split`` -> ``probe`` (sparse linear reverse probe) -> ``metrics``; ``pipeline`` runs
them over a study with the ``cache``; ``cli`` is ``python -m qrp_core``.
"""

import os

# torch's and faiss's threads run on libgomp, whose idle threads spin up to 300,000 times (~3 ms) for
# the next parallel region before sleeping. With another process on the cores (a second run, the app,
# a test suite) the spinning threads take the time slices of those with work, and a probe's small
# parallel regions then run tens of times slower (python -m bench.contention). 1,000 is libgomp's own
# count for a machine it knows to be oversubscribed. Set before torch or faiss loads; a user's value wins.
os.environ.setdefault("GOMP_SPINCOUNT", "1000")

__version__ = "0.1.0"
