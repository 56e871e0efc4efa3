"""Experiments of the paper sections 4.3-4.5 and appendix D, on top of the cached pipeline."""
