"""Imports every module that registers a data set, model or likelihood head."""
import seqvae.data.images  # noqa: F401
import seqvae.likelihoods.gaussian  # noqa: F401
import seqvae.models.conv_vae  # noqa: F401
import seqvae.data.bair  # noqa: F401
