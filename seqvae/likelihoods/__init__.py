"""Calibrated decoders (paper §3–4, App. C–D): one module per family, registered by name."""
from seqvae.likelihoods.base import LikelihoodHead

__all__ = ["LikelihoodHead"]
