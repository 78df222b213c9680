"""Imports every module that registers a data set, model or likelihood head."""
import seqvae.likelihoods.gaussian  # noqa: F401
